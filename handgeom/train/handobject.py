"""The hand-object system for the training loop: presets, data, loss, evaluation and figures.

Evaluation (``handgeom eval handobject``), per estimate (initial, refined): the hand's MPJPE and
MPVPE in mm, root-relative (the wrist as root) and Procrustes-aligned (scale, rotation and
translation fitted to the truth per hand), the object's centre error and its mean vertex error
(the posed template against the truth, root-relative). On the refined meshes (``predicted``), and
on the ground truth for reference (``truth``), the interaction metrics of :mod:`handgeom.metrics`:
the hand-object distance (per image, the smallest distance from a hand vertex to the object's
surface, 0 in contact or inside; mm), the penetration depth (the deepest hand vertex inside the
object, ObMan's and gSDF's definition; mm), the intersection volume on 1 mm and 5 mm grids (cm³)
and the contact ratio (images with a hand vertex within 5 mm of the object or inside it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset

from handgeom.datasets import HO3D, Augment, DexYCB, SyntheticHandObject
from handgeom.datasets.augment import transform
from handgeom.losses import HANDOBJECT_WEIGHTS, handobject_loss, handobject_targets
from handgeom.metrics import CONTACT_THRESHOLD, hand_object_gap, intersection_volume, mpjpe, procrustes
from handgeom.models.handobject import PRESETS as MODEL_PRESETS
from handgeom.models.handobject import HandObjectNet
from handgeom.train.loop import TrainConfig, data_source, model_preset
from handgeom.viz import render_pixels

name = "handobject"
LOSS_TERMS = tuple(HANDOBJECT_WEIGHTS)

PRESETS = {
    # the paper's schedule scaled to one GPU
    "paper": TrainConfig(steps=100_000, batch=32, lr=1e-4, warmup=1000, eval_every=5000, eval_size=500,
                         checkpoint_every=1000, workers=8, model={"preset": "paper"}),
    # what trains on a 2-core CPU in well under an hour and wrote the shipped weights
    # (6,000 scenes, each rendered once: the grasp synthesis costs more than a training step)
    "cpu": TrainConfig(steps=3000, batch=16, lr=3e-4, warmup=100, eval_every=1000, eval_size=100,
                       checkpoint_every=250, workers=1, scenes=6000, model={"preset": "cpu"}),
    # smoke tests: a few seconds
    "tiny": TrainConfig(steps=4, batch=2, lr=1e-3, warmup=1, eval_every=1000, eval_size=2, checkpoint_every=2,
                        log_every=1, workers=0, model={"preset": "tiny"}),
}


def build_model(config: TrainConfig) -> nn.Module:
    return HandObjectNet(model_preset(config, MODEL_PRESETS))


class RightHand:
    """A reader's transform for the hand-object network, which reconstructs a right hand: a frame
    of a left hand (DexYCB's left-hand sequences) is mirrored into a frame of a right hand (the
    image, the hand and the object's mesh: :func:`handgeom.datasets.augment.transform`), then
    ``augment`` applies (one that never flips)."""

    def __init__(self, augment: Augment | None = None):
        if augment is not None and augment.flip > 0:
            raise ValueError(f"RightHand: the augmentation must not flip (its flip is {augment.flip}): a flip makes "
                             f"the right hand a left one")
        self.augment = augment

    def __call__(self, sample: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        if not sample["hand_valid"][0]:
            if "object_pose" in sample and "object_verts" not in sample:
                raise ValueError("RightHand: a left-hand frame's object needs its mesh to be mirrored (read the "
                                 "dataset with objects=True)")
            sample = transform(sample, 1.0, 0.0, [0.0, 0.0], flip=True)
        return self.augment(sample, index) if self.augment is not None else sample


def dataset(data: str, split: str, config: TrainConfig, size: int, seed: int) -> Dataset:
    """``synthetic``: :class:`SyntheticHandObject` drawn with ``seed``; ``ho3d:PATH`` (HO-3D's
    train split for training, its evaluation split, which needs the full annotations, otherwise)
    or ``dexycb:PATH`` (setup s0, train or test), with the YCB meshes of ``PATH/models``, every
    hand made a right hand (:class:`RightHand`) and the training frames augmented (seeded by
    ``seed``; no flips)."""
    image_size = model_preset(config, MODEL_PRESETS).image_size
    train = split == "train"

    def reader(cls: type, split_name: str):
        augment = Augment(flip=0.0, seed=seed) if train else None
        return lambda root: cls(root, split_name, image_size, objects=True, transform=RightHand(augment))

    return data_source(data, lambda: SyntheticHandObject(size, image_size, seed=seed), {
        "ho3d": reader(HO3D, "train" if train else "evaluation"),
        "dexycb": reader(DexYCB, "train" if train else "test")})


def _faces(model: nn.Module) -> torch.Tensor:
    return getattr(model, "module", model).hand_model.faces  # through DistributedDataParallel


def _forward(model: nn.Module, targets: dict) -> list[dict]:
    return model(targets["image"], targets["template"], targets["object_class"])


def loss(model: nn.Module, batch: dict, config: TrainConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    targets = handobject_targets(batch)
    return handobject_loss(_forward(model, targets), targets, _faces(model), config.loss)


def interaction(hand: torch.Tensor, hand_faces: torch.Tensor, obj: torch.Tensor, obj_faces: torch.Tensor) -> dict:
    """The interaction metrics of a batch of meshes (float64), per image: distance and depth in
    mm, volumes in cm³, contact 0 or 1."""
    hand, obj = hand.double(), obj.double()
    gap = hand_object_gap(hand, obj, obj_faces)
    return {"distance_mm": 1e3 * gap.clamp_min(0), "depth_mm": 1e3 * (-gap).clamp_min(0),
            "volume_1mm_cm3": 1e6 * intersection_volume(hand, hand_faces, obj, obj_faces, pitch=0.001),
            "volume_5mm_cm3": 1e6 * intersection_volume(hand, hand_faces, obj, obj_faces, pitch=0.005),
            "contact": (gap < CONTACT_THRESHOLD).double()}


def evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]:
    device = next(model.parameters()).device
    faces = _faces(model)
    sums: dict[str, float] = {}
    samples = 0
    for batch in loader:
        t = handobject_targets({k: v.to(device) for k, v in batch.items()})
        outputs = _forward(model, t)
        samples += t["image"].shape[0]

        def add(key: str, values: torch.Tensor) -> None:
            sums[key] = sums.get(key, 0.0) + float(values.double().sum())

        for stage, out in zip(("initial", "refined"), outputs):
            add(f"{stage}/mpjpe", 1e3 * mpjpe(out["joints"], t["joints"], t["joints_valid"]))
            add(f"{stage}/mpvpe", 1e3 * mpjpe(out["verts"], t["verts"]))
            add(f"{stage}/pa_mpjpe", 1e3 * mpjpe(procrustes(out["joints"], t["joints"]), t["joints"], t["joints_valid"]))
            add(f"{stage}/pa_mpvpe", 1e3 * mpjpe(procrustes(out["verts"], t["verts"]), t["verts"]))
            real = t["object_real"].double()
            error = (out["object_verts"] - t["object_verts"]).norm(dim=-1).double()
            add(f"{stage}/object_mm", 1e3 * (error * real).sum(1) / real.sum(1))
            centre = lambda v: (torch.where(t["object_real"][..., None], v, np.inf).amin(1)
                                + torch.where(t["object_real"][..., None], v, -np.inf).amax(1)) / 2
            add(f"{stage}/object_centre_mm", 1e3 * (centre(out["object_verts"]) - centre(t["object_verts"])).norm(dim=-1))
        last = outputs[-1]
        for who, (hand, obj) in (("predicted", (last["verts"], last["object_verts"])),
                                 ("truth", (t["verts"], t["object_verts"]))):
            for key, values in interaction(hand, faces, obj, t["object_faces"]).items():
                add(f"{who}/{key}", values)
    out: dict[str, Any] = {"samples": samples}
    for key, total in sums.items():
        group, metric = key.split("/")
        out.setdefault(group, {})[metric] = total / max(samples, 1)
    out["refinement_gain"] = 1 - out["refined"]["mpjpe"] / max(out["initial"]["mpjpe"], 1e-9)
    return out


def markdown(metrics: dict[str, Any]) -> str:
    """The evaluation as two Markdown tables: the errors per estimate, then the interaction of the
    refined meshes and of the truth."""
    rows = "".join(f"| {s} | {m['mpjpe']:.1f} | {m['pa_mpjpe']:.1f} | {m['mpvpe']:.1f} | {m['pa_mpvpe']:.1f} "
                   f"| {m['object_centre_mm']:.1f} | {m['object_mm']:.1f} |\n"
                   for s, m in ((s, metrics[s]) for s in ("initial", "refined")))
    contact = "".join(f"| {s} | {m['distance_mm']:.2f} | {m['depth_mm']:.2f} | {m['volume_1mm_cm3']:.2f} "
                      f"| {m['volume_5mm_cm3']:.2f} | {100 * m['contact']:.0f}% |\n"
                      for s, m in ((s, metrics[s]) for s in ("predicted", "truth")))
    return (f"{metrics['samples']} held-out samples; errors in mm (root-relative; PA: Procrustes-aligned).\n\n"
            "| estimate | MPJPE | PA-MPJPE | MPVPE | PA-MPVPE | object centre | object vertices |\n"
            "|---|---|---|---|---|---|---|\n" + rows +
            "\n| meshes | hand-object distance mm | penetration depth mm | volume 1 mm grid cm³ | volume 5 mm grid cm³ "
            "| contact |\n|---|---|---|---|---|---|\n" + contact +
            f"\nRefinement gain: {100 * metrics['refinement_gain']:.1f}% MPJPE.\n")


def figures(model: nn.Module, metrics: dict[str, Any], dataset: Dataset, out: Path, images: int = 4) -> list[Path]:
    """``examples.png``: :func:`examples` of the first ``images`` held-out images. Returns the
    files written."""
    path = out / "examples.png"
    examples({"prediction": model}, dataset, range(min(images, len(dataset)))).save(path)
    return [path]


def examples(models: dict[str, nn.Module], dataset: Dataset, indices) -> Image.Image:
    """A picture of hand-object predictions: one row per sample ``indices`` of ``dataset``; the
    input, then per model (``{label: network}``) its hand and object over the input (the camera's
    view, through the predicted weak-perspective camera), then per model the same from 60 degrees
    around the vertical axis. The volume inside both meshes is tinted red."""
    batch = torch.utils.data.default_collate([dataset[i] for i in indices])
    first = next(iter(models.values()))
    device = next(first.parameters()).device
    t = handobject_targets({k: v.to(device) for k, v in batch.items()})
    predictions = {label: _forward(net, t)[-1] for label, net in models.items()}
    pixels = 2 * t["image"].shape[-1]
    turn = torch.tensor([[0.5, 0, 0.866], [0, 1, 0], [-0.866, 0, 0.5]], dtype=t["verts"].dtype, device=device)
    hand_faces = _faces(first)
    rows = []
    for b in range(t["image"].shape[0]):
        image = np.array(Image.fromarray((t["image"][b].permute(1, 2, 0).cpu() * 255).byte().numpy())
                         .resize((pixels, pixels), Image.Resampling.BILINEAR))
        camera_views, turned_views = [], []
        for last in predictions.values():
            s, offset = last["camera"][b, 0], last["camera"][b, 1:]
            scene = torch.cat([last["verts"][b], last["object_verts"][b]])
            centre = (scene.amin(0) + scene.amax(0)) / 2
            turned = (scene - centre) @ turn.T
            fit = 0.85 * pixels / float((turned.amax(0) - turned.amin(0))[:2].max())  # the turned scene fills the panel
            middle = torch.tensor([pixels / 2, pixels / 2, 0.0], dtype=scene.dtype, device=device)
            for views, place, background in (
                    (camera_views, lambda v: torch.cat([(s * v[:, :2] + offset + 1) * pixels / 2, s * v[:, 2:] * pixels / 2], 1),
                     image),
                    (turned_views, lambda v: fit * (v - centre) @ turn.T + middle, None)):
                meshes = [(place(last["verts"][b]), hand_faces, (0.93, 0.72, 0.6)),
                          (place(last["object_verts"][b]), t["object_faces"][b], (0.45, 0.6, 0.85))]
                views.append(render_pixels(meshes, (pixels, pixels), background=background, opacity=0.85,
                                           highlight=(0.9, 0.05, 0.05)))
        rows.append(np.concatenate([image] + camera_views + turned_views, 1))
    picture = Image.fromarray(np.concatenate(rows, 0))
    if len(models) > 1:  # label the columns
        draw = ImageDraw.Draw(picture)
        for k, label in enumerate(list(models) * 2):
            draw.text((pixels * (1 + k) + 4, 4), label, fill=(0, 0, 0))
    return picture
