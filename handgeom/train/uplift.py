"""The two-hand uplift and skeleton refiner of "Two Hands Are Better Than One" for the training
loop: presets, data, loss and evaluation (``handgeom train uplift --data pairs:PATH``).

Data (``pairs:PATH``, a file written by :func:`save_pairs`): interacting pairs of
:class:`~handgeom.datasets.SyntheticInteractingHands` without their images
(:meth:`~handgeom.datasets.SyntheticInteractingHands.annotations`; their ground truth is
intersection-free), in train, val and test splits drawn with different seeds. The inputs are made
from the ground truth by :func:`corrupt`, afresh at every training step and once (seeded) for the
held-out splits:

- the uplift's: the projected 2D joints, normalized by the crop, with detector-like noise:
  Gaussian (``UV_SIGMA_PX`` pixels of a 256-pixel crop) plus, for ``OUTLIER_RATE`` of the joints,
  an outlier anywhere within ``OUTLIER_PX`` pixels;
- the refiner's: the ground-truth hands with structured noise that makes them collide as real
  estimators' do: each hand's joint angles, global rotation and bone lengths perturbed (a
  plausible but wrong pose, through the hand model), the left hand pushed towards the right along
  the line between their centres by up to ``PUSH`` (relative depth and placement errors: the
  errors that make predicted hands interpenetrate), and each joint jittered.

Loss terms (``--loss name=weight``; root-relative joints as in the evaluation):

- ``joints``: mean per-joint error (metres) of both hands, root-relative (MPJPE);
- ``offset``: error of the relative offset, right root - left root (metres);
- ``lengths``: mean absolute bone-length error (metres);
- ``intersection_sparse`` / ``intersection_dense`` / ``intersection_mesh``: the occupancy
  intersection loss (:func:`handgeom.losses.intersection_loss`) at the 21 joints, the joints and
  5 points per bone, or the mesh vertices; ``alpha`` weighs its flipped half (the paper's α: 1
  both hands, 0 the left hand's points only) and ``truncate`` > 0 selects the truncated penalty;
- ``penetration``: the exact mesh alternative, :func:`handgeom.losses.mutual_penetration`.

Evaluation (the interacting-hands protocol, InterHand2.6M's): MPJPE in mm, root-relative (the
wrist), averaged over both hands; MRRPE in mm (the error of the right root relative to the left);
and the ray-cast intersection count of the predicted meshes placed by the predicted offset
(:func:`handgeom.metrics.count_intersections`) on a ``EVAL_RESOLUTION``³ grid (the experiment
counts its test pairs on the paper's 125k-point grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from handgeom.datasets import SyntheticInteractingHands
from handgeom.datasets.sample import hand_model
from handgeom.hand.kinematics import axis_angle_to_matrix, forward_kinematics
from handgeom.losses import intersection_loss, mirror, mutual_penetration, placed_meshes
from handgeom.metrics import count_intersections, count_intersections_occupancy, mpjpe
from handgeom.models.uplift import PRESETS as MODEL_PRESETS
from handgeom.models.uplift import SkeletonRefiner, TwoHandUplift
from handgeom.train.loop import TrainConfig, TrainError

name = "uplift"
POINT_SETS = ("sparse", "dense", "mesh")
LOSS_TERMS = ("joints", "offset", "lengths", *(f"intersection_{p}" for p in POINT_SETS), "alpha", "truncate",
              "penetration")
BASE_LOSS = {"joints": 1.0, "offset": 1.0, "lengths": 1.0, "alpha": 1.0}

IMAGE_SIZE = 256  # the crop the 2D joints are projected into
UV_SIGMA_PX, OUTLIER_RATE, OUTLIER_PX = 2.5, 0.03, 20.0
ANGLE_SIGMA, ROTATION_SIGMA, LENGTH_SIGMA = 0.15, 0.08, 0.04  # radians, radians, relative
PUSH, JITTER = 0.03, 0.003  # metres
EVAL_RESOLUTION = 20

_cpu = dict(batch=128, lr=1e-3, weight_decay=1e-4, warmup=50, eval_size=300, checkpoint_every=500, log_every=50,
            workers=0, loss=BASE_LOSS)
_tiny = dict(steps=4, batch=8, lr=1e-3, warmup=1, eval_size=16, checkpoint_every=4, log_every=1, workers=0,
             loss=BASE_LOSS)
PRESETS = {
    # what trains on a 2-core CPU in minutes and wrote the shipped weights
    "cpu": TrainConfig(steps=2000, eval_every=2000, **_cpu, model={"kind": "uplift", "preset": "cpu"}),
    "cpu-refiner": TrainConfig(steps=2000, eval_every=2000, **_cpu, model={"kind": "refiner", "preset": "cpu"}),
    # the paper's size (9.6 M parameters), for a GPU
    "paper": TrainConfig(steps=100_000, batch=1024, lr=1e-3, warmup=1000, eval_every=5000, eval_size=2000,
                         checkpoint_every=5000, workers=0, loss=BASE_LOSS, model={"kind": "uplift", "preset": "paper"}),
    "paper-refiner": TrainConfig(steps=100_000, batch=1024, lr=1e-3, warmup=1000, eval_every=5000, eval_size=2000,
                                 checkpoint_every=5000, workers=0, loss=BASE_LOSS,
                                 model={"kind": "refiner", "preset": "paper"}),
    # smoke tests and the experiment's --quick
    "tiny": TrainConfig(eval_every=4, **_tiny, model={"kind": "uplift", "preset": "tiny"}),
    "tiny-refiner": TrainConfig(eval_every=4, **_tiny, model={"kind": "refiner", "preset": "tiny"}),
}
KINDS = {"uplift": TwoHandUplift, "refiner": SkeletonRefiner}


def build_model(config: TrainConfig) -> nn.Module:
    kind, preset = config.model.get("kind", "uplift"), config.model.get("preset", "cpu")
    if kind not in KINDS or preset not in MODEL_PRESETS:
        raise TrainError(f"unknown model {kind!r} {preset!r}; known: kinds {sorted(KINDS)}, presets {sorted(MODEL_PRESETS)}")
    return KINDS[kind](preset)


# ---- data -----------------------------------------------------------------------------------------

def make_pairs(scenes: int, seed: int, views: int = 1, progress: bool = True) -> dict[str, torch.Tensor]:
    """``scenes x views`` interacting pairs: scenes ``0 .. scenes - 1`` of
    :class:`SyntheticInteractingHands` (seed ``seed``), each seen by ``views`` cameras, without
    images: ``joints [N, 2, 21, 3]`` (camera frame, metres), ``uv [N, 2, 21, 2]`` (normalized crop
    coordinates of an ``IMAGE_SIZE`` crop), and the hand parameters in the camera frame:
    ``rotation [N, 2, 3, 3]``, ``angles [N, 2, 21]``, ``lengths [N, 2, 20]`` (the scale folded in)."""
    dataset = SyntheticInteractingHands(scenes, IMAGE_SIZE, seed=seed)
    keys: dict[str, list[torch.Tensor]] = {"joints": [], "uv": [], "rotation": [], "angles": [], "lengths": []}
    for i in tqdm(range(scenes), desc=f"pairs (seed {seed})", disable=not progress, leave=False):
        s = dataset.annotations(i, views)
        for key, value in (("joints", s["joints_3d"]), ("uv", s["joints_2d"] / IMAGE_SIZE * 2 - 1),
                           ("rotation", s["rotation"]), ("angles", s["angles"]),
                           ("lengths", s["bone_lengths"] * s["scale"][..., None])):
            keys[key].append(value)
    return {k: torch.cat(v) for k, v in keys.items()}


def save_pairs(path: Path, splits: dict[str, tuple[int, int, int]], progress: bool = True) -> None:
    """Writes pairs to ``path``: per split name, :func:`make_pairs` of ``(scenes, seed, views)``."""
    pairs = {split: make_pairs(n, seed, views, progress) for split, (n, seed, views) in splits.items()}
    torch.save({"splits": pairs, "settings": splits}, path)


class Pairs(Dataset):
    """The pairs of one split: per item the ground truth (``joints`` root-relative ``[2, 21, 3]``,
    ``offset [3]``, ``lengths``, the camera-frame ``joints_cam`` and parameters, ``uv``) and, for
    held-out splits, the fixed ``input`` of ``kind`` (:func:`corrupt` with ``noise_seed``)."""

    def __init__(self, tensors: dict[str, torch.Tensor], kind: str, noise_seed: int | None = None):
        j = tensors["joints"]
        self.items = {"joints": j - j[:, :, :1], "offset": j[:, 0, 0] - j[:, 1, 0], "joints_cam": j,
                      **{k: tensors[k] for k in ("uv", "rotation", "angles", "lengths")}}
        if noise_seed is not None:
            self.items["input"] = corrupt(self.items, kind, torch.Generator().manual_seed(noise_seed))

    def __len__(self) -> int:
        return len(self.items["joints"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.items.items()}


def _read_pairs(data: str) -> dict:
    if not data.startswith("pairs:"):
        raise TrainError(f"--data must be pairs:PATH (a file of `python -m handgeom.experiments.two_hands`), got {data!r}")
    path = Path(data.split(":", 1)[1])
    if not path.is_file():
        raise TrainError(f"--data {data}: no file at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def dataset(data: str, split: str, config: TrainConfig, size: int, seed: int) -> Dataset:
    """``pairs:PATH``: the file's train split (inputs made at each step), or its val split
    (``split="eval"``) or test split (``split="test"``), the first ``size`` pairs, with inputs
    fixed by ``seed``."""
    splits = _read_pairs(data)["splits"]
    kind = config.model.get("kind", "uplift")
    if split == "train":
        return Pairs(splits["train"], kind)
    tensors = splits["val" if split == "eval" else split]
    return Pairs({k: v[:size] for k, v in tensors.items()}, kind, noise_seed=seed)


def corrupt(batch: dict[str, torch.Tensor], kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The network input of ``kind`` for a batch of ground truth (see the module docstring):
    noisy normalized 2D joints ``[B, 2, 21, 2]`` (uplift) or colliding noisy 3D skeletons
    ``[B, 2, 21, 3]`` (refiner). ``generator``: None draws from torch's global generator."""
    g = generator
    noise = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    uniform = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)
    if kind == "uplift":
        uv = batch["uv"].double()
        pixel = 2.0 / IMAGE_SIZE
        uv = uv + UV_SIGMA_PX * pixel * noise(*uv.shape)
        outlier = uniform(*uv.shape[:-1], 1) < OUTLIER_RATE
        uv = torch.where(outlier, uv + OUTLIER_PX * pixel * (2 * uniform(*uv.shape) - 1), uv)
        return uv.float()
    b = batch["joints_cam"].shape[0]
    hands = []
    for slot, side in enumerate(("right", "left")):
        model = hand_model(side)
        params = model.rest_pose((b,), torch.float64)
        lo, hi = model.limits[:, 0].double(), model.limits[:, 1].double()
        params.angles = torch.minimum(torch.maximum(batch["angles"][:, slot].double() + ANGLE_SIGMA * noise(b, 21), lo), hi)
        params.rotation = axis_angle_to_matrix(ROTATION_SIGMA * noise(b, 3)) @ batch["rotation"][:, slot].double()
        params.bone_lengths = batch["lengths"][:, slot].double() * (1 + LENGTH_SIGMA * noise(b, 20))
        params.translation = batch["joints_cam"][:, slot, 0].double()
        hands.append(forward_kinematics(params.angles, params.bone_lengths, params.rotation, params.translation,
                                        mirror=side == "left")[0])  # the model's joints, without its mesh
    right, left = hands
    towards = torch.nn.functional.normalize(right.mean(1) - left.mean(1), dim=-1)
    left = left + PUSH * uniform(b, 1, 1) * towards[:, None]
    joints = torch.stack([right, left], 1)
    return (joints + JITTER * noise(*joints.shape)).float()


# ---- loss and evaluation --------------------------------------------------------------------------

def placed(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both hands' joints in one frame, the right root at the origin: ``(right, left)`` ``[B, 21, 3]``
    (the joints of :func:`handgeom.losses.placed_meshes`)."""
    return out["joints"][:, 0], out["joints"][:, 1] - out["offset"][:, None]


def intersection_term(out: dict[str, torch.Tensor], points: str, alpha: float = 1.0, truncate: bool = False,
                      net=None) -> torch.Tensor:
    """The mean over pairs of ``L(left | right) + alpha L(flip(right) | flip(left))``, the
    occupancy intersection loss of the placed hands (:func:`handgeom.losses.intersection_loss`,
    its two halves, so that ``alpha`` may be any weight)."""
    right, left = placed(out)
    verts_right, verts_left = placed_meshes(out) if points == "mesh" else (None, None)
    loss = intersection_loss(left, right, net, points, both=False, truncate=truncate, verts_left=verts_left)
    if alpha > 0:
        flipped_verts = None if verts_right is None else mirror(verts_right)
        loss = loss + alpha * intersection_loss(mirror(right), mirror(left), net, points, both=False, truncate=truncate,
                                                verts_left=flipped_verts)
    return loss


def loss(model: nn.Module, batch: dict, config: TrainConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net = getattr(model, "module", model)  # through DistributedDataParallel
    kind = "uplift" if isinstance(net, TwoHandUplift) else "refiner"
    x = batch["input"] if "input" in batch else corrupt(batch, kind).to(batch["joints"].device)
    out = model(x)
    w = config.loss
    terms = {"joints": mpjpe(out["joints"], batch["joints"]).mean(),
             "offset": (out["offset"] - batch["offset"]).norm(dim=-1).mean(),
             "lengths": (torch.stack([p.bone_lengths for p in out["params"]], 1) - batch["lengths"]).abs().mean()}
    for points in POINT_SETS:
        if w.get(f"intersection_{points}", 0) > 0:
            terms[f"intersection_{points}"] = intersection_term(out, points, w.get("alpha", 1.0), w.get("truncate", 0) > 0)
    if w.get("penetration", 0) > 0:
        right, left = placed_meshes(out)
        terms["penetration"] = mutual_penetration(right, net.faces[0], left, net.faces[1]).mean()
    total = sum(w.get(k, 0.0) * v for k, v in terms.items())
    return total, {k: v.detach() for k, v in terms.items()}


def pair_metrics(model: nn.Module, batch: dict, resolution: int = EVAL_RESOLUTION,
                 occupancy_resolution: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Per pair of a held-out batch: ``mpjpe`` and ``mrrpe`` (mm), ``intersections`` (the
    ray-cast count on a ``resolution``³ grid over the placed meshes) and, with
    ``occupancy_resolution``, ``occupancy`` (:func:`handgeom.metrics.count_intersections_occupancy`
    on such a grid); and the model's outputs."""
    out = model(batch["input"])
    right, left = placed_meshes(out)
    faces = model.faces
    metrics = {"mpjpe": 1e3 * mpjpe(out["joints"], batch["joints"]).mean(1),
               "mrrpe": 1e3 * (out["offset"] - batch["offset"]).norm(dim=-1),
               "intersections": count_intersections(right.double(), faces[0], left.double(), faces[1], resolution)}
    if occupancy_resolution is not None:
        joints_right, joints_left = placed(out)
        metrics["occupancy"] = count_intersections_occupancy(joints_left, joints_right, occupancy_resolution)
    return metrics, out


def evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]:
    sums: dict[str, float] = {}
    samples = 0
    for batch in loader:
        metrics, _ = pair_metrics(model, batch)
        samples += len(batch["joints"])
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
    return {"samples": samples, **{k: v / max(samples, 1) for k, v in sums.items()},
            "resolution": EVAL_RESOLUTION}


def markdown(metrics: dict[str, Any]) -> str:
    return (f"{metrics['samples']} held-out pairs: MPJPE {metrics['mpjpe']:.2f} mm, MRRPE {metrics['mrrpe']:.2f} mm, "
            f"{metrics['intersections']:.2f} grid points inside both hands per pair ({metrics['resolution']}³ grid).\n")

