"""Benchmark: edge_conv2d (direct, FFT, auto) vs the naive composition (gather, grouped conv2d,
index_add, degree normalization), forward+backward, on SIA-GCN's hand graph (21 nodes, 61 edges:
20 bones both ways and a self-loop per node) with 10 heads.

Configs: the paper's size (B=8, 45x45 kernels on 46x46 heatmaps) and 3x3 / 7x7 kernels on 64x64
maps. Peak memory of each variant is measured in a fresh child process.

    python benchmarks/bench_edge_conv.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import sys

import torch

from common import added_peak_rss_bytes, cli, format_table, measure_in_child, median_seconds
from handgeom.ops import edge_conv2d
from handgeom.ops.edge_conv import FFT_FROM_TAPS
import references as ref

HAND = torch.tensor(ref.HAND_BONES)
EDGES = torch.cat([HAND, HAND.flip(1), torch.arange(21).repeat(2, 1).T])
CONFIGS = [("paper: 45x45 on 46x46", 46, 45), ("3x3 on 64x64", 64, 3), ("7x7 on 64x64", 64, 7)]
VARIANTS = {
    "direct": lambda x, w, b: edge_conv2d(x, w, EDGES, b, method="direct"),
    "fft": lambda x, w, b: edge_conv2d(x, w, EDGES, b, method="fft"),
    "auto": lambda x, w, b: edge_conv2d(x, w, EDGES, b, method="auto"),
    "naive": lambda x, w, b: ref.edge_conv2d(x, w, EDGES, b),
}


def make_inputs(batch: int, size: int, kernel: int):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 10, 21, size, size, generator=gen).requires_grad_()
    w = (0.02 * torch.randn(10, 61, kernel, kernel, generator=gen)).requires_grad_()
    b = torch.randn(10, 61, generator=gen).requires_grad_()
    return x, w, b


def forward_backward(variant: str, x, w, b):
    out = VARIANTS[variant](x, w, b)
    return torch.autograd.grad(out, (x, w, b), torch.ones_like(out))


def child(variant: str, batch: int, size: int, kernel: int) -> dict:
    forward_backward(variant, *make_inputs(1, size, kernel))  # one-time setup
    inputs = make_inputs(batch, size, kernel)
    return {"peak_bytes": added_peak_rss_bytes(lambda: forward_backward(variant, *inputs))}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    batch = 1 if quick else 8
    records = []
    for name, size, kernel in CONFIGS:
        inputs = [t.detach().to(device).requires_grad_() for t in make_inputs(batch, size, kernel)]
        # the direct path at 45x45 does 41x the 7x7 work: FFT territory, not measured
        variants = [v for v in VARIANTS if not (v == "direct" and kernel * kernel >= 4 * FFT_FROM_TAPS)]
        times = {v: median_seconds(lambda v=v: forward_backward(v, *inputs), repeat=1 if quick else 3, warmup=1)
                 for v in variants}
        memory = {v: measure_in_child(__file__, v, str(batch), str(size), str(kernel))["peak_bytes"]
                  for v in variants} if device == "cpu" else {}
        best = min(times[v] for v in ("direct", "fft") if v in times)
        for v in variants:
            records.append({"config": name, "batch": batch, "variant": v, "ms": times[v] * 1e3,
                            "speedup_vs_naive": times["naive"] / times[v], "auto_vs_best": times["auto"] / best,
                            "peak_mb": memory.get(v, float("nan")) / 2**20})
    rows = [[r["config"], r["variant"], f"{r['ms']:.0f}", f"{r['speedup_vs_naive']:.1f}x", f"{r['peak_mb']:.0f}"]
            for r in records]
    print(f"edge_conv2d forward+backward, {batch} x 10 heads x 21 nodes, 61 edges, {device}, "
          f"{torch.get_num_threads()} threads (peak = memory added on top of the inputs)")
    print(format_table(["config", "method", "ms", "vs naive", "peak MB"], rows))
    auto = {r["config"]: r["auto_vs_best"] for r in records}
    print("auto / best of direct and fft: " + ", ".join(f"{k} {v:.2f}" for k, v in auto.items()))
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table: method="auto" against the naive composition."""
    by = {(r["config"], r["variant"]): r for r in records}
    return [{"op": "edge_conv2d fwd+bwd", "workload": f"{name}, B={by[name, 'auto']['batch']}",
             "handgeom": f"{by[name, 'auto']['ms']:.0f} ms, {by[name, 'auto']['peak_mb']:.0f} MB",
             "baseline": f"torch naive {by[name, 'naive']['ms']:.0f} ms, {by[name, 'naive']['peak_mb']:.0f} MB",
             "speedup": by[name, "auto"]["speedup_vs_naive"]} for name, _, _ in CONFIGS]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, batch, size, kernel = sys.argv[2:6]
        print(json.dumps(child(variant, int(batch), int(size), int(kernel))))
        return
    cli(run, __doc__)


if __name__ == "__main__":
    main()
