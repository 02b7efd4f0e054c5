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

from handgeom.datasets import Augment, InterHand26M, SyntheticInteractingHands
from handgeom.losses import DIR_WEIGHTS, dir_loss, dir_targets, placed_meshes
from handgeom.metrics import alignment_scale, count_intersections, intersection_volume, mpjpe, penetration_depth
from handgeom.models.dir import PRESETS as MODEL_PRESETS
from handgeom.models.dir import InteractingHandsNet
from handgeom.train.loop import TrainConfig, data_source, model_preset

name = "dir"
LOSS_TERMS = tuple(DIR_WEIGHTS)

PRESETS = {
    # the paper's schedule scaled to one GPU
    "paper": TrainConfig(steps=100_000, batch=32, lr=1e-4, warmup=1000, eval_every=5000, eval_size=500,
                         checkpoint_every=1000, workers=8, model={"preset": "paper"}),
    # what trains on a 2-core CPU in well under an hour and wrote the shipped weights
    "cpu": TrainConfig(steps=4000, batch=16, lr=3e-4, warmup=100, eval_every=800, eval_size=200,
                       checkpoint_every=250, workers=1, model={"preset": "cpu"}),
    # smoke tests: a few seconds
    "tiny": TrainConfig(steps=4, batch=2, lr=1e-3, warmup=1, eval_every=1000, eval_size=2, checkpoint_every=2,
                        log_every=1, workers=0, model={"preset": "tiny"}),
}


def build_model(config: TrainConfig) -> nn.Module:
    return InteractingHandsNet(model_preset(config, MODEL_PRESETS))


def dataset(data: str, split: str, config: TrainConfig, size: int, seed: int) -> Dataset:
    """``synthetic``: :class:`SyntheticInteractingHands` drawn with ``seed``; ``interhand:PATH``:
    InterHand2.6M's interacting frames (the train split for training, with augmentation seeded
    by ``seed``; val otherwise)."""
    image_size = model_preset(config, MODEL_PRESETS).image_size
    return data_source(data, lambda: SyntheticInteractingHands(size, image_size, seed=seed), {
        "interhand": lambda root: InterHand26M(root, "train" if split == "train" else "val", image_size,
                                               interacting_only=True,
                                               transform=Augment(seed=seed) if split == "train" else None)})


def _faces(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    net = getattr(model, "module", model)  # through DistributedDataParallel
    return net.hands[0].faces, net.hands[1].faces


def loss(model: nn.Module, batch: dict, config: TrainConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    outputs = model(batch["image"])
    return dir_loss(outputs, dir_targets(batch), _faces(model), config.loss)


def evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    faces = _faces(model)
    device = next(model.parameters()).device

    def add(key: str, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Per-sample ``values [B]`` where ``valid [B]`` holds."""
        valid = valid.to(values.dtype)
        sums[key] = sums.get(key, 0.0) + float((values * valid).double().sum())
        counts[key] = counts.get(key, 0.0) + float(valid.sum())

    samples = 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        targets = dir_targets(batch)
        outputs = model(batch["image"])
        samples += batch["image"].shape[0]
        size = batch["image"].shape[-1]
        hand, joint = targets["hand_valid"], targets["joints_valid"]
        both = hand.all(1)
        for k, out in enumerate(outputs):
            stage = "initial" if k == 0 else f"stage{k}"
            scale = alignment_scale(out["joints"], targets["joints"])  # [B, 2]
            for slot, side in enumerate(("right", "left")):
                valid, present = joint[:, slot], hand[:, slot] & joint[:, slot].any(1)
                alignable = present & joint[:, slot, 0] & joint[:, slot, 9]
                s = scale[:, slot, None, None]
                add(f"{stage}/mpjpe_{side}", 1e3 * mpjpe(out["joints"][:, slot], targets["joints"][:, slot], valid), present)
                add(f"{stage}/mpvpe_{side}", 1e3 * mpjpe(out["verts"][:, slot], targets["verts"][:, slot]), hand[:, slot])
                add(f"{stage}/mpjpe_aligned_{side}",
                    1e3 * mpjpe(s * out["joints"][:, slot], targets["joints"][:, slot], valid), alignable)
                add(f"{stage}/mpvpe_aligned_{side}", 1e3 * mpjpe(s * out["verts"][:, slot], targets["verts"][:, slot]),
                    alignable)
            add(f"{stage}/mrrpe", 1e3 * (out["offset"] - targets["offset"]).norm(dim=-1), both)
            uv_error = ((out["joints_uv"] - targets["joints_uv"]) * size / 2).norm(dim=-1)  # pixels
            add(f"{stage}/joints_2d_px", (uv_error * joint).sum((1, 2)) / joint.sum((1, 2)).clamp_min(1), joint.any(2).any(1))
        right, left = (v.double() for v in placed_meshes(outputs[-1]))
        add("last/intersections", count_intersections(right, faces[0], left, faces[1]).double(), both)
        add("last/volume_cm3", 1e6 * intersection_volume(right, faces[0], left, faces[1], pitch=0.001), both)
        depth = torch.maximum(penetration_depth(right, left, faces[1]), penetration_depth(left, right, faces[0]))
        add("last/depth_mm", 1e3 * depth, both)
    metrics = {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
    stages = ["initial"] + [f"stage{k}" for k in range(1, len(outputs))]
    out: dict[str, Any] = {"samples": samples}
    for stage in stages + ["last"]:
        out[stage] = {k.split("/")[1]: v for k, v in metrics.items() if k.startswith(stage + "/")}
    for stage in stages:
        m = out[stage]
        m["mpjpe"] = (m["mpjpe_right"] + m["mpjpe_left"]) / 2
        m["mpjpe_aligned"] = (m["mpjpe_aligned_right"] + m["mpjpe_aligned_left"]) / 2
    out["refinement_gain"] = 1 - out[stages[-1]]["mpjpe"] / max(out["initial"]["mpjpe"], 1e-9)
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
