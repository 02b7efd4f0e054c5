"""Batched triangle-mesh queries: inside test, ray casting, signed distance, penetration.

Meshes are batched: ``verts [B, V, 3]`` (float32/float64) with ``faces`` shared ``[F, 3]`` or per
mesh ``[B, F, 3]`` (int64 or int32). Each query builds a BVH per mesh (balanced, by median splits,
built in parallel over meshes and tree nodes) unless given a :class:`MeshBVH`, which a caller querying
the same meshes repeatedly builds once and refits when the vertices move.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["MeshBVH", "points_inside_mesh", "ray_mesh_intersect", "signed_distance", "penetration_loss"]


class MeshBVH:
    """A bounding volume hierarchy over each mesh of a batch.

    Args:
        verts: ``[B, V, 3]`` float32/float64 (not differentiated through the tree).
        faces: ``[F, 3]`` shared or ``[B, F, 3]``, int64/int32, entries in ``[0, V)``.

    The tree orders each mesh's faces by top-down median splits along the widest axis of their
    centroids, halving down to leaves of at most 4 faces; :meth:`refit` recomputes the boxes for
    moved vertices keeping that order (cheaper than a rebuild, and exact: only traversal speed
    depends on the order).
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor):
        self.faces = faces
        self.order, self.tris, self.boxes = torch.ops.handgeom.mesh_bvh(verts.detach(), faces, None)

    def refit(self, verts: torch.Tensor) -> "MeshBVH":
        """The same meshes with new vertex positions (same topology); returns self."""
        self.order, self.tris, self.boxes = torch.ops.handgeom.mesh_bvh(verts.detach(), self.faces, self.order)
        return self

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.order, self.tris, self.boxes


def _bvh(verts: torch.Tensor, faces: torch.Tensor, bvh: MeshBVH | None) -> MeshBVH:
    return MeshBVH(verts, faces) if bvh is None else bvh


def points_inside_mesh(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, n_rays: int = 1,
                       bvh: MeshBVH | None = None) -> torch.Tensor:
    """Whether each point is inside its mesh, by ray casting: ``[B, N] bool``.

    Counts signed crossings along a fixed ray with the watertight ray/triangle test of Woop,
    Benthin & Wald (2013) plus a consistent fill rule for rays through edges and vertices (equal
    to an infinitesimal shift of the ray), so the count is the exact winding number of a closed
    mesh: a point is inside when it is non-zero. One ray is exact on closed meshes of any
    orientation; ``n_rays`` (odd, up to 9) fixed directions vote for meshes with holes.
    Nested shells count by winding: a cavity bounded by an inward-facing shell is outside, and
    duplicated opposite faces cancel. Points exactly on the surface get a deterministic answer
    (the fill rule's). NaN points are outside.

    Args:
        points: ``[B, N, 3]``, same dtype and device as ``verts``.
        verts, faces: the meshes (see the module docstring); ignored when ``bvh`` is given.
    """
    order, tris, boxes = _bvh(verts, faces, bvh).tensors
    return torch.ops.handgeom.mesh_inside(points.detach(), order, tris, boxes, n_rays)


def ray_mesh_intersect(origins: torch.Tensor, dirs: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                       bvh: MeshBVH | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First hit of each ray ``origins + t dirs``, ``t > 0``: ``(t [B,R], face [B,R], bary [B,R,3])``.

    ``t`` is in units of ``dirs`` (need not be unit length); a miss gives ``t = inf``, face -1 and
    zero barycentric weights; equal ``t`` goes to the lower BVH slot. Hits are found with the
    same watertight test as :func:`points_inside_mesh`, so rays through edges or vertices never
    slip through a closed mesh. A zero direction misses. Not differentiable.
    """
    order, tris, boxes = _bvh(verts, faces, bvh).tensors
    return torch.ops.handgeom.mesh_ray_hit(origins.detach(), dirs.detach(), order, tris, boxes)


def signed_distance(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                    bvh: MeshBVH | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed distance to each mesh, negative inside: ``(sdf [B,N], face [B,N], closest [B,N,3])``.

    The unsigned part is the exact distance to the closest triangle (Voronoi-region projection,
    correct on faces, edges and vertices at any scale; zero-area faces use their edges), the sign
    the one-ray inside test of :func:`points_inside_mesh` (exact for closed meshes).
    Differentiable with respect to ``points`` and ``verts`` (a.e.: d sdf/dp = s (p-q)/|p-q| and
    d sdf/dv_i = -s w_i (p-q)/|p-q| with q the closest point, w its barycentric weights, s the
    sign; no gradient through the choice of face; 0 on the surface). On CPU the vertex gradient
    is accumulated per mesh in a fixed order (deterministic); on CUDA with atomics. An empty mesh
    gives +inf and face -1; a NaN point gives NaN.
    """
    mesh = _bvh(verts, faces, bvh)
    return torch.ops.handgeom.mesh_signed_distance(points, verts, mesh.faces, *mesh.tensors)


def penetration_loss(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor,
                     reduction: Literal["sum", "mean", "none"] = "sum", squared: bool = False,
                     bvh: MeshBVH | None = None) -> torch.Tensor:
    """Penetration of points into meshes: ``max(-sdf, 0)`` (``squared``: its square) per point.

    The hand-object physical constraint (hand vertices as ``points``, the object as the mesh);
    between two hands it penalizes interpenetration. Fused: the inside test runs first and the
    closest-point search only for points inside. Reduced over all points by ``"sum"`` (default)
    or ``"mean"``; ``"none"`` returns ``[B, N]``. Gradients reach ``points`` and ``verts`` as in
    :func:`signed_distance`. NaN points give NaN.
    """
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"penetration_loss: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    mesh = _bvh(verts, faces, bvh)
    loss, _ = torch.ops.handgeom.mesh_penetration(points, verts, mesh.faces, *mesh.tensors, squared)
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


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
