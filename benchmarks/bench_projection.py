"""Benchmark: fused bone_plane_projection vs the plain PyTorch broadcast formulation, and
bone_plane_conv vs the dense path it replaces.

DIR's training sizes (ICCV 2023): batch 16, two hands of 21 joints (40 bone planes), 64 feature
channels, 32x32 maps with radius 2 and 16x16 maps with radius 1. Joints are random hand-like
skeletons (bones 5-20% of the image). Forward+backward time (median) and the peak memory a
forward+backward adds on top of its inputs, measured in a child process for each variant.

1. bone_plane_projection: fwd+bwd against DIR's broadcast formulation, with the incoming
   gradient given (contiguous), expanded (the gradient of ``out.sum()``), non-contiguous
   (channels-last) or fresh (``torch.ones_like(out)`` made in the timed call; its own time is
   shown too: a fresh output-sized tensor page-faults in, for either formulation); and the
   backward alone against the forward alone.
2. bone_plane_conv (to O=256 with a 3x3 kernel, DIR's reduction of the 2,560 plane channels):
   fwd+bwd with the gradients of joint_uv, joint_feat, weight and bias, against
   bone_plane_projection + F.conv2d and DIR's broadcast projection + F.conv2d; the
   multiply-adds of the dense convolution and of the fused op (with N, the lit (pixel, bone)
   pairs, counted).

    python benchmarks/bench_projection.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

import handgeom
from common import added_peak_rss_bytes, cli, format_table, interleaved_median_seconds, measure_in_child, median_seconds
import references as ref

CONFIGS = [  # name, batch, size, radius
    ("DIR S=32 r=2", 16, 32, 2.0),
    ("DIR S=16 r=1", 16, 16, 1.0),
]
CHANNELS = 64
CONV_OUT, CONV_K = 256, 3  # DIR's reduction of the planes: 40 * 64 channels -> 256, 3x3
CONV_VARIANTS = ("fused", "projection+conv2d", "broadcast+conv2d")
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


def make_conv_inputs(batch: int, size: int, device: str, dtype=torch.float32):
    """The projection's inputs plus DIR's reduction weight [256, 2560, 3, 3], bias and an
    incoming gradient [B, 256, S, S]."""
    uv, feat, _ = make_inputs(batch, 1, device, dtype)
    gen = torch.Generator().manual_seed(2)
    fan_in = 40 * CHANNELS * CONV_K**2
    weight = (torch.randn(CONV_OUT, 40 * CHANNELS, CONV_K, CONV_K, generator=gen) / fan_in**0.5).to(device, dtype)
    bias = torch.randn(CONV_OUT, generator=gen).to(device, dtype)
    grad_out = torch.randn(batch, CONV_OUT, size, size, generator=gen).to(device, dtype)
    return uv, feat, weight.requires_grad_(), bias.requires_grad_(), grad_out


def conv_forward_backward(variant: str, uv, feat, weight, bias, grad_out, size: int, radius: float):
    bones = TWO_HAND_BONES.to(uv.device)
    if variant == "fused":
        out = handgeom.ops.bone_plane_conv(uv, feat, bones, weight, bias, size=size, radius=radius)
    else:
        project = handgeom.ops.bone_plane_projection if variant == "projection+conv2d" else ref.bone_plane_projection
        out = F.conv2d(project(uv, feat, bones, (size, size), radius), weight, bias, padding=CONV_K // 2)
    return torch.autograd.grad(out, (uv, feat, weight, bias), grad_out)


def child(variant: str, batch: int, size: int, radius: float, device: str) -> dict:
    """One variant in a fresh process: peak memory added by one forward+backward."""
    if variant in CONV_VARIANTS:
        run_once = lambda inputs: conv_forward_backward(variant, *inputs, size, radius)  # noqa: E731
        run_once(make_conv_inputs(1, size, device))  # one-time setup
        inputs = make_conv_inputs(batch, size, device)
    else:
        run_once = lambda inputs: forward_backward(variant, *inputs, size, radius)  # noqa: E731
        run_once(make_inputs(1, size, device))
        inputs = make_inputs(batch, size, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(inputs)
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base}
    return {"peak_bytes": added_peak_rss_bytes(lambda: run_once(inputs))}


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
    records += projection_gradient_layouts(device, quick)
    records += conv_records(device, quick)
    print(sample_joint_features_timing(device, quick))
    return records


GRADIENTS = ("given", "expanded", "channels-last", "fresh")


def projection_gradient_layouts(device: str, quick: bool) -> list[dict]:
    """bone_plane_projection fwd+bwd with each kind of incoming gradient, against the broadcast
    formulation with the same gradient; and the backward alone against the forward alone."""
    records = []
    for name, batch, size, radius in CONFIGS[1:] if quick else CONFIGS:  # quick: the 16x16 stage only
        uv, feat, grad_out = make_inputs(batch, size, device)
        bones = TWO_HAND_BONES.to(device)
        grads = {"given": grad_out, "expanded": torch.ones((), device=device).expand(grad_out.shape),
                 "channels-last": grad_out.contiguous(memory_format=torch.channels_last), "fresh": None}

        def fwd_bwd(fn, kind):
            out = fn(uv, feat, bones, (size, size), radius)
            g = torch.ones_like(out) if kind == "fresh" else grads[kind]
            return torch.autograd.grad(out, (uv, feat), g)

        fns = {}
        for kind in GRADIENTS:
            fns[f"handgeom {kind}"] = lambda kind=kind: fwd_bwd(handgeom.ops.bone_plane_projection, kind)
            fns[f"broadcast {kind}"] = lambda kind=kind: fwd_bwd(ref.bone_plane_projection, kind)
        out = handgeom.ops.bone_plane_projection(uv, feat, bones, (size, size), radius)
        def forward_only():
            with torch.no_grad():
                return handgeom.ops.bone_plane_projection(uv, feat, bones, (size, size), radius)

        fns["handgeom forward"] = forward_only
        fns["ones_like"] = lambda: torch.ones_like(out)  # the fresh gradient alone: the caller's share of "fresh"
        for kind in ("given", "expanded", "channels-last"):
            fns[f"handgeom backward {kind}"] = lambda kind=kind: torch.autograd.grad(out, (uv, feat), grads[kind],
                                                                                     retain_graph=True)
        times = interleaved_median_seconds(fns, repeat=2 if quick else 7, warmup=1 if quick else 3)
        forward = times["handgeom forward"]
        for kind in GRADIENTS:
            records.append({
                "kind": "projection_gradient", "config": name, "batch": batch, "device": device, "gradient": kind,
                "threads": torch.get_num_threads(), "handgeom_ms": times[f"handgeom {kind}"] * 1e3,
                "reference_ms": times[f"broadcast {kind}"] * 1e3,
                "speedup": times[f"broadcast {kind}"] / times[f"handgeom {kind}"],
                "forward_ms": forward * 1e3,
                "backward_ms": times[f"handgeom backward {kind}"] * 1e3 if kind in ("given", "expanded", "channels-last") else None,
                "gradient_made_ms": times["ones_like"] * 1e3 if kind == "fresh" else None,
            })
    headers = ["config", "incoming gradient", "handgeom fwd+bwd ms", "broadcast fwd+bwd ms", "speedup",
               "handgeom fwd ms", "handgeom bwd ms", "bwd / fwd", "of which ones_like ms"]
    rows = [[r["config"], r["gradient"], f"{r['handgeom_ms']:.1f}", f"{r['reference_ms']:.1f}", f"{r['speedup']:.1f}x",
             f"{r['forward_ms']:.1f}", "-" if r["backward_ms"] is None else f"{r['backward_ms']:.1f}",
             "-" if r["backward_ms"] is None else f"{r['backward_ms'] / r['forward_ms']:.2f}",
             "-" if r["gradient_made_ms"] is None else f"{r['gradient_made_ms']:.1f}"] for r in records]
    print(f"\nbone_plane_projection by incoming gradient, C={CHANNELS}, 40 bone planes, {torch.get_num_threads()} threads")
    print(format_table(headers, rows))
    return records


def lit_pairs(uv, size: int, radius: float) -> int:
    """N: the (pixel, bone) pairs within a mask, over the batch (a projection of unit features)."""
    ones = torch.ones(uv.shape[0], uv.shape[1], 1, device=uv.device, dtype=uv.dtype)
    with torch.no_grad():
        return int((handgeom.ops.bone_plane_projection(uv, ones, TWO_HAND_BONES.to(uv.device), size, radius) > 0).sum())


def conv_macs(batch: int, size: int, lit: int) -> dict:
    """Multiply-adds of the dense convolution and of the fused op (bone_plane_conv's docstring)."""
    planes, kk, O = 40 * CHANNELS, CONV_K**2, CONV_OUT
    dense = batch * O * planes * kk * size * size
    taps = 2 * batch * planes * kk * O
    return {"dense_fwd": dense, "dense_bwd": 2 * dense, "fused_fwd": taps + 2 * lit * kk * O,
            "fused_bwd": 3 * taps + 4 * lit * kk * O}  # the backward recomputes the taps


def conv_records(device: str, quick: bool) -> list[dict]:
    """bone_plane_conv fwd+bwd (gradients of all four inputs) against the dense paths."""
    records = []
    for name, batch, size, radius in CONFIGS[1:] if quick else CONFIGS:  # quick: the 16x16 stage only
        uv, feat, weight, bias, grad_out = make_conv_inputs(batch, size, device)
        fns = {v: lambda v=v: conv_forward_backward(v, uv, feat, weight, bias, grad_out, size, radius)
               for v in CONV_VARIANTS}
        times = interleaved_median_seconds(fns, repeat=1 if quick else 3, warmup=1)
        memory = {v: measure_in_child(__file__, v, str(batch), str(size), str(radius), device)["peak_bytes"]
                  for v in CONV_VARIANTS}
        lit = lit_pairs(uv, size, radius)
        records.append({
            "kind": "conv", "config": name, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            **{f"{v}_ms": times[v] * 1e3 for v in CONV_VARIANTS},
            **{f"{v}_peak_mb": memory[v] / 2**20 for v in CONV_VARIANTS},
            "speedup": times["projection+conv2d"] / times["fused"],
            "speedup_broadcast": times["broadcast+conv2d"] / times["fused"],
            "memory_ratio": memory["projection+conv2d"] / max(memory["fused"], 1),
            "lit_pairs": lit, "lit_fraction": lit / (batch * 40 * size * size), **conv_macs(batch, size, lit),
        })
    headers = ["config", "B", "fused ms", "proj+conv2d ms", "broadcast+conv2d ms", "speedup", "vs broadcast",
               "fused MB", "proj+conv2d MB", "broadcast+conv2d MB", "memory ratio", "lit", "GMAC dense f/b",
               "GMAC fused f/b"]
    rows = [[r["config"], r["batch"], f"{r['fused_ms']:.1f}", f"{r['projection+conv2d_ms']:.0f}",
             f"{r['broadcast+conv2d_ms']:.0f}", f"{r['speedup']:.1f}x", f"{r['speedup_broadcast']:.1f}x",
             f"{r['fused_peak_mb']:.0f}", f"{r['projection+conv2d_peak_mb']:.0f}", f"{r['broadcast+conv2d_peak_mb']:.0f}",
             f"1/{r['memory_ratio']:.1f}", f"{100 * r['lit_fraction']:.1f}%",
             f"{r['dense_fwd'] / 1e9:.1f}/{r['dense_bwd'] / 1e9:.1f}", f"{r['fused_fwd'] / 1e9:.2f}/{r['fused_bwd'] / 1e9:.2f}"]
            for r in records]
    print(f"\nbone_plane_conv fwd+bwd (grads of joint_uv, joint_feat, weight, bias), 40 planes x {CHANNELS} -> "
          f"{CONV_OUT}, {CONV_K}x{CONV_K}, {torch.get_num_threads()} threads (peak = memory added on top of the inputs)")
    print(format_table(headers, rows))
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table."""
    rows = []
    for r in records:
        kind = r.get("kind", "projection")
        workload = f"{r['config']}, B={r['batch']}"
        if kind == "projection":
            rows.append({"op": "bone_plane_projection fwd+bwd", "workload": workload,
                         "handgeom": f"{r['handgeom_ms']:.1f} ms, {r['handgeom_peak_mb']:.0f} MB",
                         "baseline": f"torch broadcast {r['reference_ms']:.1f} ms, {r['reference_peak_mb']:.0f} MB",
                         "speedup": r["speedup"]})
        elif kind == "projection_gradient" and r["gradient"] != "given":
            rows.append({"op": f"bone_plane_projection fwd+bwd, {r['gradient']} gradient", "workload": workload,
                         "handgeom": f"{r['handgeom_ms']:.1f} ms", "baseline": f"torch broadcast {r['reference_ms']:.1f} ms",
                         "speedup": r["speedup"]})
        elif kind == "conv":
            fused = f"{r['fused_ms']:.1f} ms, {r['fused_peak_mb']:.0f} MB"
            rows.append({"op": "bone_plane_conv fwd+bwd", "workload": workload, "handgeom": fused,
                         "baseline": f"projection + conv2d {r['projection+conv2d_ms']:.0f} ms, "
                                     f"{r['projection+conv2d_peak_mb']:.0f} MB", "speedup": r["speedup"]})
            rows.append({"op": "bone_plane_conv fwd+bwd", "workload": workload, "handgeom": fused,
                         "baseline": f"torch broadcast + conv2d {r['broadcast+conv2d_ms']:.0f} ms, "
                                     f"{r['broadcast+conv2d_peak_mb']:.0f} MB", "speedup": r["speedup_broadcast"]})
    return rows


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
