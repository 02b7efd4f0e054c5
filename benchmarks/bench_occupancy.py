"""Benchmark: the fused occupancy query (conditioned_mlp) vs the same decoder as torch modules in
eval mode, forward + backward to the points' features and the per-hand modulation, at
HandOccupancyNet's size (43 features, width 64, 4 modulated layers); and the same for the
intersection penalty per hand, sum_n sigmoid(logit_n)^2 (conditioned_mlp_penalty: value and
gradients in one pass).

Configs: 256 hands x 121 points (the intersection loss during training, "dense" points) and
64 hands x 8192 points (evaluation). Peak memory of each variant is measured in a fresh child
process. Then the shipped network end to end on 64 hands x 8192 points in a 30 cm box, with and
without culling (cull_margin=3 cm), and how many points culling changed.

    python benchmarks/bench_occupancy.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import sys

import torch

from common import added_peak_rss_bytes, cli, format_table, interleaved_median_seconds, measure_in_child, median_seconds
from handgeom.hand import HandModel
from handgeom.models import HandOccupancyNet
from handgeom.models.occupancy import ConditionedDecoder

# (name, hands, points, timed runs): the small case gets more runs, a few ms each are noisy.
CONFIGS = [("training loss", 256, 121, 31), ("evaluation", 64, 8192, 5)]
FEATURES, WIDTH, LAYERS = 43, 64, 4


def make_inputs(hands: int, points: int, device: str = "cpu"):
    """A decoder with random weights and batch-norm statistics, and its inputs."""
    torch.manual_seed(0)
    decoder = ConditionedDecoder(FEATURES, WIDTH, LAYERS)
    for norm in decoder.norms:
        norm.running_mean.normal_(0, 0.3)
        norm.running_var.uniform_(0.5, 2)
    decoder = decoder.eval().requires_grad_(False).to(device)
    x = torch.randn(hands, points, FEATURES, device=device, requires_grad=True)
    gamma = (1 + 0.3 * torch.randn(hands, LAYERS, WIDTH, device=device)).requires_grad_()
    beta = (0.3 * torch.randn(hands, LAYERS, WIDTH, device=device)).requires_grad_()
    return decoder, x, gamma, beta


# The logits (conditioned_mlp) and the intersection penalty sum_n sigmoid(logit_n)^2 per hand
# (conditioned_mlp_penalty), each fused and as torch modules.
VARIANTS = ("fused", "torch", "fused penalty", "torch penalty")


def forward_backward(variant: str, decoder, x, gamma, beta):
    if variant == "fused":
        out = decoder(x, gamma, beta)
    elif variant == "torch":
        out = decoder.forward_torch(x, gamma, beta)
    elif variant == "fused penalty":
        out = decoder.penalty(x, gamma, beta, x.new_ones(x.shape[:2]))
    else:
        out = decoder.penalty_torch(x, gamma, beta, x.new_ones(x.shape[:2]))
    return torch.autograd.grad(out, (x, gamma, beta), torch.ones_like(out))


def child(variant: str, hands: int, points: int) -> dict:
    forward_backward(variant, *make_inputs(2, 64))  # one-time setup
    inputs = make_inputs(hands, points)
    return {"peak_bytes": added_peak_rss_bytes(lambda: forward_backward(variant, *inputs))}


def culling(device: str, quick: bool) -> dict:
    net = HandOccupancyNet.pretrained(device)
    model = HandModel("right").to(device)
    hands, points = (16, 2048) if quick else (64, 8192)
    gen = torch.Generator().manual_seed(1)
    joints = model(model.sample_poses(hands, gen, global_rotation=True, length_jitter=0.1, device=device)).joints
    x = (joints[:, 9:10] + 0.3 * (torch.rand(hands, points, 3, generator=gen) - 0.5).to(device))
    with torch.no_grad():
        full, culled = net(x, joints), net(x, joints, cull_margin=0.03)
        t_full = median_seconds(lambda: net(x, joints), repeat=1 if quick else 3, warmup=1)
        t_cull = median_seconds(lambda: net(x, joints, cull_margin=0.03), repeat=1 if quick else 3, warmup=1)
    return {"hands": hands, "points": points, "ms_full": t_full * 1e3, "ms_culled": t_cull * 1e3,
            "speedup": t_full / t_cull, "changed": int(((full > 0) != (culled > 0)).sum()),
            "culled_fraction": float((culled == -20.0).float().mean())}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    records = []
    for name, hands, points, repeat in CONFIGS:
        if quick:
            hands, points, repeat = hands // 4, points // 4, 1
        inputs = make_inputs(hands, points, device)
        times = interleaved_median_seconds({v: lambda v=v: forward_backward(v, *inputs) for v in VARIANTS},
                                           repeat=repeat, warmup=1 if quick else 3)
        memory = {v: measure_in_child(__file__, v, str(hands), str(points))["peak_bytes"]
                  for v in times} if device == "cpu" else {}
        for v, t in times.items():
            baseline = times["torch penalty" if v.endswith("penalty") else "torch"]
            records.append({"config": name, "hands": hands, "points": points, "variant": v, "ms": t * 1e3,
                            "speedup_vs_torch": baseline / t, "peak_mb": memory.get(v, float("nan")) / 2**20})
    print(f"conditioned_mlp forward+backward (features, scale, shift), D={FEATURES} H={WIDTH} L={LAYERS}, "
          f"{device}, {torch.get_num_threads()} threads (peak = memory added on top of the inputs)")
    rows = [[f"{r['config']} {r['hands']}x{r['points']}", r["variant"], f"{r['ms']:.1f}",
             f"{r['speedup_vs_torch']:.1f}x", f"{r['peak_mb']:.0f}"] for r in records]
    print(format_table(["config", "variant", "ms", "vs torch", "peak MB"], rows))
    cull = culling(device, quick)
    print(f"HandOccupancyNet forward, {cull['hands']} hands x {cull['points']} points in a 30 cm box: "
          f"{cull['ms_full']:.0f} ms, with cull_margin=3 cm {cull['ms_culled']:.0f} ms ({cull['speedup']:.1f}x, "
          f"{100 * cull['culled_fraction']:.0f}% culled, {cull['changed']} points changed)")
    records.append({"config": "culling", **cull})
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table."""
    by = {(r["config"], r.get("variant")): r for r in records}
    rows = [{"op": op, "workload": f"{name}, {by[name, fused]['hands']}x{by[name, fused]['points']}",
             "handgeom": f"{by[name, fused]['ms']:.1f} ms, {by[name, fused]['peak_mb']:.0f} MB",
             "baseline": f"{label} {by[name, torch_]['ms']:.1f} ms, {by[name, torch_]['peak_mb']:.0f} MB",
             "speedup": by[name, fused]["speedup_vs_torch"]}
            for op, fused, torch_, label in (("conditioned_mlp fwd+bwd", "fused", "torch", "torch modules"),
                                             ("conditioned_mlp_penalty fwd+bwd", "fused penalty", "torch penalty",
                                              "torch modules + penalty"))
            for name, *_ in CONFIGS]
    cull = by["culling", None]
    rows.append({"op": "HandOccupancyNet culling (3 cm)", "workload": f"{cull['hands']}x{cull['points']} in a 30 cm box",
                 "handgeom": f"{cull['ms_culled']:.0f} ms, {cull['changed']} changed", "baseline": f"no culling {cull['ms_full']:.0f} ms",
                 "speedup": cull["speedup"]})
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, hands, points = sys.argv[2:5]
        print(json.dumps(child(variant, int(hands), int(points))))
        return
    cli(run, __doc__)


if __name__ == "__main__":
    main()
