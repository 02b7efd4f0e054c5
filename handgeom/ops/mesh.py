"""Batched triangle-mesh queries: inside test, ray casting, signed distance, penetration.

Meshes are batched: ``verts [B, V, 3]`` (float32/float64) with ``faces`` shared ``[F, 3]`` or per
mesh ``[B, F, 3]`` (int64 or int32). Each query builds a BVH per mesh (balanced, by median splits,
built in parallel over meshes and tree nodes) unless given a :class:`MeshBVH`, which a caller querying
the same meshes repeatedly builds once and refits when the vertices move.

Scale: each mesh is queried scaled by a power of two that brings its largest coordinate into
[0.5, 1) (exact in floating point, undone on the results), so meshes of any size and position give
the results they give at unit scale: no product inside the predicates can overflow or underflow.
What remains bounded is the distance of a query point from the mesh, by the square that must
not overflow: up to 1e18 times the mesh's largest coordinate in float32, 1e150 in float64; farther
points (outside, as every point beyond a mesh's bounding box) get the distance +inf.

Non-finite meshes: a mesh with a NaN or infinite vertex has no geometry, and no result about it
may look plausible. Every floating-point output about it is NaN (distances, closest points,
penetration, ray ``t`` and barycentric weights) and its face indices are -1, so that the NaN
reaches the loss (its gradients are 0, as a NaN point's); :func:`points_inside_mesh`, whose bool
output cannot be NaN, raises ``ValueError`` naming ``verts`` and the mesh.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from handgeom._checks import Checker, finite_items

__all__ = ["MeshBVH", "points_inside_mesh", "ray_mesh_intersect", "signed_distance", "penetration_loss", "surface_points"]


class MeshBVH:
    """A bounding volume hierarchy over each mesh of a batch.

    Args:
        verts: ``[B, V, 3]`` float32/float64 (not differentiated through the tree). Non-finite
            vertices are allowed: such a mesh (``finite[b]`` false) is stored as a point at the
            origin, and the queries answer NaN for it (see the module docstring).
        faces: ``[F, 3]`` shared or ``[B, F, 3]``, int64/int32, entries in ``[0, V)``.

    The tree orders each mesh's faces by top-down median splits along the widest axis of their
    centroids, halving down to leaves of at most 4 faces; :meth:`refit` recomputes the boxes for
    moved vertices keeping that order (cheaper than a rebuild, and exact: only traversal speed
    depends on the order). It stores each mesh times ``scale[b]`` (a power of two; see the module
    docstring).

    A query given ``bvh=`` answers for the BVH's meshes: its ``verts`` must hold the vertices the
    BVH was built from or last refit with (compared value by value, NaN equal to NaN; not under
    torch.compile, which traces no data-dependent check), or be None (no gradient then); other
    vertices are a ``ValueError``. Its ``faces`` are not read.
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor):
        self.faces = faces
        self._fit(Checker("MeshBVH"), verts, None)
        self.verts = self.verts.clone()  # what the queries compare their verts with

    def refit(self, verts: torch.Tensor) -> "MeshBVH":
        """The same meshes with new vertex positions (same topology); returns self."""
        self._fit(Checker("MeshBVH.refit"), verts, self.order)
        self.verts = self.verts.clone()
        return self

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.order, self.tris, self.boxes

    @property
    def poison(self) -> torch.Tensor:
        """``[B]``: 0 for a finite mesh, NaN for a mesh with a non-finite vertex (added to results)."""
        return torch.zeros_like(self.scale).masked_fill(~self.finite, math.nan)

    def __getitem__(self, index: torch.Tensor | list[int]) -> "MeshBVH":
        """The BVHs of the batch's meshes ``index`` (batch indices, in that order): the same trees
        as built for those meshes alone, without building them again."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.scale.device)
        mesh = MeshBVH.__new__(MeshBVH)
        mesh.faces = self.faces if self.faces.dim() == 2 else self.faces[index]
        for name in ("order", "tris", "boxes", "verts", "finite", "scale"):
            setattr(mesh, name, getattr(self, name)[index])
        return mesh

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """Points ``[B, N, 3]`` in the frame of the stored (scaled) meshes."""
        return x * self.scale[:, None, None]

    def _fit(self, ck: Checker, verts: torch.Tensor, order: torch.Tensor | None) -> None:
        verts = ck.tensor(verts, "verts", ("B", "V", 3)).detach()
        finite = finite_items(verts)
        scale = _power_of_two_scale(torch.where(finite[:, None, None], verts, 0))
        unit = torch.where(finite[:, None, None], verts * scale[:, None, None], 0)
        self.order, self.tris, self.boxes = torch.ops.handgeom.mesh_bvh(unit, self.faces, order)
        self.verts, self.finite, self.scale = verts, finite, scale

    def _own(self, ck: Checker, verts: torch.Tensor | None) -> torch.Tensor:
        """The vertices a query with this BVH measures: its own, given as ``verts`` or None."""
        mine = ck.tensor(self.verts, "verts", ("B", "V", 3))  # binds B for the other arguments
        if verts is None:
            return mine
        ck.tensor(verts, "verts", ("B", "V", 3), like=mine)
        v = verts.detach()
        if not torch.compiler.is_compiling() and not bool(((v == mine) | (v.isnan() & mine.isnan())).all()):
            ck.fail("verts must hold the vertices the BVH was built from or last refit with, or be None: refit "
                    "the BVH (bvh.refit(verts)) after moving the vertices")
        return verts

    @classmethod
    def _of(cls, ck: Checker, verts: torch.Tensor | None, faces: torch.Tensor,
            bvh: "MeshBVH | None") -> tuple["MeshBVH", torch.Tensor]:
        """The BVH a query traverses (built here unless given) and the vertices it differentiates."""
        if bvh is not None:
            return bvh, bvh._own(ck, verts)
        mesh = cls.__new__(cls)
        mesh.faces = faces
        mesh._fit(ck, verts, None)
        return mesh, verts


def _power_of_two_scale(verts: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``2^-e`` with ``2^(e-1) <= max |coordinate| < 2^e`` per mesh (1 for an empty or
    all-zero mesh), ``e`` clamped to keep the scale a normal number of the dtype."""
    largest = F.pad(verts.abs().flatten(1), (0, 1)).amax(1)
    limit = -math.log2(torch.finfo(verts.dtype).tiny)
    return torch.exp2(-torch.frexp(largest).exponent.clamp(-limit, limit).to(verts.dtype))


def points_inside_mesh(points: torch.Tensor, verts: torch.Tensor | None, faces: torch.Tensor, n_rays: int = 1,
                       bvh: MeshBVH | None = None) -> torch.Tensor:
    """Whether each point is inside its mesh, by ray casting: ``[B, N] bool``.

    Counts signed crossings along a fixed ray with the watertight ray/triangle test of Woop,
    Benthin & Wald (2013) plus a consistent fill rule for rays through edges and vertices (equal
    to an infinitesimal shift of the ray), so the count is the exact winding number of a closed
    mesh: a point is inside when it is non-zero. One ray is exact on closed meshes of any
    orientation; ``n_rays`` (odd, up to 9) fixed directions vote for meshes with holes.
    Nested shells count by winding: a cavity bounded by an inward-facing shell is outside, and
    duplicated opposite faces cancel. Points exactly on the surface get a deterministic answer
    (the fill rule's). NaN points are outside; a mesh with a non-finite vertex is a ``ValueError``
    (a bool cannot be NaN; see the module docstring).

    Args:
        points: ``[B, N, 3]``, same dtype and device as ``verts``.
        verts, faces: the meshes (see the module docstring); with ``bvh``, see :class:`MeshBVH`.
    """
    ck = Checker("points_inside_mesh")
    mesh, _ = MeshBVH._of(ck, verts, faces, bvh)
    ck.finite(mesh.finite, "verts", "mesh")
    points = ck.tensor(points, "points", ("B", None, 3), like=mesh.verts)
    return torch.ops.handgeom.mesh_inside(mesh.unit(points.detach()), *mesh.tensors, n_rays)


def ray_mesh_intersect(origins: torch.Tensor, dirs: torch.Tensor, verts: torch.Tensor | None, faces: torch.Tensor,
                       bvh: MeshBVH | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First hit of each ray ``origins + t dirs``, ``t > 0``: ``(t [B,R], face [B,R], bary [B,R,3])``.

    ``t`` is in units of ``dirs`` (need not be unit length); a miss gives ``t = inf``, face -1 and
    zero barycentric weights; equal ``t`` goes to the lower BVH slot. Hits are found with the
    same watertight test as :func:`points_inside_mesh`, so rays through edges or vertices never
    slip through a closed mesh. A zero direction misses. A mesh with a non-finite vertex gives
    ``t`` and weights NaN and face -1. Not differentiable.
    """
    ck = Checker("ray_mesh_intersect")
    mesh, _ = MeshBVH._of(ck, verts, faces, bvh)
    origins = ck.tensor(origins, "origins", ("B", "R", 3), like=mesh.verts)
    dirs = ck.tensor(dirs, "dirs", ("B", "R", 3), like=mesh.verts)
    t, face, bary = torch.ops.handgeom.mesh_ray_hit(mesh.unit(origins.detach()), dirs.detach(), *mesh.tensors)
    poison = mesh.poison[:, None]
    return t / mesh.scale[:, None] + poison, torch.where(mesh.finite[:, None], face, -1), bary + poison[..., None]


def signed_distance(points: torch.Tensor, verts: torch.Tensor | None, faces: torch.Tensor,
                    bvh: MeshBVH | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed distance to each mesh, negative inside: ``(sdf [B,N], face [B,N], closest [B,N,3])``.

    The unsigned part is the exact distance to the closest triangle (Voronoi-region projection,
    correct on faces, edges and vertices at any scale; zero-area faces use their edges), the sign
    the one-ray inside test of :func:`points_inside_mesh` (exact for closed meshes).
    Differentiable with respect to ``points`` and ``verts`` (a.e.: d sdf/dp = s (p-q)/|p-q| and
    d sdf/dv_i = -s w_i (p-q)/|p-q| with q the closest point, w its barycentric weights, s the
    sign; no gradient through the choice of face; 0 on the surface). On CPU the vertex gradient
    is accumulated per mesh in a fixed order (deterministic); on CUDA with atomics. An empty mesh
    gives +inf and face -1; a NaN point gives NaN (gradient 0); a mesh with a non-finite vertex gives
    NaN distances and closest points (gradient 0) and face -1.
    """
    ck = Checker("signed_distance")
    mesh, verts = MeshBVH._of(ck, verts, faces, bvh)
    points = ck.tensor(points, "points", ("B", None, 3), like=verts)
    scale, poison = mesh.scale[:, None], mesh.poison[:, None]
    sdf, face, closest = torch.ops.handgeom.mesh_signed_distance(mesh.unit(points), mesh.unit(verts), mesh.faces,
                                                                 *mesh.tensors)
    return (sdf / scale + poison, torch.where(mesh.finite[:, None], face, -1),
            closest / scale[..., None] + poison[..., None])


def penetration_loss(points: torch.Tensor, verts: torch.Tensor | None, faces: torch.Tensor,
                     reduction: Literal["sum", "mean", "none"] = "sum", squared: bool = False,
                     bvh: MeshBVH | None = None) -> torch.Tensor:
    """Penetration of points into meshes: ``max(-sdf, 0)`` (``squared``: its square) per point.

    The hand-object physical constraint (hand vertices as ``points``, the object as the mesh);
    between two hands it penalizes interpenetration. Fused: the inside test runs first and the
    closest-point search only for points inside. Reduced over all points by ``"sum"`` (default)
    or ``"mean"`` (0 for no point); ``"none"`` returns ``[B, N]``. Gradients reach ``points`` and
    ``verts`` as in :func:`signed_distance`. NaN points give NaN, and so does every point of a
    mesh with a non-finite vertex (gradient 0): the NaN reaches the reduced loss.
    """
    ck = Checker("penetration_loss")
    ck.choice(reduction, "reduction", ("sum", "mean", "none"))
    mesh, verts = MeshBVH._of(ck, verts, faces, bvh)
    points = ck.tensor(points, "points", ("B", None, 3), like=verts)
    loss, _ = torch.ops.handgeom.mesh_penetration(mesh.unit(points), mesh.unit(verts), mesh.faces, *mesh.tensors,
                                                  squared)
    scale = mesh.scale[:, None]
    loss = (loss / scale / scale if squared else loss / scale) + mesh.poison[:, None]
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" or loss.numel() == 0 else loss.mean()


# Barycentric weights of the points inside each face that surface_points adds: the centroid, then
# the centroids of the three corner sub-triangles.
_FACE_POINTS = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]],
                            dtype=torch.float64)


def surface_points(verts: torch.Tensor, faces: torch.Tensor, per_face: int = 4) -> torch.Tensor:
    """The points that stand for a mesh's surface in a collision test: its vertices
    ``verts [..., V, 3]`` followed by ``per_face`` (1 to 4) points inside each face of ``faces
    [F, 3]`` (1: the centroids; 4: also the centroids of the three corner sub-triangles), face by
    face: ``[..., V + per_face F, 3]``. The inside test and the penetration loss of a coarse mesh
    need the face points, since another surface can cross a face between its vertices."""
    ck = Checker("surface_points")
    verts = ck.tensor(verts, "verts", ("...", None, 3))
    faces = ck.tensor(faces, "faces", (None, 3), kind="int")
    per_face = ck.integer(per_face, "per_face", minimum=1)
    if per_face > len(_FACE_POINTS):
        ck.fail(f"per_face must be 1 to {len(_FACE_POINTS)}, got {per_face}")
    inner = _FACE_POINTS[:per_face].to(verts) @ verts[..., faces, :]  # [..., F, per_face, 3]
    return torch.cat([verts, inner.flatten(-3, -2)], -2)


# ---- fake tensors and autograd -------------------------------------------------------------------


def _leaves(faces: int) -> int:
    """Leaves of a mesh's BVH (mirrors leaves_for in csrc/mesh/mesh.h), for fake tensors."""
    leaves = 1
    while leaves * 4 < faces:
        leaves *= 2
    return leaves


@torch.library.register_fake("handgeom::mesh_bvh")
def _bvh_fake(verts, faces, order):
    batch, count = verts.shape[0], faces.shape[-2]
    return (verts.new_empty((batch, count), dtype=torch.int32), verts.new_empty((batch, count, 9)),
            verts.new_empty((batch, 2 * _leaves(count) - 1, 6)))


@torch.library.register_fake("handgeom::mesh_inside")
def _inside_fake(points, order, tris, boxes, n_rays):
    return points.new_empty(points.shape[:2], dtype=torch.bool)


@torch.library.register_fake("handgeom::mesh_ray_hit")
def _ray_fake(origins, dirs, order, tris, boxes):
    return origins.new_empty(origins.shape[:2]), origins.new_empty(origins.shape[:2], dtype=torch.long), \
        origins.new_empty(origins.shape)


@torch.library.register_fake("handgeom::mesh_signed_distance")
def _distance_fake(points, verts, faces, order, tris, boxes):
    return points.new_empty(points.shape[:2]), points.new_empty(points.shape[:2], dtype=torch.long), \
        points.new_empty(points.shape)


@torch.library.register_fake("handgeom::mesh_penetration")
def _penetration_fake(points, verts, faces, order, tris, boxes, squared):
    return points.new_empty(points.shape[:2]), points.new_empty(points.shape[:2], dtype=torch.long)


@torch.library.register_fake("handgeom::mesh_distance_backward")
def _distance_backward_fake(coef, points, verts, faces, face):
    return torch.empty_like(points), torch.empty_like(verts)


def _distance_setup(ctx, inputs, output):
    points, verts, faces = inputs[:3]
    ctx.save_for_backward(points, verts, faces, output[0], output[1])
    ctx.mark_non_differentiable(*output[1:])


def _distance_grads(ctx, coef):
    points, verts, faces, _, face = ctx.saved_tensors
    return torch.ops.handgeom.mesh_distance_backward(coef, points, verts, faces, face)


def _signed_distance_backward(ctx, grad_sdf, grad_face, grad_closest):
    _, _, _, sdf, _ = ctx.saved_tensors
    coef = torch.where(sdf < 0, -grad_sdf, grad_sdf)  # d sdf / d distance = the sign
    grad_points, grad_verts = _distance_grads(ctx, coef.contiguous())
    return grad_points, grad_verts, None, None, None, None


def _penetration_backward(ctx, grad_loss, grad_face):
    _, _, _, loss, _ = ctx.saved_tensors
    coef = grad_loss * (2 * loss.sqrt() if ctx.squared else torch.ones_like(loss))  # d loss / d distance
    grad_points, grad_verts = _distance_grads(ctx, coef.contiguous())
    return grad_points, grad_verts, None, None, None, None, None


def _penetration_setup(ctx, inputs, output):
    _distance_setup(ctx, inputs, output)
    ctx.squared = inputs[6]


torch.library.register_autograd("handgeom::mesh_signed_distance", _signed_distance_backward, setup_context=_distance_setup)
torch.library.register_autograd("handgeom::mesh_penetration", _penetration_backward, setup_context=_penetration_setup)
