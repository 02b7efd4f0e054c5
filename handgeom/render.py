"""handgeom's one renderer: triangle meshes ray cast with :func:`handgeom.ops.ray_mesh_intersect`.

Used by the synthetic datasets (pinhole cameras, labels and shaded images), by the real-data
readers (labels of the fitted hands) and by :mod:`handgeom.viz` (orthographic pictures).

A scene is a list of meshes; :func:`cast` takes a batch of scenes whose meshes have the same sizes
(one query for all of them: the synthetic datasets render a DataLoader batch at once). The meshes
of a scene are concatenated into one mesh with one BVH, so every ray is traced once and its first
hit is the nearest surface of the whole scene; ``Fragments.mesh`` says whose it is. Each ray's
answer depends on its own scene alone, so a scene renders to the same bits in any batch. Camera
conventions are OpenCV's: x right, y down, z forward; pixel ``(row i, col j)`` has its centre at
``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from handgeom.ops.mesh import ray_mesh_intersect

__all__ = ["Fragments", "pinhole_rays", "cast", "vertex_normals", "interpolate", "shade"]

Mesh = tuple[torch.Tensor, torch.Tensor]  # (verts [V, 3], faces [F, 3])
Scene = Sequence[Mesh]


@dataclass
class Fragments:
    """The first hit of each ray of a batch of ``B`` scenes, ``P`` rays each: ``R = B P`` rays,
    scene by scene (the rays of scene ``b`` are rows ``b P`` to ``(b + 1) P``).

    mesh: ``[R]`` int64, index of the hit mesh in its scene (-1: background);
    face: ``[R]`` int64, face index within that mesh (-1: background);
    bary: ``[R, 3]`` barycentric weights of the face's vertices (0 for background);
    t: ``[R]`` ray parameter of the hit (``inf`` for background); with :func:`pinhole_rays`'
    directions (z = 1) it is the camera-frame depth;
    dirs: ``[R, 3]`` the rays' directions (for shading);
    hits: ``[n]`` int64, the rays that hit, in order (where :func:`interpolate` gives values);
    corners: ``[n, 3]`` the hit faces' vertices, as rows of all scenes' vertices concatenated
    (scene by scene, mesh by mesh);
    vertex_counts: ``[B][M]`` the meshes' vertex counts (what :func:`interpolate` expects).
    """

    mesh: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    t: torch.Tensor
    dirs: torch.Tensor
    hits: torch.Tensor
    corners: torch.Tensor
    vertex_counts: list[list[int]]

    @property
    def hit(self) -> torch.Tensor:
        return self.mesh >= 0


def pinhole_rays(K: torch.Tensor, height: int, width: int, supersample: int = 1) -> torch.Tensor:
    """Directions ``[..., H * s, W * s, 3]`` (z = 1, camera frame, origin at the camera centre)
    through ``s x s`` sub-pixel centres of each pixel of pinhole cameras with intrinsics ``K [...,
    3, 3]``; ``s = 1`` gives the pixel centres. Row-major: sub-pixel ``(i, j)`` belongs to pixel
    ``(i // s, j // s)``."""
    K = K.double()[..., None, None, :, :]  # broadcast over the rows and columns
    s = supersample
    u = (torch.arange(width * s, dtype=torch.float64) + 0.5) / s
    v = (torch.arange(height * s, dtype=torch.float64) + 0.5) / s
    x = (u - K[..., 0, 2] - K[..., 0, 1] * (v[:, None] - K[..., 1, 2]) / K[..., 1, 1]) / K[..., 0, 0]
    y = ((v[:, None] - K[..., 1, 2]) / K[..., 1, 1]).expand_as(x)
    return torch.stack([x, y, torch.ones_like(x)], -1)


def cast(scenes: Sequence[Scene], origins: torch.Tensor, dirs: torch.Tensor) -> Fragments:
    """First hit of rays ``origins + t dirs`` (``[B, P, 3]`` or ``[P, 3]`` each, broadcast; ``B``
    the number of scenes) against each of the ``scenes``, whose meshes must have the same sizes
    scene by scene (the same vertex and face counts in the same order)."""
    if not scenes or not all(scenes):
        raise ValueError("cast: scenes must hold at least one scene of at least one (verts, faces) mesh")
    sizes = [[(v.shape[0], f.shape[0]) for v, f in scene] for scene in scenes]
    for b, scene_sizes in enumerate(sizes):
        if scene_sizes != sizes[0]:
            raise ValueError(f"cast: scene {b} has meshes of (vertex, face) counts {scene_sizes}, scene 0 "
                             f"{sizes[0]}; a batch of scenes needs the same sizes")
    dtype = scenes[0][0][0].dtype
    offsets = [0]
    for count, _ in sizes[0][:-1]:
        offsets.append(offsets[-1] + count)
    counts = torch.tensor([0] + [f for _, f in sizes[0]]).cumsum(0)
    verts = torch.stack([torch.cat([v.detach().to(dtype) for v, _ in scene]) for scene in scenes])  # [B, V, 3]
    shared = all(f is g for scene in scenes for (_, f), (_, g) in zip(scene, scenes[0]))
    faces = torch.stack([torch.cat([f.long() + o for (_, f), o in zip(scene, offsets)])
                         for scene in (scenes[:1] if shared else scenes)])  # [1 or B, F, 3]
    B, V, F = verts.shape[0], verts.shape[1], faces.shape[1]
    origins, dirs = torch.broadcast_tensors(origins.to(dtype), dirs.to(dtype))
    origins, dirs = (x.expand(B, -1, 3) if x.dim() == 2 else x for x in (origins, dirs))
    t, face, bary = ray_mesh_intersect(origins, dirs, verts, faces[0] if shared else faces)
    rays = t.shape[1]
    t, face, bary = t.flatten(), face.flatten(), bary.flatten(0, 1)
    hit = face >= 0
    hits = hit.nonzero().squeeze(1)
    scene_of = torch.div(hits, rays, rounding_mode="floor")
    local = face[hits]
    corners = (faces[0][local] if shared else faces.flatten(0, 1)[scene_of * F + local]) + V * scene_of[:, None]
    mesh = torch.bucketize(face, counts[1:], right=True)
    mesh = torch.where(hit, mesh, -1)
    face = torch.where(hit, face - counts[mesh.clamp_min(0)], -1)
    return Fragments(mesh=mesh, face=face, bary=bary, t=t, dirs=dirs.reshape(-1, 3), hits=hits, corners=corners,
                     vertex_counts=[[count for count, _ in scene_sizes] for scene_sizes in sizes])


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[V, 3]`` (outward for an outward-oriented mesh)."""
    tri = verts[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), n.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(normals, dim=-1)


def interpolate(attributes: Sequence[Sequence[torch.Tensor]], frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes of each mesh of each scene, ``attributes[b][m] [V_m, C]`` (shaped as
    :func:`cast`'s scenes), interpolated at the hits by their barycentric weights: ``[n, C]`` (in
    the attributes' dtype), one row per ray of ``frags.hits``."""
    rows = [[a.shape[0] for a in scene] for scene in attributes]
    if rows != frags.vertex_counts:
        raise ValueError(f"interpolate: attributes have {rows} rows for scenes of {frags.vertex_counts} vertices")
    table = torch.cat([a for scene in attributes for a in scene])
    corners, weights = frags.corners.T.contiguous(), frags.bary[frags.hits].to(table.dtype).T.contiguous()[..., None]
    # the corners' rows selected and weighted in place, corner by corner: half the time of
    # indexing, and a quarter of one [n, 3, C] gather's
    values = table.index_select(0, corners[0]).mul_(weights[0])
    values += table.index_select(0, corners[1]).mul_(weights[1])
    values += table.index_select(0, corners[2]).mul_(weights[2])
    return values


def shade(colours: torch.Tensor, normals: torch.Tensor, dirs: torch.Tensor, light: torch.Tensor,
          ambient: float = 0.35) -> torch.Tensor:
    """Lambertian shading with ambient light: ``colour (ambient + (1 - ambient) max(n . l, 0))``.

    colours: ``[P, 3]`` albedo; normals: ``[P, 3]`` unit surface normals, turned to face the
    viewer (against ``dirs [P, 3]``) so that closed and open surfaces shade alike; light: ``[3]``
    unit direction towards the light."""
    facing = torch.where(((normals * dirs).sum(-1, keepdim=True) > 0), -normals, normals)
    lambert = (facing @ light.to(normals)).clamp_min(0)
    return colours * (ambient + (1 - ambient) * lambert)[:, None]
