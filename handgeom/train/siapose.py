"""The SiaPose 2D hand pose system for the training loop: presets, data, the stage-wise loss and
the PCK evaluation.

Training (the paper's): the preliminary estimator first, alone; then the SIA-GCN heads and the
pointer network on the frozen estimator's heatmaps; then both jointly. ``model["phases"]`` gives
the fractions of the steps of the first two phases. Targets are Gaussian heatmaps of sigma 1
heatmap pixel, the loss the squared error of the preliminary (every stage) and refined heatmaps.

Evaluation (``handgeom eval siapose``), SIA-GCN's protocol: PCK of the argmax keypoints, a joint
correct within ``delta`` times the crop's side, at ``delta`` in 0.01 .. 0.06 and their mean (mPCK),
for the preliminary and the refined heatmaps (and the refined soft-argmax), and the curve out to
0.2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from handgeom.datasets import PanopticHands, SyntheticSingleHand
from handgeom.losses import SIAPOSE_WEIGHTS, heatmap_targets, siapose_loss, single_hand_2d
from handgeom.metrics import pck
from handgeom.models.siapose import PRESETS as MODEL_PRESETS
from handgeom.models.siapose import SiaPose
from handgeom.train.loop import TrainConfig, data_source, model_preset

name = "siapose"
LOSS_TERMS = tuple(SIAPOSE_WEIGHTS)
PAPER_DELTAS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)
CURVE_DELTAS = tuple(round(0.01 * k, 2) for k in range(21))  # 0 .. 0.2

PRESETS = {
    "paper": TrainConfig(steps=60_000, batch=16, lr=1e-4, warmup=500, eval_every=5000, eval_size=1000,
                         checkpoint_every=1000, workers=8, model={"preset": "paper", "phases": [0.4, 0.2]}),
    # what trains on a 2-core CPU in well under an hour and wrote the shipped weights
    "cpu": TrainConfig(steps=4000, batch=16, lr=1e-3, warmup=100, eval_every=1000, eval_size=300,
                       checkpoint_every=250, workers=1, model={"preset": "cpu", "phases": [0.3, 0.3]}),
    # smoke tests: a few seconds
    "tiny": TrainConfig(steps=6, batch=2, lr=1e-3, warmup=1, eval_every=1000, eval_size=2, checkpoint_every=3,
                        log_every=1, workers=0, model={"preset": "tiny", "phases": [1 / 3, 1 / 3]}),
}


def build_model(config: TrainConfig) -> nn.Module:
    return SiaPose(model_preset(config, MODEL_PRESETS))


def dataset(data: str, split: str, config: TrainConfig, size: int, seed: int) -> Dataset:
    """``synthetic``: :class:`SyntheticSingleHand` drawn with ``seed``; ``panoptic:PATH``: the CMU
    Panoptic hand datasets' files under PATH (:class:`~handgeom.datasets.PanopticHands`: the
    paper's random 70/15/15 split, train for training, test otherwise)."""
    image_size = model_preset(config, MODEL_PRESETS).image_size
    return data_source(data, lambda: SyntheticSingleHand(size, image_size, seed=seed),
                       {"panoptic": lambda root: PanopticHands(root, "train" if split == "train" else "test", image_size)})


def phase(step: int, config: TrainConfig) -> str:
    """``"estimator"``, ``"head"`` or ``"joint"``: the stage-wise phase of (0-based) ``step``."""
    first, second = config.model.get("phases", (0.0, 0.0))
    if step < first * config.steps:
        return "estimator"
    return "head" if step < (first + second) * config.steps else "joint"


def _targets(model: SiaPose, batch: dict, heatmap_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    joints, valid = single_hand_2d(batch)
    return heatmap_targets(joints, heatmap_size, model.stride), valid.to(joints.dtype)


def loss(model: nn.Module, batch: dict, config: TrainConfig, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net = getattr(model, "module", model)  # through DistributedDataParallel
    current = phase(step, config)
    net.detach = current == "head"
    outputs = model(batch["image"])
    targets, valid = _targets(net, batch, tuple(outputs["heatmaps"].shape[-2:]))
    weights = {**SIAPOSE_WEIGHTS, **config.loss}
    if current == "estimator":
        weights["refined"] = 0.0
    elif current == "head":
        weights["preliminary"] = 0.0
    return siapose_loss(outputs, targets, valid, weights)


def evaluate(model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]:
    device = next(model.parameters()).device
    found: dict[str, list[torch.Tensor]] = {"preliminary": [], "refined": [], "refined_soft": [], "target": [], "valid": []}
    size = None
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = model(batch["image"])
        joints, valid = single_hand_2d(batch)
        size = batch["image"].shape[-1]
        for key, value in (("preliminary", outputs["preliminary_keypoints"]), ("refined", outputs["keypoints"]),
                           ("refined_soft", outputs["keypoints_soft"]), ("target", joints), ("valid", valid)):
            found[key].append(value.cpu())
    stacked = {k: torch.cat(v) for k, v in found.items()}
    out: dict[str, Any] = {"samples": len(stacked["target"]), "crop_size": size, "deltas": list(CURVE_DELTAS)}
    for key in ("preliminary", "refined", "refined_soft"):
        curve = [pck(stacked[key], stacked["target"], size, d, stacked["valid"]) for d in CURVE_DELTAS]
        paper = {f"pck@{d:g}": curve[CURVE_DELTAS.index(d)] for d in PAPER_DELTAS}
        out[key] = {**paper, "mpck": sum(paper.values()) / len(paper), "curve": curve,
                    "error_px": float(((stacked[key] - stacked["target"]).norm(dim=-1) * stacked["valid"]).sum()
                                      / stacked["valid"].sum().clamp_min(1))}
    out["gain_pck@0.04"] = out["refined"]["pck@0.04"] - out["preliminary"]["pck@0.04"]
    return out


def markdown(metrics: dict[str, Any]) -> str:
    """PCK at the paper's thresholds and mPCK (in %), and the mean pixel error, per heatmap set."""
    header = "| heatmaps | " + " | ".join(f"PCK@{d:g}" for d in PAPER_DELTAS) + " | mPCK | error px |\n"
    header += "|---|" + "---|" * (len(PAPER_DELTAS) + 2) + "\n"
    rows = ""
    for key, label in (("preliminary", "preliminary"), ("refined", "refined (SIA-GCN)"), ("refined_soft", "refined, soft-argmax")):
        m = metrics[key]
        rows += (f"| {label} | " + " | ".join(f"{100 * m[f'pck@{d:g}']:.1f}" for d in PAPER_DELTAS)
                 + f" | {100 * m['mpck']:.1f} | {m['error_px']:.2f} |\n")
    return (f"{metrics['samples']} held-out crops of {metrics['crop_size']} px; PCK in % of the visible joints, "
            f"thresholds as fractions of the crop's side.\n\n" + header + rows +
            f"\nRefinement: {100 * metrics['gain_pck@0.04']:+.1f} points of PCK@0.04.\n")


def figures(model: nn.Module, metrics: dict[str, Any], dataset: Dataset, out: Path, crops: int = 6) -> list[Path]:
    """``pck.png``: the PCK curves of the preliminary and the refined heatmaps out to 0.2 (with
    matplotlib, the optional "plots" extra; skipped without it), and ``keypoints.png``: the first
    ``crops`` held-out crops with the truth (white), the preliminary (orange) and the refined
    (blue) keypoints, drawn with Pillow. Returns the files written."""
    written = []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no {out / 'pck.png'} (pip install matplotlib)")
    else:
        figure, axes = plt.subplots(figsize=(5, 3.6), dpi=120)
        for key, label in (("preliminary", "preliminary"), ("refined", "refined (SIA-GCN)")):
            axes.plot(metrics["deltas"], [100 * v for v in metrics[key]["curve"]], label=f"{label}, mPCK {100 * metrics[key]['mpck']:.1f}")
        axes.axvspan(0.01, 0.06, color="0.92", zorder=0, label="the paper's thresholds")
        axes.set(xlabel="threshold (fraction of the crop's side)", ylabel="PCK (%)", xlim=(0, 0.2), ylim=(0, 100),
                 title=f"SiaPose, {metrics['samples']} held-out crops")
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        figure.savefig(out / "pck.png")
        plt.close(figure)
        written.append(out / "pck.png")
    from PIL import Image, ImageDraw

    from handgeom.viz import draw_skeleton

    device = next(model.parameters()).device
    samples = [dataset[i] for i in range(min(crops, len(dataset)))]
    batch = {k: torch.stack([s[k] for s in samples]).to(device) for k in ("image", "joints_2d", "joints_valid", "hand_valid")}
    outputs = model(batch["image"])
    truth, valid = single_hand_2d(batch)
    zoom = 2
    tiles = []
    for b in range(len(samples)):
        image = (batch["image"][b].permute(1, 2, 0).cpu() * 255).byte().numpy()
        tile = Image.fromarray(image).resize((image.shape[1] * zoom, image.shape[0] * zoom), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(tile)
        for joints, colour in ((truth[b], (255, 255, 255)), (outputs["preliminary_keypoints"][b], (235, 120, 40)),
                               (outputs["keypoints"][b], (40, 110, 235))):
            draw_skeleton(draw, joints.cpu() * zoom, colour, valid=valid[b].cpu())
        tiles.append(tile)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height), (255, 255, 255))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (k * (tile.width + 4), 0))
    sheet.save(out / "keypoints.png")
    written.append(out / "keypoints.png")
    return written
