"""Metrics: 2D keypoint accuracy (PCK, mPCK) and interaction metrics for hand-object and
hand-hand reconstruction, batched over pairs.

Meshes are batched as in :mod:`handgeom.ops.mesh` (``verts [B, V, 3]``, ``faces [F, 3]`` or
``[B, F, 3]``), in metres. Inside tests are exact for closed meshes (see
:func:`handgeom.ops.points_inside_mesh`).
"""

from __future__ import annotations

import math

import torch

from handgeom.losses import default_occupancy_net, mirror
from handgeom.models.occupancy import HAND_CULL_MARGIN
from handgeom.ops.mesh import points_inside_mesh, signed_distance

__all__ = ["mpjpe", "alignment_scale", "penetration_depth", "intersection_volume", "contact_ratio", "count_intersections",
           "count_intersections_occupancy", "pck", "mpck"]


def mpjpe(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-joint (or per-vertex) position error, ``[..., N, 3] -> [...]``: the mean Euclidean
    distance over the points (the ``valid [..., N]`` ones), in the inputs' units. Root-relative
    inputs give the interacting-hands papers' MPJPE / MPVPE (InterHand2.6M's protocol: the wrist
    as root)."""
    error = (pred - target).norm(dim=-1)
    if valid is None:
        return error.mean(-1)
    valid = valid.to(error.dtype)
    return (error * valid).sum(-1) / valid.sum(-1).clamp_min(1)


def alignment_scale(pred_joints: torch.Tensor, target_joints: torch.Tensor, bone: tuple[int, int] = (0, 9)) -> torch.Tensor:
    """``[...]``: the factor that gives the predicted hand's ``bone`` (default the wrist to middle
    MCP, joints 0 and 9 in handgeom's order) the target's length. Root-relative predictions times
    it are DIR's and IntagHand's scale-aligned evaluation on InterHand2.6M (joints and vertices
    scaled alike)."""
    length = lambda x: (x[..., bone[1], :] - x[..., bone[0], :]).norm(dim=-1)
    return length(target_joints) / length(pred_joints).clamp_min(1e-9)


def penetration_depth(hand_verts: torch.Tensor, obj_verts: torch.Tensor, obj_faces: torch.Tensor) -> torch.Tensor:
    """Maximum depth of the hand's vertices inside the object, 0 if none is inside: ``[B]``.

    The hand-object "penetration depth" of Hasson et al. (CVPR 2019, "Learning joint
    reconstruction of hands and manipulated objects"): the largest distance to the object's
    surface among hand vertices that lie inside the object.
    """
    sdf, _, _ = signed_distance(hand_verts.detach(), obj_verts.detach(), obj_faces)
    return (-sdf).clamp_min(0).amax(dim=1)


def contact_ratio(hand_verts: torch.Tensor, obj_verts: torch.Tensor, obj_faces: torch.Tensor,
                  threshold: float = 0.005) -> float:
    """Fraction of samples in contact: some hand vertex lies within ``threshold`` metres of the
    object's surface, or inside it (signed distance below ``threshold``), as the hand-object
    literature reports it (e.g. Hasson et al. 2019; thresholds of a few millimetres)."""
    sdf, _, _ = signed_distance(hand_verts.detach(), obj_verts.detach(), obj_faces)
    return (sdf.amin(dim=1) < threshold).float().mean().item()


def _boxes(verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return verts.amin(dim=1), verts.amax(dim=1)


def _cell_centres(lo: torch.Tensor, hi: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Centres of a ``counts[b]``-cell grid over each box, NaN-padded to the largest grid:
    ``[B, max prod(counts), 3]`` (NaN points are outside every mesh and cost one box test)."""
    total = int(counts.prod(dim=1).max().item()) if counts.numel() else 0
    points = torch.full((lo.shape[0], total, 3), float("nan"), dtype=lo.dtype, device=lo.device)
    for b in range(lo.shape[0]):
        axes = [lo[b, k] + (hi[b, k] - lo[b, k]) * (torch.arange(int(counts[b, k]), dtype=lo.dtype, device=lo.device)
                                                  + 0.5) / counts[b, k] for k in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        points[b, :grid.shape[0]] = grid
    return points


def _inside_both(points, verts_a, faces_a, verts_b, faces_b) -> torch.Tensor:
    inside_a = points_inside_mesh(points, verts_a.detach(), faces_a)
    candidates = torch.where(inside_a.unsqueeze(-1), points, torch.full_like(points, float("nan")))
    return points_inside_mesh(candidates, verts_b.detach(), faces_b)


def intersection_volume(verts_a: torch.Tensor, faces_a: torch.Tensor, verts_b: torch.Tensor, faces_b: torch.Tensor,
                        pitch: float | None = None, resolution: int | None = None) -> torch.Tensor:
    """Volume inside both meshes, ``[B]`` in cubic metres, by counting the centres of a regular
    grid over the overlap of the two bounding boxes that lie inside both, times the cell volume.

    Give ``pitch`` (cell size in metres; hand-object papers use 0.005 (Hasson et al. 2019) or
    0.001) or ``resolution`` (cells per axis over the overlap; the interacting-hands evaluation
    uses about 50, a 125k-point grid). Default: ``resolution=50``.
    """
    if pitch is not None and resolution is not None:
        raise ValueError("intersection_volume: give pitch or resolution, not both")
    if pitch is not None and not pitch > 0:
        raise ValueError(f"intersection_volume: pitch must be positive, got {pitch}")
    resolution = 50 if pitch is None and resolution is None else resolution
    if resolution is not None and resolution < 1:
        raise ValueError(f"intersection_volume: resolution must be positive, got {resolution}")
    (lo_a, hi_a), (lo_b, hi_b) = _boxes(verts_a), _boxes(verts_b)
    lo, hi = torch.maximum(lo_a, lo_b), torch.minimum(hi_a, hi_b)
    extent = (hi - lo).clamp_min(0)
    if pitch is not None:
        counts = torch.ceil(extent / pitch).long()
        hi = lo + counts * pitch  # whole cells of the given pitch
        cell = torch.full_like(extent[:, 0], pitch ** 3)
    else:
        counts = torch.full_like(extent, resolution, dtype=torch.long)
        cell = extent.prod(dim=1) / resolution ** 3
    counts = torch.where((extent > 0).all(dim=1, keepdim=True), counts, torch.zeros_like(counts))
    inside = _inside_both(_cell_centres(lo, hi, counts), verts_a, faces_a, verts_b, faces_b)
    return inside.sum(dim=1).to(cell.dtype) * cell


def count_intersections(verts_a: torch.Tensor, faces_a: torch.Tensor, verts_b: torch.Tensor, faces_b: torch.Tensor,
                        resolution: int = 50) -> torch.Tensor:
    """Number of grid points inside both hands, ``[B]`` int64: the interacting-hands evaluation
    count ("Two Hands Are Better Than One"): a ``resolution^3`` grid of cell centres (125k points
    at 50) over the bounding box of the pair."""
    if resolution < 1:
        raise ValueError(f"count_intersections: resolution must be positive, got {resolution}")
    (lo_a, hi_a), (lo_b, hi_b) = _boxes(verts_a), _boxes(verts_b)
    lo, hi = torch.minimum(lo_a, lo_b), torch.maximum(hi_a, hi_b)
    counts = torch.full_like(lo, resolution, dtype=torch.long)
    points = _cell_centres(lo, hi, counts)
    # only centres within both boxes can be inside both meshes: the rest become NaN (free)
    overlap = ((points >= torch.maximum(lo_a, lo_b)[:, None]) & (points <= torch.minimum(hi_a, hi_b)[:, None])).all(-1)
    points = torch.where(overlap.unsqueeze(-1), points, torch.full_like(points, math.nan))
    return _inside_both(points, verts_a, faces_a, verts_b, faces_b).sum(dim=1)


def count_intersections_occupancy(joints_left: torch.Tensor, joints_right: torch.Tensor, resolution: int = 50,
                                  net=None, margin: float = HAND_CULL_MARGIN) -> torch.Tensor:
    """The occupancy-network version of :func:`count_intersections` for hands given by joints only
    (``[B, 21, 3]`` each): grid points where both hands' occupancy probabilities exceed 0.5, on a
    ``resolution^3`` grid of cell centres over both hands' joint bounding box grown by ``margin``
    metres, ``[B]`` int64. Points farther than ``margin`` from a hand's joint box are culled as
    outside it (the default margin loses no point of the hand model's volume; see
    :class:`handgeom.models.HandOccupancyNet`). ``net`` defaults to the shipped network."""
    if resolution < 1:
        raise ValueError(f"count_intersections_occupancy: resolution must be positive, got {resolution}")
    net = default_occupancy_net(str(joints_left.device)) if net is None else net
    both = torch.cat([joints_left, joints_right], 1)
    lo, hi = both.amin(1) - margin, both.amax(1) + margin
    points = _cell_centres(lo, hi, torch.full_like(lo, resolution, dtype=torch.long))
    with torch.no_grad():
        inside_right = net(points, joints_right, cull_margin=margin) > 0
        inside_left = net(mirror(points), mirror(joints_left), cull_margin=margin) > 0
    return (inside_right & inside_left).sum(1)


def pck(pred: torch.Tensor, target: torch.Tensor, crop_size: float, delta: float,
        visible: torch.Tensor | None = None) -> float:
    """Percentage of correct keypoints: the fraction of (visible) keypoints ``[..., K, 2]`` within
    ``delta * crop_size`` pixels of the target, the threshold normalized by the side of the square
    crop as in SIA-GCN's evaluation."""
    correct = (pred - target).norm(dim=-1) <= delta * crop_size
    if visible is not None:
        return (correct & visible).sum().item() / max(int(visible.sum()), 1)
    return correct.float().mean().item()


def mpck(pred: torch.Tensor, target: torch.Tensor, crop_size: float,
         deltas: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10),
         visible: torch.Tensor | None = None) -> float:
    """Mean PCK over thresholds ``deltas`` (fractions of the crop size; pass the set a paper
    reports to reproduce its numbers)."""
    return sum(pck(pred, target, crop_size, d, visible) for d in deltas) / len(deltas)
