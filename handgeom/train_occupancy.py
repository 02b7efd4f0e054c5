"""Trains HandOccupancyNet on handgeom's hand model and writes the weights shipped with the package.

    python -m handgeom.train_occupancy [--steps 10000] [--out handgeom/weights/hand_occupancy.pt]

Data are generated on the fly: random poses from the hand model's sampler (uniform angles within
the limits, a uniformly random global rotation, bone lengths ±10%), the fine hand mesh (its
12-sided finger tubes are closer to the smooth hand than the coarse mesh's 8-sided ones), and
points labelled by the exact ray-casting inside test (:func:`handgeom.ops.points_inside_mesh`):
7/16 uniform in the mesh's bounding box grown by 1 cm, 1/16 uniform in a 40 cm cube around it,
half near the surface (area-weighted surface samples displaced by Gaussian noise of 1 mm, 3 mm or
1 cm). Adam with a cosine learning-rate schedule; batch norm statistics are recomputed at the end
(cumulative average over fresh batches), then IoU is measured on held-out poses on a 50^3 grid
over each hand. The defaults wrote the shipped weights (12 minutes on 2 threads).
"""

from __future__ import annotations

import argparse
import datetime
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from handgeom.hand import HandModel
from handgeom.models.occupancy import PRETRAINED, HandOccupancyNet
from handgeom.ops.mesh import points_inside_mesh

FAR_SIDE = 0.4  # metres: the far-field samples' cube, about two hand lengths


def hand_samples(model: HandModel, hands: int, generator: torch.Generator):
    """``(joints [B, 21, 3], verts [B, V, 3])`` of random right hands placed around the origin."""
    params = model.sample_poses(hands, generator, global_rotation=True, length_jitter=0.1)
    params.translation = 0.1 * torch.randn(hands, 3, generator=generator)
    out = model(params)
    return out.joints, out.verts


def grown_box(verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi)`` ``[B, 1, 3]``: each mesh's bounding box grown by 1 cm."""
    return verts.amin(1, keepdim=True) - 0.01, verts.amax(1, keepdim=True) + 0.01


def training_points(verts: torch.Tensor, faces: torch.Tensor, count: int, generator: torch.Generator):
    """``(points [B, count, 3], inside [B, count])``: 7/16 uniform in the grown bounding box, 1/16
    uniform in a cube of side ``FAR_SIDE`` around it (so the network also says "outside" far from
    the hand, where the other hand's points may lie), half near the surface."""
    B = verts.shape[0]
    far, near = count // 16, count - count // 2
    uniform = count - near - far
    lo, hi = grown_box(verts)
    box = lo + torch.rand(B, uniform, 3, generator=generator) * (hi - lo)
    centre = (lo + hi) / 2
    around = centre + FAR_SIDE * (torch.rand(B, far, 3, generator=generator) - 0.5)
    tri = verts[:, faces]  # [B, F, 3, 3]
    area = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]).norm(dim=-1)
    face = torch.multinomial(area, near, replacement=True, generator=generator)  # [B, near]
    r = torch.rand(B, near, 2, generator=generator)
    flip = r.sum(-1, keepdim=True) > 1
    r = torch.where(flip, 1 - r, r)  # uniform on the triangle
    corners = tri.gather(1, face[..., None, None].expand(-1, -1, 3, 3))
    surface = corners[:, :, 0] + r[..., :1] * (corners[:, :, 1] - corners[:, :, 0]) + r[..., 1:] * (corners[:, :, 2] - corners[:, :, 0])
    sigma = torch.tensor([0.001, 0.003, 0.01])[torch.randint(0, 3, (B, near, 1), generator=generator)]
    surface = surface + sigma * torch.randn(B, near, 3, generator=generator)
    points = torch.cat([box, around, surface], 1)
    return points, points_inside_mesh(points, verts, faces)


def grid_iou(net: HandOccupancyNet, model: HandModel, hands: int, resolution: int = 50, seed: int = 12345,
             batch: int = 4, progress: bool = True) -> float:
    """Mean IoU over ``hands`` held-out random poses, each on a ``resolution``^3 grid over the hand's
    bounding box grown by 1 cm (ground truth: the exact inside test on the hand mesh)."""
    generator = torch.Generator().manual_seed(seed)
    steps = torch.linspace(0, 1, resolution)
    unit = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).view(1, -1, 3)
    ious = []
    chunks = range(0, hands, batch)
    loop = tqdm(chunks, desc="IoU", disable=not progress)
    with torch.no_grad():
        for start in loop:
            joints, verts = hand_samples(model, min(batch, hands - start), generator)
            lo, hi = grown_box(verts)
            grid = lo + unit * (hi - lo)
            truth = points_inside_mesh(grid, verts, model.faces)
            pred = net(grid, joints) > 0
            ious += ((pred & truth).sum(1) / (pred | truth).sum(1).clamp_min(1)).tolist()
            loop.set_postfix(iou=f"{sum(ious) / len(ious):.4f}", refresh=False)
    return sum(ious) / len(ious)


def train(steps: int, hands: int, points: int, lr: float, seed: int, width: int, layers: int) -> tuple[HandOccupancyNet, dict]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = HandModel("right", "fine")
    net = HandOccupancyNet(width=width, layers=layers).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.perf_counter()
    loop = tqdm(range(steps), desc="train")
    for _ in loop:
        with torch.no_grad():
            joints, verts = hand_samples(model, hands, generator)
            x, inside = training_points(verts, model.faces, points, generator)
        logits = net(x, joints)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, inside.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        pred = logits.detach() > 0
        loop.set_postfix(loss=f"{loss.item():.4g}", iou=f"{((pred & inside).sum() / (pred | inside).sum()).item():.4f}",
                         refresh=False)
    # Batch-norm statistics for eval mode: a cumulative average over fresh batches.
    for norm in net.decoder.norms:
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        for _ in range(50):
            joints, verts = hand_samples(model, hands, generator)
            net(training_points(verts, model.faces, points, generator)[0], joints)
    seconds = time.perf_counter() - start
    record = dict(steps=steps, hands_per_step=hands, points_per_hand=points, lr=lr, seed=seed, width=width,
                  layers=layers, seconds=round(seconds, 1), threads=torch.get_num_threads(),
                  torch=str(torch.__version__), date=datetime.date.today().isoformat())
    return net.eval().requires_grad_(False), record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m handgeom.train_occupancy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--hands", type=int, default=32, help="hands per step")
    parser.add_argument("--points", type=int, default=1024, help="points per hand")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-hands", type=int, default=1000, help="held-out poses for the IoU")
    parser.add_argument("--out", type=Path, default=PRETRAINED)
    args = parser.parse_args(argv)
    net, record = train(args.steps, args.hands, args.points, args.lr, args.seed, args.width, args.layers)
    record["iou"] = round(grid_iou(net, HandModel("right", "fine"), args.eval_hands), 4)
    record["eval_hands"] = args.eval_hands
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.float32) for k, v in net.state_dict().items() if v.is_floating_point()}
    state.update({k: v for k, v in net.state_dict().items() if not v.is_floating_point()})
    torch.save(dict(config=net.config, weights=state, record=record), args.out)
    print(f"wrote {args.out}: {record}")


if __name__ == "__main__":
    main()
