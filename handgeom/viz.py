"""Small pictures without a display: meshes rendered orthographically by handgeom's one renderer
(:mod:`handgeom.render`). Used by the demo and the documentation images; save them with Pillow
(``PIL.Image.fromarray(image).save(path)``)."""

from __future__ import annotations

import numpy as np
import torch

from handgeom.ops.mesh import points_inside_mesh
from handgeom.render import cast, interpolate, shade, vertex_normals

LIGHT = (0.3, 0.5, 1.0)


def render_meshes(meshes: list[tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]],
                  size: tuple[int, int] = (320, 320), view: np.ndarray | None = None, margin: float = 0.08,
                  highlight: tuple[float, float, float] | None = None) -> np.ndarray:
    """Orthographic rendering of ``(verts [V, 3], faces [F, 3], rgb in [0, 1])`` meshes, one ray per
    pixel (:func:`handgeom.render.cast`: all meshes in one BVH), Lambertian-shaded with smooth
    normals and darkened with depth.

    ``view`` ([3, 3]) rotates world to camera coordinates (the camera looks along -z, y up); the
    image is fitted to the meshes' extent. With ``highlight``, the projection of the volume inside
    two or more meshes (interpenetration) is tinted with that colour, as if seen through the
    surface. Returns ``uint8 [H, W, 3]`` on white.
    """
    height, width = size
    view_t = torch.as_tensor(np.eye(3) if view is None else view, dtype=torch.float64)
    scene = [(torch.as_tensor(v).detach().cpu().double() @ view_t.T, torch.as_tensor(f).cpu().long()) for v, f, _ in meshes]
    allv = torch.cat([v for v, _ in scene])
    lo, hi = allv.amin(0), allv.amax(0)
    scale = (1 - 2 * margin) * min(width / max(float(hi[0] - lo[0]), 1e-9), height / max(float(hi[1] - lo[1]), 1e-9))
    centre = (lo + hi) / 2
    xs = (torch.arange(width, dtype=torch.float64) + 0.5 - width / 2) / scale + centre[0]
    ys = (height / 2 - torch.arange(height, dtype=torch.float64) - 0.5) / scale + centre[1]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    origins = torch.stack([gx, gy, torch.full_like(gx, float(hi[2]) + 1.0)], -1).view(-1, 3)
    dirs = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(origins)
    frags = cast(scene, origins, dirs)
    normals = torch.nn.functional.normalize(interpolate([vertex_normals(v, f) for v, f in scene], scene, frags), dim=-1)
    colours = torch.tensor([c for _, _, c in meshes], dtype=torch.float64)[frags.mesh.clamp_min(0)]
    light = torch.tensor(LIGHT, dtype=torch.float64) / np.linalg.norm(LIGHT)
    lit = shade(colours, normals, dirs, light)
    hit = frags.hit
    t = frags.t
    depth = (t - t[hit].min()) / max(float(t[hit].max() - t[hit].min()), 1e-9) if hit.any() else t
    image = torch.where(hit[:, None], lit * (1 - 0.35 * depth.clamp(0, 1))[:, None], torch.ones(3, dtype=torch.float64))
    if highlight is not None and len(meshes) > 1:
        # x-ray tint over the projection of the volume inside two or more meshes (on a 64^3 grid)
        steps = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
        grid = lo + (hi - lo) * torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).view(-1, 3)
        inside = torch.stack([points_inside_mesh(grid[None], v[None], f)[0] for v, f in scene]).sum(0) >= 2
        px = ((grid[inside, 0] - centre[0]) * scale + width / 2).long().clamp(0, width - 1)
        py = (height / 2 - (grid[inside, 1] - centre[1]) * scale).long().clamp(0, height - 1)
        mask = torch.zeros(1, 1, height, width, dtype=torch.float64)
        mask[0, 0, py, px] = 1
        cell = int(float((hi - lo)[:2].max()) / 64 * scale) // 2 * 2 + 1  # odd, at least 1
        mask = torch.nn.functional.max_pool2d(mask, cell, 1, cell // 2).view(-1, 1) > 0
        image = torch.where(mask, 0.4 * image + 0.6 * torch.tensor(highlight, dtype=torch.float64), image)
    return (image.clamp(0, 1) * 255).to(torch.uint8).view(height, width, 3).numpy()
