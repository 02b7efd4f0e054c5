"""Small pictures without a display: meshes rendered by handgeom's own ray casting, and a PNG
writer (zlib only). Used by the demo and the documentation images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from handgeom.ops.mesh import points_inside_mesh, ray_mesh_intersect


def render_meshes(meshes: list[tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]],
                  size: tuple[int, int] = (320, 320), view: np.ndarray | None = None, margin: float = 0.08,
                  highlight: tuple[float, float, float] | None = None) -> np.ndarray:
    """Orthographic rendering of ``(verts [V, 3], faces [F, 3], rgb in [0, 1])`` meshes by ray
    casting (:func:`handgeom.ops.ray_mesh_intersect`, one ray per pixel, all meshes in one batched
    call), shaded by the hit face's normal and by depth.

    ``view`` ([3, 3]) rotates world to camera coordinates (the camera looks along -z, y up); the
    image is fitted to the meshes' extent. With ``highlight``, the projection of the volume inside two
    or more meshes (interpenetration) is tinted with that colour, as if seen through the surface. Returns ``uint8 [H, W, 3]`` on white.
    """
    height, width = size
    view_t = torch.as_tensor(np.eye(3) if view is None else view, dtype=torch.float64)
    verts = [torch.as_tensor(v).detach().cpu().double() @ view_t.T for v, _, _ in meshes]
    faces = [torch.as_tensor(f).cpu().long() for _, f, _ in meshes]
    # one batch: pad with vertices at the origin and degenerate faces, which rays never hit
    V, F = max(v.shape[0] for v in verts), max(f.shape[0] for f in faces)
    verts_b = torch.stack([torch.cat([v, v.new_zeros(V - v.shape[0], 3)]) for v in verts])
    faces_b = torch.stack([torch.cat([f, f.new_zeros(F - f.shape[0], 3)]) for f in faces])
    allv = torch.cat(verts)
    lo, hi = allv.amin(0), allv.amax(0)
    scale = (1 - 2 * margin) * min(width / max(float(hi[0] - lo[0]), 1e-9), height / max(float(hi[1] - lo[1]), 1e-9))
    centre = (lo + hi) / 2
    xs = (torch.arange(width, dtype=torch.float64) + 0.5 - width / 2) / scale + centre[0]
    ys = (height / 2 - torch.arange(height, dtype=torch.float64) - 0.5) / scale + centre[1]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    origins = torch.stack([gx, gy, torch.full_like(gx, float(hi[2]) + 1.0)], -1).view(1, -1, 3).expand(len(meshes), -1, -1)
    dirs = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(origins)
    t, face, _ = ray_mesh_intersect(origins.contiguous(), dirs.contiguous(), verts_b, faces_b)
    t_near, which = t.min(0)  # the nearest mesh per pixel
    hit = torch.isfinite(t_near)
    face_near = face.gather(0, which[None])[0].clamp_min(0)
    tri = verts_b[which[:, None], faces_b[which, face_near]]  # [P, 3, 3]
    normal = torch.nn.functional.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=-1)
    light = torch.tensor([0.3, 0.5, 1.0], dtype=torch.float64) / np.linalg.norm([0.3, 0.5, 1.0])
    depth = (t_near - t_near[hit].min()) / max(float(t_near[hit].max() - t_near[hit].min()), 1e-9) if hit.any() else t_near
    shade = (0.35 + 0.65 * (normal @ light).abs()) * (1 - 0.35 * depth.clamp(0, 1))
    colours = torch.tensor([c for _, _, c in meshes], dtype=torch.float64)
    colour = colours[which]
    image = torch.where(hit[:, None], colour * shade[:, None], torch.ones(3, dtype=torch.float64))
    if highlight is not None and len(meshes) > 1:
        # x-ray tint over the projection of the volume inside two or more meshes (on a 64^3 grid)
        steps = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
        grid = lo + (hi - lo) * torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).view(-1, 3)
        inside = points_inside_mesh(grid.expand(len(meshes), -1, -1).contiguous(), verts_b, faces_b).sum(0) >= 2
        px = ((grid[inside, 0] - centre[0]) * scale + width / 2).long().clamp(0, width - 1)
        py = (height / 2 - (grid[inside, 1] - centre[1]) * scale).long().clamp(0, height - 1)
        mask = torch.zeros(1, 1, height, width, dtype=torch.float64)
        mask[0, 0, py, px] = 1
        cell = int(float((hi - lo)[:2].max()) / 64 * scale) // 2 * 2 + 1  # odd, at least 1
        mask = torch.nn.functional.max_pool2d(mask, cell, 1, cell // 2).view(-1, 1) > 0
        image = torch.where(mask, 0.4 * image + 0.6 * torch.tensor(highlight, dtype=torch.float64), image)
    return (image.clamp(0, 1) * 255).to(torch.uint8).view(height, width, 3).numpy()


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Writes ``uint8 [H, W, 3]`` as an 8-bit RGB PNG."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)

