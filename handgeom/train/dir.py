"""The DIR interacting-hands system for the training loop: presets, data, loss and evaluation.

Evaluation (``handgeom eval dir``), per hand and per stage, DIR's protocol on InterHand2.6M:
MPJPE and MPVPE in mm, root-relative with the wrist as root, and scale-aligned (the predicted
hand scaled to the ground truth's wrist-to-middle-MCP length); MRRPE (the error of the right
root relative to the left, mm); the 2D joint error in pixels; and on the last stage's meshes,
placed by the predicted offset, handgeom's interaction metrics: the exact count of grid points
inside both hands (125k-point grid), the intersection volume (1 mm grid) and the maximum
penetration depth of either hand's vertices into the other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from handgeom.datasets import InterHand26M, SyntheticInteractingHands
from handgeom.losses import DIR_WEIGHTS, dir_loss, dir_targets, placed_meshes
from handgeom.metrics import alignment_scale, count_intersections, intersection_volume, mpjpe, penetration_depth
from handgeom.models.dir import PRESETS as MODEL_PRESETS
from handgeom.models.dir import InteractingHandsNet
from handgeom.train.loop import TrainConfig, TrainError

name = "dir"
LOSS_TERMS = tuple(DIR_WEIGHTS)

PRESETS = {
    # the paper's schedule scaled to one GPU
    "paper": TrainConfig(steps=100_000, batch=32, lr=1e-4, warmup=1000, eval_every=5000, eval_size=500,
                         checkpoint_every=1000, workers=8, model={"preset": "paper"}),
    # what trains on a 2-core CPU in well under an hour and wrote the shipped weights
    "cpu": TrainConfig(steps=2400, batch=16, lr=2e-4, warmup=100, eval_every=800, eval_size=200,
                       checkpoint_every=250, workers=1, model={"preset": "cpu"}),
    # smoke tests: a few seconds
    "tiny": TrainConfig(steps=4, batch=2, lr=1e-3, warmup=1, eval_every=1000, eval_size=2, checkpoint_every=2,
                        log_every=1, workers=0, model={"preset": "tiny"}),
}


def build_model(config: TrainConfig) -> nn.Module:
    preset = config.model.get("preset", "cpu")
    if preset not in MODEL_PRESETS:
        raise TrainError(f"unknown model preset {preset!r}; known: {', '.join(sorted(MODEL_PRESETS))}")
    return InteractingHandsNet(preset)


def dataset(data: str, split: str, config: TrainConfig, size: int, seed: int | None = None) -> Dataset:
    """``synthetic``: :class:`SyntheticInteractingHands` (training seed ``config.seed``, held-out
    seed ``config.seed + 1`` unless ``seed`` is given); ``interhand:PATH``: InterHand2.6M's
    interacting frames (train / val split)."""
    image_size = MODEL_PRESETS[config.model.get("preset", "cpu")].image_size
    if data == "synthetic":
        seed = config.seed + (split != "train") if seed is None else seed
        return SyntheticInteractingHands(size, image_size, seed=seed)
    if data.startswith("interhand:"):
        from pathlib import Path

        from handgeom.datasets import Augment, DatasetFormatError

        root = Path(data.split(":", 1)[1])
        if not root.is_dir():
            raise TrainError(f"--data {data}: {root} is not a directory")
        try:
            return InterHand26M(root, "train" if split == "train" else "val", image_size, interacting_only=True,
                                transform=Augment(seed=config.seed) if split == "train" else None)
        except DatasetFormatError as error:
            raise TrainError(f"--data {data}: {error}") from None
    raise TrainError(f"--data must be 'synthetic' or 'interhand:PATH', got {data!r}")


def _faces(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    net = getattr(model, "module", model)  # through DistributedDataParallel
    return net.hands[0].faces, net.hands[1].faces


def loss(model: nn.Module, batch: dict, config: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    outputs = model(batch["image"])
    return dir_loss(outputs, dir_targets(batch), _faces(model), config.loss)


def evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]:
    sums: dict[str, float] = {}
    count = 0
    faces = _faces(model)

    def add(key: str, values: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.double().sum())

    for batch in loader:
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        targets = dir_targets(batch)
        outputs = model(batch["image"])
        count += batch["image"].shape[0]
        size = batch["image"].shape[-1]
        for k, out in enumerate(outputs):
            stage = "initial" if k == 0 else f"stage{k}"
            scale = alignment_scale(out["joints"], targets["joints"])  # [B, 2]
            for slot, hand in enumerate(("right", "left")):
                valid = targets["joints_valid"][:, slot]
                add(f"{stage}/mpjpe_{hand}", 1e3 * mpjpe(out["joints"][:, slot], targets["joints"][:, slot], valid))
                add(f"{stage}/mpvpe_{hand}", 1e3 * mpjpe(out["verts"][:, slot], targets["verts"][:, slot]))
                aligned = scale[:, slot, None, None]
                add(f"{stage}/mpjpe_aligned_{hand}",
                    1e3 * mpjpe(aligned * out["joints"][:, slot], targets["joints"][:, slot], valid))
                add(f"{stage}/mpvpe_aligned_{hand}", 1e3 * mpjpe(aligned * out["verts"][:, slot], targets["verts"][:, slot]))
            add(f"{stage}/mrrpe", 1e3 * (out["offset"] - targets["offset"]).norm(dim=-1))
            uv_error = ((out["joints_uv"] - targets["joints_uv"]) * size / 2).norm(dim=-1)
            add(f"{stage}/joints_2d_px", (uv_error * targets["joints_valid"]).sum((1, 2)) / targets["joints_valid"].sum((1, 2)).clamp_min(1))
        right, left = placed_meshes(outputs[-1])
        right, left = right.double(), left.double()
        add("last/intersections", count_intersections(right, faces[0], left, faces[1]))
        add("last/volume_cm3", 1e6 * intersection_volume(right, faces[0], left, faces[1], pitch=0.001))
        add("last/depth_mm", 1e3 * torch.maximum(penetration_depth(right, left, faces[1]), penetration_depth(left, right, faces[0])))
    metrics = {k: v / max(count, 1) for k, v in sums.items()}
    stages = sorted({k.split("/")[0] for k in metrics if k != "last"} - {"last"}, key=lambda s: (s != "initial", s))
    out: dict[str, Any] = {"samples": count}
    for stage in stages + ["last"]:
        out[stage] = {k.split("/")[1]: v for k, v in metrics.items() if k.startswith(stage + "/")}
    for stage in stages:
        m = out[stage]
        m["mpjpe"] = (m["mpjpe_right"] + m["mpjpe_left"]) / 2
        m["mpjpe_aligned"] = (m["mpjpe_aligned_right"] + m["mpjpe_aligned_left"]) / 2
    final = stages[-1]
    out["refinement_gain"] = 1 - out[final]["mpjpe"] / max(out["initial"]["mpjpe"], 1e-9)
    return out


def markdown(metrics: dict[str, Any]) -> str:
    """The evaluation as a Markdown table: one row per stage, then the interaction metrics."""
    stages = [s for s in metrics if isinstance(metrics[s], dict) and "mpjpe" in metrics[s]]
    header = ("| stage | MPJPE R | MPJPE L | MPVPE R | MPVPE L | MPJPE aligned | MRRPE | 2D px |\n"
              "|---|---|---|---|---|---|---|---|\n")
    rows = "".join(f"| {s} | {m['mpjpe_right']:.1f} | {m['mpjpe_left']:.1f} | {m['mpvpe_right']:.1f} | {m['mpvpe_left']:.1f} "
                   f"| {m['mpjpe_aligned']:.1f} | {m['mrrpe']:.1f} | {m['joints_2d_px']:.2f} |\n"
                   for s, m in ((s, metrics[s]) for s in stages))
    last = metrics["last"]
    return (f"{metrics['samples']} held-out samples; errors in mm (2D in pixels).\n\n" + header + rows +
            f"\nLast stage's meshes: {last['intersections']:.0f} grid points inside both hands (125k grid), "
            f"intersection volume {last['volume_cm3']:.3f} cm³, maximum penetration {last['depth_mm']:.2f} mm; "
            f"refinement gain {100 * metrics['refinement_gain']:.1f}% MPJPE.\n")
