"""handgeom's one renderer: triangle meshes ray cast with :func:`handgeom.ops.ray_mesh_intersect`.

Used by the synthetic datasets (pinhole cameras, labels and shaded images), by the real-data
readers (labels of the fitted hands) and by :mod:`handgeom.viz` (orthographic pictures).

All meshes of a scene are concatenated into one mesh with one BVH, so every ray is traced once and
its first hit is the nearest surface of the whole scene; ``Fragments.mesh`` says whose it is.
Camera conventions are OpenCV's: x right, y down, z forward; pixel ``(row i, col j)`` has its centre
at ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from handgeom.ops.mesh import ray_mesh_intersect

__all__ = ["Fragments", "pinhole_rays", "cast", "vertex_normals", "interpolate", "shade"]

Mesh = tuple[torch.Tensor, torch.Tensor]  # (verts [V, 3], faces [F, 3])


@dataclass
class Fragments:
    """The first hit of each ray, ``P`` rays.

    mesh: ``[P]`` int64, index of the hit mesh in the scene (-1: background);
    face: ``[P]`` int64, face index within that mesh (-1: background);
    bary: ``[P, 3]`` barycentric weights of the face's vertices (0 for background);
    t: ``[P]`` ray parameter of the hit (``inf`` for background); with :func:`pinhole_rays`'
    directions (z = 1) it is the camera-frame depth;
    dirs: ``[P, 3]`` the rays' directions (for shading).
    """

    mesh: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    t: torch.Tensor
    dirs: torch.Tensor

    @property
    def hit(self) -> torch.Tensor:
        return self.mesh >= 0

    @functools.cached_property
    def hits(self) -> torch.Tensor:
        """``[n]`` int64: the rays that hit, in order; where :func:`interpolate` gives values."""
        return self.hit.nonzero().squeeze(1)


def pinhole_rays(K: torch.Tensor, height: int, width: int, supersample: int = 1) -> torch.Tensor:
    """Directions ``[H * s, W * s, 3]`` (z = 1, camera frame, origin at the camera centre) through
    ``s x s`` sub-pixel centres of each pixel of a pinhole camera with intrinsics ``K [3, 3]``;
    ``s = 1`` gives the pixel centres. Row-major: sub-pixel ``(i, j)`` belongs to pixel
    ``(i // s, j // s)``."""
    K = K.double()
    s = supersample
    u = (torch.arange(width * s, dtype=torch.float64) + 0.5) / s
    v = (torch.arange(height * s, dtype=torch.float64) + 0.5) / s
    x = (u - K[0, 2] - K[0, 1] * (v[:, None] - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = ((v - K[1, 2]) / K[1, 1])[:, None].expand_as(x)
    return torch.stack([x, y, torch.ones_like(x)], -1)


def cast(meshes: Sequence[Mesh], origins: torch.Tensor, dirs: torch.Tensor) -> Fragments:
    """First hit of rays ``origins + t dirs`` (``[..., 3]`` each, broadcast) against the scene of
    ``meshes``; the result has the rays' leading shape flattened to ``P``."""
    if not meshes:
        raise ValueError("cast: meshes must hold at least one (verts, faces) mesh")
    dtype = meshes[0][0].dtype
    counts = torch.tensor([0] + [f.shape[0] for _, f in meshes]).cumsum(0)
    offsets = [0]
    for v, _ in meshes[:-1]:
        offsets.append(offsets[-1] + v.shape[0])
    verts = torch.cat([v.detach().to(dtype) for v, _ in meshes])[None]
    faces = torch.cat([f.long() + o for (_, f), o in zip(meshes, offsets)])
    origins, dirs = torch.broadcast_tensors(origins.to(dtype), dirs.to(dtype))
    t, face, bary = ray_mesh_intersect(origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3), verts, faces)
    t, face, bary = t[0], face[0], bary[0]
    mesh = torch.bucketize(face, counts[1:], right=True)
    hit = face >= 0
    mesh = torch.where(hit, mesh, -1)
    face = torch.where(hit, face - counts[mesh.clamp_min(0)], -1)
    return Fragments(mesh=mesh, face=face, bary=bary, t=t, dirs=dirs.reshape(-1, 3))


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[V, 3]`` (outward for an outward-oriented mesh)."""
    tri = verts[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), n.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(normals, dim=-1)


def interpolate(attributes: Sequence[torch.Tensor], meshes: Sequence[Mesh], frags: Fragments) -> torch.Tensor:
    """Per-vertex ``attributes[m] [V_m, C]`` of each mesh interpolated at the hits by their
    barycentric weights: ``[n, C]`` (in the attributes' dtype), one row per ray of ``frags.hits``."""
    for m, ((verts, _), attr) in enumerate(zip(meshes, attributes, strict=True)):
        if attr.shape[0] != verts.shape[0]:
            raise ValueError(f"interpolate: attributes[{m}] has {attr.shape[0]} rows for a mesh of {verts.shape[0]} vertices")
    table = torch.cat(list(attributes))
    offsets = [0]
    for attr in attributes[:-1]:
        offsets.append(offsets[-1] + attr.shape[0])
    faces = torch.cat([f.long() + o for (_, f), o in zip(meshes, offsets)])
    face_offsets = torch.tensor([0] + [f.shape[0] for _, f in meshes]).cumsum(0)
    hits = frags.hits
    corners = faces[frags.face[hits] + face_offsets[frags.mesh[hits]]]  # [n, 3]
    weights = frags.bary[hits].to(table.dtype)
    # three gathers of rows, not one [n, 3, C] gather and a batched matmul of tiny matrices
    return (table[corners[:, 0]] * weights[:, 0:1] + table[corners[:, 1]] * weights[:, 1:2]
            + table[corners[:, 2]] * weights[:, 2:3])


def shade(colours: torch.Tensor, normals: torch.Tensor, dirs: torch.Tensor, light: torch.Tensor,
          ambient: float = 0.35) -> torch.Tensor:
    """Lambertian shading with ambient light: ``colour (ambient + (1 - ambient) max(n . l, 0))``.

    colours: ``[P, 3]`` albedo; normals: ``[P, 3]`` unit surface normals, turned to face the
    viewer (against ``dirs [P, 3]``) so that closed and open surfaces shade alike; light: ``[3]``
    unit direction towards the light."""
    facing = torch.where(((normals * dirs).sum(-1, keepdim=True) > 0), -normals, normals)
    lambert = (facing @ light.to(normals)).clamp_min(0)
    return colours * (ambient + (1 - ambient) * lambert)[:, None]
