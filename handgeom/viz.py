"""Small pictures without a display: meshes rendered orthographically by handgeom's one renderer
(:mod:`handgeom.render`). Used by the demo, ``handgeom reconstruct`` and the documentation images;
save them with Pillow (``PIL.Image.fromarray(image).save(path)``)."""

from __future__ import annotations

import numpy as np
import torch

from PIL import ImageDraw

from handgeom.hand.skeleton import BONES
from handgeom.ops.mesh import points_inside_mesh
from handgeom.render import cast, interpolate, shade, vertex_normals

__all__ = ["render_meshes", "render_pixels", "draw_skeleton"]

LIGHT = (0.3, -0.5, -1.0)  # towards the light, in pixel space: right, up and towards the viewer
ColouredMesh = tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]  # verts [V, 3], faces [F, 3], rgb


def render_pixels(meshes: list[ColouredMesh], size: tuple[int, int], background: np.ndarray | None = None,
                  opacity: float = 1.0, highlight: tuple[float, float, float] | None = None) -> np.ndarray:
    """Orthographic rendering of meshes given in pixel space: a vertex ``(x, y, z)`` lies over
    column ``x`` and row ``y`` (pixels; pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``) at depth
    ``z`` away from the viewer (OpenCV's axes, so image-plane predictions render over their image).

    One ray per pixel centre (:func:`handgeom.render.cast`: all meshes in one BVH), Lambertian
    shading with smooth normals, darkened with depth, laid over ``background`` (``uint8 [H, W, 3]``,
    default white) with ``opacity``. With ``highlight``, the projection of the volume inside two or
    more meshes (interpenetration, on a 64³ grid over the scene) is tinted with that colour, as if
    seen through the surface. Returns ``uint8 [H, W, 3]``.
    """
    height, width = size
    scene = [(torch.as_tensor(v).detach().cpu().double(), torch.as_tensor(f).cpu().long()) for v, f, _ in meshes]
    allv = torch.cat([v for v, _ in scene])
    lo, hi = allv.amin(0), allv.amax(0)
    gy, gx = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5, torch.arange(width, dtype=torch.float64) + 0.5,
                            indexing="ij")
    origins = torch.stack([gx, gy, torch.full_like(gx, float(lo[2]) - 1.0)], -1).view(-1, 3)
    dirs = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(origins)
    frags = cast([scene], origins, dirs)
    hits, t = frags.hits, frags.t[frags.hits]  # shaded: the pixels that see a surface
    normals = torch.nn.functional.normalize(interpolate([[vertex_normals(v, f) for v, f in scene]], frags), dim=-1)
    colours = torch.tensor([c for _, _, c in meshes], dtype=torch.float64)[frags.mesh[hits]]
    light = torch.tensor(LIGHT, dtype=torch.float64) / np.linalg.norm(LIGHT)
    lit = shade(colours, normals, dirs[hits], light)
    depth = (t - t.min()) / max(float(t.max() - t.min()), 1e-9) if len(hits) else t
    image = (torch.ones(height * width, 3, dtype=torch.float64) if background is None
             else torch.as_tensor(np.asarray(background), dtype=torch.float64).reshape(-1, 3) / 255)
    surface = lit * (1 - 0.35 * depth.clamp(0, 1))[:, None]
    image[hits] = opacity * surface + (1 - opacity) * image[hits]
    if highlight is not None and len(meshes) > 1:
        steps = (torch.arange(64, dtype=torch.float64) + 0.5) / 64
        grid = lo + (hi - lo) * torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).view(-1, 3)
        inside = torch.stack([points_inside_mesh(grid[None], v[None], f)[0] for v, f in scene]).sum(0) >= 2
        px = grid[inside, 0].long().clamp(0, width - 1)
        py = grid[inside, 1].long().clamp(0, height - 1)
        mask = torch.zeros(1, 1, height, width, dtype=torch.float64)
        mask[0, 0, py, px] = 1
        cell = int(float((hi - lo)[:2].max()) / 64) // 2 * 2 + 1  # a grid cell's width in pixels, odd
        mask = torch.nn.functional.max_pool2d(mask, cell, 1, cell // 2).view(-1, 1) > 0
        image = torch.where(mask, 0.4 * image + 0.6 * torch.tensor(highlight, dtype=torch.float64), image)
    return (image.clamp(0, 1) * 255).to(torch.uint8).view(height, width, 3).numpy()


def draw_skeleton(draw: ImageDraw.ImageDraw, joints, colour: tuple[int, int, int], width: int = 2,
                  valid=None) -> None:
    """Draws a 2D hand skeleton, ``joints [21, 2]`` in pixels (handgeom's joint order), with Pillow:
    the bones as lines of ``colour``, the joints as white dots ringed with it; ``valid [21]`` (bool)
    leaves the other joints and their bones out."""
    points = [tuple(map(float, p)) for p in np.asarray(joints)]
    keep = [True] * len(points) if valid is None else [bool(v) for v in np.asarray(valid)]
    for a, b in BONES:
        if keep[a] and keep[b]:
            draw.line([points[a], points[b]], fill=colour, width=width)
    radius = width
    for (x, y), shown in zip(points, keep):
        if shown:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(255, 255, 255), outline=colour)


def render_meshes(meshes: list[ColouredMesh], size: tuple[int, int] = (320, 320), view: np.ndarray | None = None,
                  margin: float = 0.08, highlight: tuple[float, float, float] | None = None) -> np.ndarray:
    """Orthographic rendering of world-space meshes, fitted to the image: ``view`` ([3, 3])
    rotates world to camera coordinates (the camera looks along -z, y up), and the meshes' extent
    fills the image but for ``margin``. Rendered by :func:`render_pixels` (which see for
    ``highlight``) on white; returns ``uint8 [H, W, 3]``."""
    height, width = size
    view_t = torch.as_tensor(np.eye(3) if view is None else view, dtype=torch.float64)
    # to pixel space: x to columns, y up to rows down, z towards the viewer to depth (a rotation)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    posed = [torch.as_tensor(v).detach().cpu().double() @ (flip @ view_t).T for v, _, _ in meshes]
    allv = torch.cat(posed)
    lo, hi = allv.amin(0), allv.amax(0)
    scale = (1 - 2 * margin) * min(width / max(float(hi[0] - lo[0]), 1e-9), height / max(float(hi[1] - lo[1]), 1e-9))
    centre = (lo + hi) / 2 - torch.tensor([width / 2, height / 2, 0.0], dtype=torch.float64) / scale
    return render_pixels([((v - centre) * scale, f, c) for v, (_, f, c) in zip(posed, meshes)], size, highlight=highlight)
