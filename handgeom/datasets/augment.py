"""Augmentation for every handgeom sample, synthetic or real (the keys of
:mod:`handgeom.datasets.sample`), as DIR trains: a random similarity of the crop (scale, in-plane
rotation, shift), a horizontal flip that swaps the hands, and photometric jitter.

The geometric part is exact for a pinhole camera with square pixels and no skew: an in-plane
rotation of the image about a point is the camera turned about its optical axis (3D labels rotate
about the camera's z axis, the principal point moves); a scale or shift of the image only changes
the intrinsics; the horizontal flip mirrors the camera frame (x -> -x), which turns the left hand
into a right hand and the right into a left: the slots swap, and a mirrored hand's parameters are
``R -> M R M``, ``t -> M t`` with ``M = diag(-1, 1, 1)``, angles and lengths unchanged. An object
is mirrored too: its posed vertices ``v -> M v`` (faces re-wound, so that the mesh stays
outward-oriented) and its pose ``R -> M R M``, ``t -> M t``, so that its template, ``R^T (v - t)``,
becomes the mirrored template ``M T``: exact for any object, symmetric or not. A real dataset's
object given by a pose alone (no mesh) is never flipped: its mirror image is not described by the
pose. With ``fx != fy`` the augmented ``K`` gains an
``[1, 0]`` entry: projecting with the full matrix (:func:`~handgeom.datasets.sample.project`)
stays exact.

A dataset calls its transform as ``transform(sample, index)``: :class:`Augment` draws the
augmentation of sample ``index`` from a generator seeded by ``(seed, index)``, so it is the same in
every DataLoader worker, process and resumed run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handgeom.datasets.sample import project, seeded_generator

__all__ = ["Augment", "photometric"]

_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))


def photometric(image: torch.Tensor, g: torch.Generator, gain: float = 0.2, blur: float = 0.5,
                noise: float = 0.02) -> torch.Tensor:
    """Colour gain per channel (``1 +- gain``), a Gaussian blur with probability ``blur`` (sigma
    up to 1 px) and Gaussian sensor noise (std up to ``noise``) of an image ``[3, H, W]`` in [0, 1]."""
    image = image * (1 + gain * (2 * torch.rand(3, 1, 1, generator=g) - 1))
    if float(torch.rand((), generator=g)) < blur:
        sigma = 0.3 + 0.7 * float(torch.rand((), generator=g))
        x = torch.arange(-2, 3, dtype=image.dtype)
        k = torch.exp(-x ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        padded = F.pad(image[None], (2, 2, 2, 2), mode="replicate")
        image = F.conv2d(F.conv2d(padded, k.view(1, 1, 1, 5).expand(3, 1, 1, 5), groups=3),
                         k.view(1, 1, 5, 1).expand(3, 1, 5, 1), groups=3)[0]
    sigma = noise * float(torch.rand((), generator=g))
    image = image + sigma * torch.randn(image.shape, generator=g, dtype=image.dtype)
    return image.clamp(0, 1)


class Augment:
    """A random augmentation of a sample dict, to pass as a dataset's ``transform``.

    Args:
        scale: the crop is scaled by a factor in ``[1 - scale, 1 + scale]``.
        rotation: in-plane rotation, uniform in ``[-rotation, rotation]`` degrees.
        shift: shift of the crop, up to this fraction of its side per axis.
        flip: probability of the horizontal flip (which swaps left and right).
        colour: apply :func:`photometric`.
        seed: with the sample's index, seeds the augmentation (see the module docstring).
    """

    def __init__(self, scale: float = 0.1, rotation: float = 180.0, shift: float = 0.05, flip: float = 0.5,
                 colour: bool = True, seed: int = 0):
        if not 0 <= scale < 1:
            raise ValueError(f"Augment: scale must lie in [0, 1), got {scale}")
        if not 0 <= flip <= 1:
            raise ValueError(f"Augment: flip must be a probability, got {flip}")
        if seed < 0:
            raise ValueError(f"Augment: seed must be non-negative, got {seed}")
        self.scale, self.rotation, self.shift, self.flip, self.colour = scale, rotation, shift, flip, colour
        self.seed = seed

    def __call__(self, sample: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        g = seeded_generator(self.seed, index)
        u = torch.rand(5, generator=g, dtype=torch.float64)
        s = 1 + self.scale * (2 * float(u[0]) - 1)
        angle = math.radians(self.rotation * (2 * float(u[1]) - 1))
        shift = (self.shift * (2 * u[2:4] - 1)).tolist()
        pose_only = "object_pose" in sample and "object_verts" not in sample
        out = transform(sample, s, angle, shift, bool(u[4] < self.flip) and not pose_only)
        if self.colour:
            out["image"] = photometric(out["image"], g)
        return out


def transform(sample: dict[str, torch.Tensor], scale: float, angle: float, shift: list[float],
              flip: bool) -> dict[str, torch.Tensor]:
    """The sample seen through the crop scaled by ``scale`` and turned by ``angle`` radians about
    its centre, shifted by ``shift`` (fractions of the side), then flipped horizontally if ``flip``."""
    out = dict(sample)
    size = sample["image"].shape[-1]
    c = size / 2
    cos, sin = math.cos(angle), math.sin(angle)
    # 3D: a rotation about the camera's z axis (image rotation by +angle, y down)
    Rz = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    # image: p' = A p with A = T(c + shift) S(scale) Rot(angle) T(-c); as intrinsics K' = A K Rz^T
    A = torch.tensor([[scale * cos, -scale * sin, 0.0], [scale * sin, scale * cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    A[:2, 2] = torch.tensor([c + shift[0] * size, c + shift[1] * size], dtype=torch.float64) - A[:2, :2] @ torch.tensor([c, c], dtype=torch.float64)
    M = torch.eye(3, dtype=torch.float64)
    if flip:
        A = torch.tensor([[-1.0, 0.0, size], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64) @ A
        M = _MIRROR.double()
    G = M @ Rz  # the 3D change of the camera frame
    K = A @ sample["K"].double() @ Rz.T @ M
    out["K"] = K.float()
    # images: each output pixel samples the input at A^-1 p
    inv = torch.linalg.inv(A)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5, torch.arange(size, dtype=torch.float64) + 0.5,
                            indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ inv.T
    grid = (src[..., :2] / size * 2 - 1)[None].float()

    def warp(x: torch.Tensor, mode: str) -> torch.Tensor:
        return F.grid_sample(x[None].float(), grid, mode=mode, padding_mode="zeros", align_corners=False)[0]

    out["image"] = warp(sample["image"], "bilinear")
    out["dense"] = warp(sample["dense"], "nearest")
    out["depth"] = warp(sample["depth"][None], "nearest")[0]
    mask = warp(sample["mask"][None].double(), "nearest")[0].long()
    if flip:  # the hands swap: right (1) <-> left (2)
        mask = torch.where(mask == 1, 2, torch.where(mask == 2, 1, mask))
    out["mask"] = mask
    # 3D labels in the new camera frame; with the flip the slots swap
    order = [1, 0] if flip else [0, 1]
    Gf = G.float()
    for key in ("joints_3d", "verts"):
        out[key] = (sample[key] @ Gf.T)[order] * sample["hand_valid"][order, None, None]
    out["rotation"] = (Gf @ sample["rotation"] @ (M.float() if flip else torch.eye(3)))[order]
    out["translation"] = (sample["translation"] @ Gf.T)[order]
    for key in ("bone_lengths", "angles", "scale", "hand_valid", "joints_valid"):
        out[key] = sample[key][order]
    joints_2d = project(out["joints_3d"].double(), K).float()  # unannotated joints (zeros) project to NaN
    out["joints_2d"] = torch.where(out["joints_valid"][..., None], joints_2d, torch.zeros_like(joints_2d))
    if "object_pose" in sample:
        R, t = sample["object_pose"][:, :3], sample["object_pose"][:, 3]
        out["object_pose"] = torch.cat([Gf @ R @ M.float(), (Gf @ t)[:, None]], 1)
    if "object_verts" in sample:
        out["object_verts"] = sample["object_verts"] @ Gf.T
        out["object_faces"] = sample["object_faces"][:, [0, 2, 1]] if flip else sample["object_faces"]
    return out
