"""Benchmark: fused bone_plane_projection vs the plain PyTorch broadcast formulation.

DIR's training sizes (ICCV 2023): batch 16, two hands of 21 joints (40 bone planes), 64 feature
channels, 32x32 maps with radius 2 and 16x16 maps with radius 1. Joints are random hand-like
skeletons (bones 5-20% of the image). Forward+backward time (median) and the peak memory a
forward+backward adds on top of its inputs, measured in a child process for each variant.

    python benchmarks/bench_projection.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import json
import sys

import torch

import handgeom
from common import cli, format_table, measure_in_child, median_seconds, peak_rss_bytes
import references as ref

CONFIGS = [  # name, batch, size, radius
    ("DIR S=32 r=2", 16, 32, 2.0),
    ("DIR S=16 r=1", 16, 16, 1.0),
]
CHANNELS = 64
TWO_HAND_BONES = torch.tensor(ref.HAND_BONES + [(a + 21, b + 21) for a, b in ref.HAND_BONES])


def hand_like_joints(batch: int, gen: torch.Generator) -> torch.Tensor:
    """[batch, 42, 2] normalized coordinates: each hand a random walk along its bones."""
    joints = torch.empty(batch, 42, 2)
    for hand in (0, 21):
        joints[:, hand] = torch.rand(batch, 2, generator=gen) * 1.2 - 0.6
        for parent, child in ref.HAND_BONES:
            angle = torch.rand(batch, generator=gen) * 6.2832
            length = 0.1 + 0.3 * torch.rand(batch, generator=gen)  # of the [-1, 1] range
            step = torch.stack([angle.cos(), angle.sin()], dim=1) * length.unsqueeze(1)
            joints[:, hand + child] = joints[:, hand + parent] + step
    return joints


def make_inputs(batch: int, size: int, device: str, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    uv = hand_like_joints(batch, gen).to(device, dtype).requires_grad_()
    feat = torch.randn(batch, 42, CHANNELS, generator=gen).to(device, dtype).requires_grad_()
    grad_out = torch.randn(batch, 40 * CHANNELS, size, size, generator=gen).to(device, dtype)
    return uv, feat, grad_out


def forward_backward(variant: str, uv, feat, grad_out, size: int, radius: float):
    fn = handgeom.ops.bone_plane_projection if variant == "handgeom" else ref.bone_plane_projection
    bones = TWO_HAND_BONES.to(uv.device)
    out = fn(uv, feat, bones, (size, size), radius)
    return torch.autograd.grad(out, (uv, feat), grad_out)


def child(variant: str, batch: int, size: int, radius: float, device: str) -> dict:
    """One variant in a fresh process: peak memory added by one forward+backward."""
    forward_backward(variant, *make_inputs(1, size, device), size, radius)  # one-time setup
    uv, feat, grad_out = make_inputs(batch, size, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward(variant, uv, feat, grad_out, size, radius)
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base}
    base = peak_rss_bytes()
    forward_backward(variant, uv, feat, grad_out, size, radius)
    return {"peak_bytes": peak_rss_bytes() - base}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    """Measures every config; returns one record per config and prints the table."""
    records = []
    for name, batch, size, radius in CONFIGS:
        uv, feat, grad_out = make_inputs(batch, size, device)
        # handgeom's outputs use transparent huge pages, whose first ~1 GB in a process is slow
        # to fault in on this VM type (csrc/common/memory.h): warm up past it, as training does
        times = {
            v: median_seconds(lambda v=v: forward_backward(v, uv, feat, grad_out, size, radius),
                              repeat=3 if quick else 7, warmup=10 if v == "handgeom" else 2)
            for v in ("handgeom", "reference")
        }
        memory = {
            v: measure_in_child(__file__, v, str(batch), str(size), str(radius), device)["peak_bytes"]
            for v in ("handgeom", "reference")
        }
        out_bytes = grad_out.numel() * grad_out.element_size()
        records.append({
            "config": name, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            "handgeom_ms": times["handgeom"] * 1e3, "reference_ms": times["reference"] * 1e3,
            "speedup": times["reference"] / times["handgeom"],
            "handgeom_peak_mb": memory["handgeom"] / 2**20, "reference_peak_mb": memory["reference"] / 2**20,
            "output_mb": out_bytes / 2**20,
        })
    headers = ["config", "B", "device", "handgeom ms", "broadcast ms", "speedup",
               "handgeom peak MB", "broadcast peak MB", "output MB"]
    rows = [[r["config"], r["batch"], r["device"], f"{r['handgeom_ms']:.1f}", f"{r['reference_ms']:.1f}",
             f"{r['speedup']:.1f}x", f"{r['handgeom_peak_mb']:.0f}", f"{r['reference_peak_mb']:.0f}",
             f"{r['output_mb']:.0f}"] for r in records]
    print(f"bone_plane_projection forward+backward, C={CHANNELS}, 40 bone planes, "
          f"{torch.get_num_threads()} threads (peak = memory added on top of the inputs)")
    print(format_table(headers, rows))
    print(sample_joint_features_timing(device, quick))
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table."""
    return [{"op": "bone_plane_projection fwd+bwd", "workload": f"{r['config']}, B={r['batch']}",
             "handgeom": f"{r['handgeom_ms']:.1f} ms, {r['handgeom_peak_mb']:.0f} MB",
             "baseline": f"torch broadcast {r['reference_ms']:.1f} ms, {r['reference_peak_mb']:.0f} MB",
             "speedup": r["speedup"]} for r in records]


def sample_joint_features_timing(device: str, quick: bool) -> str:
    """sample_joint_features is grid_sample; this measures whether that leaves time to win."""
    gen = torch.Generator().manual_seed(1)
    feat = torch.randn(16, CHANNELS, 32, 32, generator=gen).to(device).requires_grad_()
    uv = hand_like_joints(16, gen).to(device).requires_grad_()

    def fwd_bwd(fn):
        return torch.autograd.grad(fn(feat, uv).sum(), (feat, uv))

    repeat = 5 if quick else 50
    ours = median_seconds(lambda: fwd_bwd(handgeom.ops.sample_joint_features), repeat=repeat)
    gather = median_seconds(lambda: fwd_bwd(ref.bilinear_sample), repeat=repeat)
    return (f"sample_joint_features (grid_sample) B=16 C={CHANNELS} 32x32, 42 joints, forward+backward: "
            f"{ours * 1e3:.2f} ms; four-tap gather formulation: {gather * 1e3:.2f} ms")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, batch, size, radius, device = sys.argv[2:7]
        print(json.dumps(child(variant, int(batch), int(size), float(radius), device)))
        return
    cli(run, __doc__)


if __name__ == "__main__":
    main()
