"""Benchmark: one SiaPose training step (forward and backward of the joint loss, the optimizer
excluded), split into the preliminary estimator (its heatmap loss alone) and the head (the SIA-GCN
heads and the pointer network on detached heatmaps), and the share of the step spent in handgeom's
op: the SIA-GCN stack, every layer an ``edge_conv2d``, forward and backward at the head's shapes.

The paper preset (a six-stage CPM on 368² crops, 10 heads of 5 layers of 45x45 kernels on 46x46
heatmaps) at B=8; ``--quick``: the cpu preset at B=8.

    python benchmarks/bench_siapose.py [--quick] [--json FILE]
"""

from __future__ import annotations

import torch

from common import cli, format_table, median_seconds
from handgeom.losses import heatmap_loss
from handgeom.models import SiaPose

BATCH = 8


def _parts(net: SiaPose, images: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> dict:
    """Each measured part as a function: fwd+bwd of the joint loss, of the estimator's loss, of
    the head on detached inputs, and of the SIA-GCN stack alone."""
    with torch.no_grad():
        preliminary = net(images)["preliminary"]
    heads = net.head.gcn.weights[0].shape[0]
    shared = preliminary.detach().requires_grad_()  # the first layer's input, shared by the heads

    def backward(loss: torch.Tensor) -> None:
        net.zero_grad(set_to_none=True)
        loss.backward()

    def joint():
        out = net(images)
        backward(sum(heatmap_loss(h, targets, valid) for h in out["stages"]) + heatmap_loss(out["heatmaps"], targets, valid))

    def estimator():
        out = net.estimator((images - net.mean) / net.std)  # CPM: the stages; ResNet: (stages, features)
        backward(sum(heatmap_loss(h, targets, valid) for h in (out[0] if isinstance(out, tuple) else out)))

    def head():
        net.detach = True
        try:
            backward(heatmap_loss(net(images)["heatmaps"], targets, valid))
        finally:
            net.detach = False

    def gcn():
        out = net.head.gcn(shared)
        grads = torch.autograd.grad(out, [shared, *net.head.gcn.parameters()], torch.ones_like(out))
        assert len(grads) == 1 + 2 * len(net.head.gcn.weights) and out.shape[1] == heads

    return {"step (joint)": joint, "estimator": estimator, "head (incl. estimator forward)": head, "edge_conv2d stack": gcn}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    preset = "cpu" if quick else "paper"
    torch.manual_seed(0)
    net = SiaPose(preset).to(device).train()
    images = torch.rand(BATCH, 3, net.image_size, net.image_size, device=device)
    side = net.image_size // net.stride
    targets = torch.rand(BATCH, 21, side, side, device=device)
    valid = torch.ones(BATCH, 21, device=device)
    parts = _parts(net, images, targets, valid)
    times = {name: median_seconds(fn, repeat=1 if not quick else 3, warmup=1) for name, fn in parts.items()}
    step = times["step (joint)"]
    records = [{"preset": preset, "batch": BATCH, "part": name, "ms": t * 1e3, "share": t / step} for name, t in times.items()]
    cfg = net.config
    print(f"SiaPose {preset} training step (fwd+bwd), B={BATCH}, {net.image_size}² crops, {side}² heatmaps, "
          f"{cfg.heads} heads x {cfg.layers} layers of {cfg.kernel_size}x{cfg.kernel_size} kernels, {device}, "
          f"{torch.get_num_threads()} threads")
    print(format_table(["part", "ms", "of the step"], [[r["part"], f"{r['ms']:.0f}", f"{100 * r['share']:.0f}%"]
                                                       for r in records]))
    return records


def summary(records: list[dict]) -> list[dict]:
    """`handgeom bench`'s row: the step, and the share of it in edge_conv2d."""
    by = {r["part"]: r for r in records}
    step, ops = by["step (joint)"], by["edge_conv2d stack"]
    return [{"op": "SiaPose training step", "workload": f"{step['preset']} preset, B={step['batch']}",
             "handgeom": f"{step['ms']:.0f} ms, {100 * ops['share']:.0f}% in edge_conv2d",
             "baseline": f"estimator {by['estimator']['ms']:.0f} ms", "speedup": None}]


if __name__ == "__main__":
    cli(run, __doc__)
