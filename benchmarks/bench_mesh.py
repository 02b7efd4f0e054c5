"""Benchmark: batched mesh queries (inside test, signed distance, penetration, intersection count)
against the peer libraries that are installed (Open3D, libigl; `pip install handgeom[peers]`).

Workloads (the BVH build is counted, as a user pays it):
  (a) 512 different closed meshes (bumpy stretched spheres, 1280 faces) x 4096 points each;
  (b) one 20,480-face sphere with 1,000,000 points;
  (c) hand-hand: pairs of coarse hands, count_intersections at resolution 50 (125k points a pair);
  stress: points whose rays pass through vertices or edges, to count wrong answers.
Every peer answer is checked against handgeom's exact one: "wrong" counts inside answers that
differ, and signed distances with the other sign or a magnitude off by more than 1e-5.

    python benchmarks/bench_mesh.py [--quick] [--json FILE]
"""

from __future__ import annotations

import numpy as np
import torch

from common import cli, format_table, median_seconds
from handgeom.hand import HandModel, two_hand_preset
from handgeom.hand.kinematics import quaternion_to_matrix
from handgeom.metrics import count_intersections
from handgeom.ops import penetration_loss, points_inside_mesh, signed_distance
import references as ref


def blobs_workload(meshes: int, points: int, seed: int = 0):
    """Closed, non-self-intersecting meshes of 1280 faces: icospheres with random smooth radial
    bumps, stretched, rotated, hand-sized (metres); points in each bounding box grown by 10%."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3)
    unit, faces = torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)
    gen = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(meshes, 4, 3, generator=gen), dim=-1)
    bumps = (0.25 * torch.rand(meshes, 4, 1, generator=gen) * torch.exp(
        4 * (unit[None, None] * centres[:, :, None]).sum(-1) - 4)).sum(1)  # [meshes, V]
    stretch = 0.03 + 0.05 * torch.rand(meshes, 1, 3, generator=gen)
    q = torch.nn.functional.normalize(torch.randn(meshes, 4, generator=gen), dim=-1)
    verts = (unit[None] * (1 + bumps)[..., None] * stretch) @ quaternion_to_matrix(q).transpose(1, 2)
    lo, hi = verts.amin(1, keepdim=True), verts.amax(1, keepdim=True)
    pts = lo + (hi - lo) * (torch.rand(meshes, points, 3, generator=gen) * 1.2 - 0.1)
    return pts, verts, faces


def stress_workload(meshes: int, seed: int = 0):
    """Points whose inside-test ray (handgeom's, and the +x ray most ray casters use) passes
    through a vertex or an edge midpoint to within rounding: where non-watertight tests fail."""
    pts, verts, faces = blobs_workload(meshes, 1, seed)
    edges = verts[:, faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)].mean(2)
    targets = torch.cat([verts, edges], 1)
    gen = torch.Generator().manual_seed(seed + 1)
    lo, hi = verts.amin(1, keepdim=True), verts.amax(1, keepdim=True)
    first = torch.tensor([0.5773502691896258, 0.6285393610547089, 0.5211288128307138])
    ours = torch.where(hi - targets < targets - lo, 1.0, -1.0) * first
    back = (hi - lo).amax(-1, keepdim=True) * 0.05 * torch.rand(*targets.shape[:2], 1, generator=gen)
    half = targets.shape[1] // 2
    axis = torch.tensor([1.0, 0.0, 0.0])
    pts = torch.cat([targets[:, :half] - back[:, :half] * ours[:, :half], targets[:, half:] - back[:, half:] * axis], 1)
    return pts, verts, faces


def sphere_workload(points: int, seed: int = 0):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=5)  # 20,480 faces
    gen = torch.Generator().manual_seed(seed)
    pts = (torch.rand(1, points, 3, generator=gen) * 2.4 - 1.2)
    return pts, torch.tensor(mesh.vertices, dtype=torch.float32)[None], torch.tensor(mesh.faces)


def open3d_queries():
    try:
        import open3d as o3d
    except Exception:  # not installed, or its system libraries are missing
        return {}

    def scene(v, f):
        s = o3d.t.geometry.RaycastingScene()
        s.add_triangles(o3d.core.Tensor(v.numpy()), o3d.core.Tensor(f.numpy().astype(np.uint32)))
        return s

    def occupancy(pts, verts, faces, nsamples=1):
        return np.stack([scene(v, faces).compute_occupancy(o3d.core.Tensor(p.numpy()), nsamples=nsamples).numpy() > 0.5
                         for p, v in zip(pts, verts)])

    def distance(pts, verts, faces):
        return np.stack([scene(v, faces).compute_signed_distance(o3d.core.Tensor(p.numpy())).numpy()
                         for p, v in zip(pts, verts)])

    return {"Open3D 1 ray": ("inside", occupancy), "Open3D 3 rays": ("inside", lambda *a: occupancy(*a, nsamples=3)),
            "Open3D sdf": ("sdf", distance)}


def libigl_queries():
    try:
        import igl
    except Exception:
        return {}

    def distance(pts, verts, faces):
        f = faces.numpy().astype(np.int64)
        return np.stack([igl.signed_distance(p.numpy().astype(np.float64), v.numpy().astype(np.float64), f)[0]
                         for p, v in zip(pts, verts)])

    def winding(pts, verts, faces):
        f = faces.numpy().astype(np.int64)
        return np.stack([np.abs(igl.fast_winding_number(v.numpy().astype(np.float64), f,
                                                                   p.numpy().astype(np.float64))) > 0.5
                         for p, v in zip(pts, verts)])

    return {"libigl sdf": ("sdf", distance), "libigl fast winding": ("inside", winding)}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    repeat = 1 if quick else 3
    meshes, sphere_points = (64, 100_000) if quick else (512, 1_000_000)
    workloads = {
        f"(a) {meshes} meshes x 4096": blobs_workload(meshes, 4096),
        f"(b) 20k-face sphere x {sphere_points:,}": sphere_workload(sphere_points),
        f"stress: {meshes} meshes, rays via vertices/edges": stress_workload(meshes),
    }
    peers = {**open3d_queries(), **libigl_queries()}
    records = []
    for name, (pts, verts, faces) in workloads.items():
        pts, verts, faces = pts.to(device), verts.to(device), faces.to(device)
        n = pts.shape[0] * pts.shape[1]
        inside = points_inside_mesh(pts, verts, faces).cpu().numpy()
        sdf = signed_distance(pts, verts, faces)[0].cpu()
        ours = {
            "handgeom inside": ("inside", median_seconds(lambda: points_inside_mesh(pts, verts, faces), repeat, 1)),
            "handgeom sdf": ("sdf", median_seconds(lambda: signed_distance(pts, verts, faces), repeat, 1)),
            "handgeom penetration": ("penetration", median_seconds(lambda: penetration_loss(pts, verts, faces), repeat, 1)),
        }
        for query, (kind, seconds) in ours.items():
            records.append({"workload": name, "query": query, "kind": kind, "points_per_s": n / seconds, "wrong": 0})
        if device != "cpu":
            continue
        for query, (kind, fn) in peers.items():
            out = fn(pts, verts, faces)
            if kind == "inside":
                wrong = int((out != inside).sum())
            else:  # a wrong sign, or a distance off by more than float32 rounding
                wrong = int(((out < 0) != (sdf.numpy() < 0)).sum() + (np.abs(np.abs(out) - sdf.abs().numpy()) > 1e-5).sum())
            seconds = median_seconds(lambda: fn(pts, verts, faces), 1, 0)
            records.append({"workload": name, "query": query, "kind": kind, "points_per_s": n / seconds, "wrong": wrong})

        # the plain PyTorch formulation (brute force over all triangles, float64), on one mesh
        sub = pts[:1, :256], verts[:1], faces
        for query, kind, fn in (("torch brute-force winding", "inside", lambda p, v, f: ref.winding_number(p[0], v[0], f) > 0.5),
                                ("torch brute-force distance", "sdf", lambda p, v, f: ref.point_triangle_distance(p[0], v[0], f))):
            seconds = median_seconds(lambda fn=fn: fn(*sub), 1, 0)
            records.append({"workload": name, "query": query, "kind": kind, "points_per_s": 256 / seconds, "wrong": 0})

    pairs = 64 if quick else 1024
    right, left = HandModel("right"), HandModel("left")
    r, l = two_hand_preset("interlocked")
    gen = torch.Generator().manual_seed(1)
    jitter = lambda p: p.angles + 0.2 * torch.randn(pairs, 21, generator=gen)  # noqa: E731
    rp, lp = right.rest_pose((pairs,)), left.rest_pose((pairs,))
    rp.angles, lp.angles = jitter(r).clamp(*right.limits.float().T), jitter(l).clamp(*left.limits.float().T)
    lp.rotation, lp.translation = l.rotation.expand(pairs, 3), l.translation.expand(pairs, 3)
    va, vb = right(rp).verts.to(device), left(lp).verts.to(device)
    seconds = median_seconds(lambda: count_intersections(va, right.faces.to(device), vb, left.faces.to(device)), 1, 0)
    records.append({"workload": f"(c) {pairs} hand pairs, 50^3 grid", "query": "handgeom count_intersections", "kind": "count",
                    "points_per_s": pairs * 125_000 / seconds, "wrong": 0, "pairs_per_s": pairs / seconds})

    rows = [[r["workload"], r["query"], f"{r['points_per_s'] / 1e6:.2f}", r["wrong"]] for r in records]
    print(f"mesh queries on {device}, {torch.get_num_threads()} threads, build included "
          "(M points/s; wrong = disagreements with handgeom's exact answer)")
    print(format_table(["workload", "query", "M points/s", "wrong"], rows))
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table: each handgeom query against the fastest exact
    alternative measured on the same workload (a peer without wrong answers, or the PyTorch brute
    force; the penetration loss against signed distances)."""
    ops = {"inside": "points_inside_mesh", "sdf": "signed_distance", "penetration": "penetration_loss",
           "count": "count_intersections"}
    rows = []
    for r in (r for r in records if r["query"].startswith("handgeom")):
        kind = "sdf" if r["kind"] == "penetration" else r["kind"]
        exact = [o for o in records if o["workload"] == r["workload"] and o["kind"] == kind
                 and not o["query"].startswith("handgeom") and o["wrong"] == 0]
        best = max(exact, key=lambda o: o["points_per_s"], default=None)
        rows.append({"op": ops[r["kind"]], "workload": r["workload"], "handgeom": f"{r['points_per_s'] / 1e6:.2f} M points/s",
                     "baseline": f"{best['query']} {best['points_per_s'] / 1e6:.3g} M/s" if best else "-",
                     "speedup": r["points_per_s"] / best["points_per_s"] if best else None})
    return rows


if __name__ == "__main__":
    cli(run, __doc__)
