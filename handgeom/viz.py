"""Small pictures without a display: a z-buffer rasterizer for triangle meshes and a PNG writer
(numpy and zlib only). Used for the hand model's documentation images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def render_meshes(meshes: list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]],
                  size: tuple[int, int] = (320, 320), view: np.ndarray | None = None,
                  margin: float = 0.08) -> np.ndarray:
    """Orthographic, flat-shaded rendering of ``(verts [V,3], faces [F,3], rgb in [0,1])`` meshes.

    ``view`` ([3,3]) rotates world to camera coordinates (camera looks along -z, y up); the image
    is fitted to the meshes' extent. Returns ``uint8 [H, W, 3]`` on a white background.
    """
    height, width = size
    view = np.eye(3) if view is None else np.asarray(view, dtype=np.float64)
    cams = [np.asarray(v, dtype=np.float64) @ view.T for v, _, _ in meshes]
    allv = np.concatenate(cams)
    lo, hi = allv[:, :2].min(0), allv[:, :2].max(0)
    scale = (1 - 2 * margin) * min(width / max(hi[0] - lo[0], 1e-9), height / max(hi[1] - lo[1], 1e-9))
    centre = (lo + hi) / 2
    image = np.ones((height, width, 3))
    depth = np.full((height, width), -np.inf)
    light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
    for cam, (_, faces, colour) in zip(cams, meshes):
        px = np.empty_like(cam)
        px[:, 0] = (cam[:, 0] - centre[0]) * scale + width / 2
        px[:, 1] = height / 2 - (cam[:, 1] - centre[1]) * scale
        px[:, 2] = cam[:, 2]
        tri = cam[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        shade = 0.35 + 0.65 * np.abs(normals @ light)
        for f, s in zip(px[faces], shade):
            _fill_triangle(f, np.asarray(colour) * s, image, depth)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _fill_triangle(p: np.ndarray, colour: np.ndarray, image: np.ndarray, depth: np.ndarray) -> None:
    height, width = depth.shape
    x0, y0 = np.floor(p[:, :2].min(0)).astype(int)
    x1, y1 = np.ceil(p[:, :2].max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x0 > x1 or y0 > y1:
        return
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1] + 0.5
    (ax, ay, az), (bx, by, bz), (cx, cy, cz) = p
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if abs(area) < 1e-12:
        return
    w0 = ((bx - xs) * (cy - ys) - (by - ys) * (cx - xs)) / area
    w1 = ((cx - xs) * (ay - ys) - (cy - ys) * (ax - xs)) / area
    w2 = 1 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0 * az + w1 * bz + w2 * cz
    region = depth[y0:y1 + 1, x0:x1 + 1]
    closer = inside & (z > region)
    region[closer] = z[closer]
    image[y0:y1 + 1, x0:x1 + 1][closer] = colour


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Writes ``uint8 [H, W, 3]`` as an 8-bit RGB PNG."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
