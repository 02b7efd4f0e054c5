"""Metrics: 2D keypoint accuracy (PCK, mPCK) and interaction metrics for hand-object and
hand-hand reconstruction, batched over pairs.

Meshes are batched as in :mod:`handgeom.ops.mesh` (``verts [B, V, 3]``, ``faces [F, 3]`` or
``[B, F, 3]``), in metres. Inside tests are exact for closed meshes (see
:func:`handgeom.ops.points_inside_mesh`).

Bad input: a pair with a non-finite vertex or joint gives NaN in the floating-point metrics and
is a ``ValueError`` in the counts (an integer cannot be NaN), as in :mod:`handgeom.ops.mesh`;
empty batches give empty results, and fractions over nothing are 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handgeom._checks import Checker, finite_items
from handgeom.losses import default_occupancy_net, mirror
from handgeom.models.occupancy import HAND_CULL_MARGIN
from handgeom.ops.mesh import points_inside_mesh, signed_distance

__all__ = ["mpjpe", "alignment_scale", "procrustes", "hand_object_gap", "penetration_depth", "intersection_volume",
           "contact_ratio", "CONTACT_THRESHOLD", "count_intersections", "intersection_grid",
           "count_intersections_occupancy", "pck", "mpck"]


def mpjpe(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-joint (or per-vertex) position error, ``[..., N, 3] -> [...]``: the mean Euclidean
    distance over the points (the ``valid [..., N]`` ones), in the inputs' units. Root-relative
    inputs give the interacting-hands papers' MPJPE / MPVPE (InterHand2.6M's protocol: the wrist
    as root)."""
    ck = Checker("mpjpe")
    ck.tensor(pred, "pred", ("...", "N", 3))
    ck.tensor(target, "target", ("...", "N", 3), like=pred)
    if valid is not None:
        ck.tensor(valid, "valid", ("...", "N"), kind=None)
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
    ck = Checker("alignment_scale")
    ck.tensor(pred_joints, "pred_joints", ("...", "J", 3))
    ck.tensor(target_joints, "target_joints", ("...", "J", 3), like=pred_joints)
    length = lambda x: (x[..., bone[1], :] - x[..., bone[0], :]).norm(dim=-1)
    return length(target_joints) / length(pred_joints).clamp_min(1e-9)


def procrustes(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``pred [..., N, 3]`` moved by the similarity transform (scale, rotation, translation) that
    best fits it to ``target`` in the least-squares sense (Umeyama, 1991): the alignment of the
    Procrustes-aligned errors (PA-MPJPE, PA-MPVPE) of the hand-pose literature."""
    ck = Checker("procrustes")
    ck.tensor(pred, "pred", ("...", "N", 3))
    ck.tensor(target, "target", ("...", "N", 3), like=pred)
    mu_p, mu_t = pred.mean(-2, keepdim=True), target.mean(-2, keepdim=True)
    p, t = pred - mu_p, target - mu_t
    u, s, vh = torch.linalg.svd(t.transpose(-1, -2) @ p)  # sum_i t_i p_i^T = U S V^T
    sign = torch.sign(torch.linalg.det(u @ vh))  # no reflection
    d = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1)
    rotation = u @ (d[..., None] * vh)
    scale = (s * d).sum(-1) / p.square().sum((-1, -2)).clamp_min(1e-30)
    return scale[..., None, None] * p @ rotation.transpose(-1, -2) + mu_t


CONTACT_THRESHOLD = 0.005  # metres: a hand is in contact with an object this close (or inside it)


def hand_object_gap(hand_verts: torch.Tensor, obj_verts: torch.Tensor, obj_faces: torch.Tensor,
                    name: str = "hand_object_gap") -> torch.Tensor:
    """The smallest signed distance from a hand vertex to the object's surface, ``[B]`` metres:
    the hand-object distance where positive, minus the penetration depth where negative (the
    deepest vertex inside has the most negative distance); +inf for a hand of no vertex, NaN for a
    pair with a non-finite vertex. One signed-distance query gives every metric below."""
    _pair(Checker(name), hand_verts, obj_verts, ("hand_verts", "obj_verts"))
    sdf, _, _ = signed_distance(hand_verts.detach(), obj_verts.detach(), obj_faces)
    return F.pad(sdf, (0, 1), value=math.inf).amin(dim=1)  # NaN propagates


def penetration_depth(hand_verts: torch.Tensor, obj_verts: torch.Tensor, obj_faces: torch.Tensor) -> torch.Tensor:
    """Maximum depth of the hand's vertices inside the object, 0 if none is inside: ``[B]``.

    The hand-object "penetration depth" of Hasson et al. (CVPR 2019, "Learning joint
    reconstruction of hands and manipulated objects"): the largest distance to the object's
    surface among hand vertices that lie inside the object. 0 for no hand vertex; NaN for a pair
    with a non-finite vertex.
    """
    return (-hand_object_gap(hand_verts, obj_verts, obj_faces, "penetration_depth")).clamp_min(0)


def contact_ratio(hand_verts: torch.Tensor, obj_verts: torch.Tensor, obj_faces: torch.Tensor,
                  threshold: float = CONTACT_THRESHOLD) -> float:
    """Fraction of samples in contact: some hand vertex lies within ``threshold`` metres of the
    object's surface, or inside it (signed distance below ``threshold``), as the hand-object
    literature reports it (e.g. Hasson et al. 2019; thresholds of a few millimetres). 0 for an
    empty batch; NaN when a pair has a non-finite vertex."""
    threshold = Checker("contact_ratio").real(threshold, "threshold")
    gap = hand_object_gap(hand_verts, obj_verts, obj_faces, "contact_ratio")
    contact = torch.where(gap.isnan(), math.nan, (gap < threshold).to(gap.dtype))
    return contact.sum().item() / max(len(contact), 1)


def _pair(ck: Checker, verts_a: torch.Tensor, verts_b: torch.Tensor, names: tuple[str, str] = ("verts_a", "verts_b")):
    """Checks two batches of meshes (or joints) of one pair each: ``[B, *, 3]``, one dtype."""
    ck.tensor(verts_a, names[0], ("B", None, 3))
    ck.tensor(verts_b, names[1], ("B", None, 3), like=verts_a)


def _boxes(verts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each mesh's bounding box (empty: lo = +inf, hi = -inf)."""
    padded = lambda value: F.pad(verts, (0, 0, 0, 1), value=value)  # one vertex more: amin/amax of none
    return padded(math.inf).amin(dim=1), padded(-math.inf).amax(dim=1)


MAX_CELLS = 1 << 30  # per pair: 12 GB of float32 points


def _cell_centres(ck: Checker, lo: torch.Tensor, hi: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Centres of a ``counts[b]``-cell grid over each box, NaN-padded to the largest grid:
    ``[B, max prod(counts), 3]`` (NaN points are outside every mesh and cost one box test)."""
    cells = counts.double().prod(dim=1)
    if cells.numel() and cells.max() > MAX_CELLS:
        ck.fail(f"the grid of pair {int(cells.argmax())} would have {cells.max():.3g} cells, more than "
                f"{MAX_CELLS}: a coarser grid, or inputs in metres?")
    total = int(cells.max()) if cells.numel() else 0
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
    uses about 50, a 125k-point grid). Default: ``resolution=50``. A pair with a non-finite vertex
    gives NaN.
    """
    ck = Checker("intersection_volume")
    _pair(ck, verts_a, verts_b)
    if pitch is not None and resolution is not None:
        ck.fail("give pitch or resolution, not both")
    if pitch is not None:
        pitch = ck.real(pitch, "pitch", positive=True)
    elif resolution is not None:
        resolution = ck.integer(resolution, "resolution", minimum=1)
    else:
        resolution = 50
    finite = finite_items(verts_a) & finite_items(verts_b)
    verts_a, verts_b = (torch.where(finite[:, None, None], v, 0) for v in (verts_a, verts_b))  # points: no cells
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
    inside = _inside_both(_cell_centres(ck, lo, hi, counts), verts_a, faces_a, verts_b, faces_b)
    return torch.where(finite, inside.sum(dim=1).to(cell.dtype) * cell, math.nan)


def _grid(ck: Checker, verts_a: torch.Tensor, verts_b: torch.Tensor, resolution: int) -> torch.Tensor:
    resolution = ck.integer(resolution, "resolution", minimum=1)
    (lo_a, hi_a), (lo_b, hi_b) = _boxes(verts_a), _boxes(verts_b)
    lo = torch.minimum(lo_a, lo_b)
    return _cell_centres(ck, lo, torch.maximum(hi_a, hi_b), torch.full_like(lo, resolution, dtype=torch.long))


def intersection_grid(verts_a: torch.Tensor, verts_b: torch.Tensor, resolution: int = 50) -> torch.Tensor:
    """The points :func:`count_intersections` tests: the centres of a ``resolution^3`` grid over
    each pair's joint bounding box, ``[B, resolution^3, 3]``."""
    ck = Checker("intersection_grid")
    _pair(ck, verts_a, verts_b)
    return _grid(ck, verts_a, verts_b, resolution)


def count_intersections(verts_a: torch.Tensor, faces_a: torch.Tensor, verts_b: torch.Tensor, faces_b: torch.Tensor,
                        resolution: int = 50) -> torch.Tensor:
    """Number of grid points inside both hands, ``[B]`` int64: the interacting-hands evaluation
    count ("Two Hands Are Better Than One"): a ``resolution^3`` grid of cell centres (125k points
    at 50) over the bounding box of the pair. A pair with a non-finite vertex is a ``ValueError``."""
    ck = Checker("count_intersections")
    _pair(ck, verts_a, verts_b)
    ck.finite(finite_items(verts_a), "verts_a", "pair")
    ck.finite(finite_items(verts_b), "verts_b", "pair")
    points = _grid(ck, verts_a, verts_b, resolution)
    (lo_a, hi_a), (lo_b, hi_b) = _boxes(verts_a), _boxes(verts_b)
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
    :class:`handgeom.models.HandOccupancyNet`). ``net`` defaults to the shipped network. A pair
    with a non-finite joint is a ``ValueError``."""
    ck = Checker("count_intersections_occupancy")
    ck.tensor(joints_left, "joints_left", ("B", 21, 3))
    ck.tensor(joints_right, "joints_right", ("B", 21, 3), like=joints_left)
    resolution = ck.integer(resolution, "resolution", minimum=1)
    margin = ck.real(margin, "margin", minimum=0)
    ck.finite(finite_items(joints_left), "joints_left", "pair")
    ck.finite(finite_items(joints_right), "joints_right", "pair")
    net = default_occupancy_net(str(joints_left.device)) if net is None else net
    both = torch.cat([joints_left, joints_right], 1)
    lo, hi = both.amin(1) - margin, both.amax(1) + margin
    points = _cell_centres(ck, lo, hi, torch.full_like(lo, resolution, dtype=torch.long))
    with torch.no_grad():
        inside_right = net(points, joints_right, cull_margin=margin) > 0
        inside_left = net(mirror(points), mirror(joints_left), cull_margin=margin) > 0
    return (inside_right & inside_left).sum(1)


def pck(pred: torch.Tensor, target: torch.Tensor, crop_size: float, delta: float,
        visible: torch.Tensor | None = None) -> float:
    """Percentage of correct keypoints: the fraction of (visible) keypoints ``[..., K, 2]`` within
    ``delta * crop_size`` pixels of the target, the threshold normalized by the side of the square
    crop as in SIA-GCN's evaluation. ``crop_size > 0``, ``delta >= 0``, ``visible [..., K]`` bool;
    0 when there is no (visible) keypoint; a NaN prediction is not correct."""
    ck = Checker("pck")
    ck.tensor(pred, "pred", ("...", "K", 2))
    ck.tensor(target, "target", ("...", "K", 2), like=pred)
    crop_size = ck.real(crop_size, "crop_size", positive=True)
    delta = ck.real(delta, "delta", minimum=0)
    correct = (pred - target).norm(dim=-1) <= delta * crop_size
    if visible is not None:
        ck.tensor(visible, "visible", ("...", "K"), kind="bool")
        return (correct & visible).sum().item() / max(int(visible.sum()), 1)
    return correct.sum().item() / max(correct.numel(), 1)


def mpck(pred: torch.Tensor, target: torch.Tensor, crop_size: float,
         deltas: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10),
         visible: torch.Tensor | None = None) -> float:
    """Mean PCK over thresholds ``deltas`` (fractions of the crop size, at least one; pass the set
    a paper reports to reproduce its numbers)."""
    deltas = tuple(deltas)
    if not deltas:
        Checker("mpck").fail("deltas must hold at least one threshold, got ()")
    return sum(pck(pred, target, crop_size, d, visible) for d in deltas) / len(deltas)
