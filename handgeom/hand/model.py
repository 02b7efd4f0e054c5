"""HandModel: parameters -> joints and a watertight mesh, batched and differentiable."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import torch

from handgeom._checks import Checker
from handgeom.hand import ik
from handgeom.hand.kinematics import local_skeleton, place, place_frames, quaternion_to_matrix, rotation_matrix
from handgeom.hand.mesh import hand_surface
from handgeom.hand.skeleton import ANGLE_NAMES, DEFAULT_BONE_LENGTHS, angle_limits


@dataclass
class HandParams:
    """Parameters of a batch of hands (any leading batch shape ``...``).

    rotation: global rotation of the hand frame, axis-angle ``[..., 3]``, 6D ``[..., 6]`` (Zhou et
        al. 2019; two zero or parallel vectors give a NaN hand) or a matrix ``[..., 3, 3]``;
        translation: ``[..., 3]`` wrist position, metres;
    bone_lengths: ``[..., 20]`` metres (``skeleton.BONES`` order); angles: ``[..., 21]`` radians
        (``skeleton.ANGLE_NAMES``); scale: ``[...]`` uniform size about the wrist (skeleton and
        surface).

    Every field has the same batch shape ``...`` (no broadcasting) and the same floating-point
    dtype; :class:`HandModel` checks this. NaN parameters give NaN joints and vertices.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    bone_lengths: torch.Tensor
    angles: torch.Tensor
    scale: torch.Tensor

    @property
    def batch_shape(self) -> torch.Size:
        return self.translation.shape[:-1]

    def to(self, *args, **kwargs) -> "HandParams":
        return HandParams(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def __getitem__(self, index) -> "HandParams":
        """Indexes the batch dimensions, e.g. ``params[3]`` or ``params[:8]``."""
        return HandParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def stack(params: Sequence["HandParams"]) -> "HandParams":
        """The hands of ``params`` (equal batch shapes and rotation forms) along a new first dimension."""
        return HandParams(**{f.name: torch.stack([getattr(p, f.name) for p in params]) for f in fields(HandParams)})


@dataclass
class HandOutput:
    joints: torch.Tensor  # [..., 21, 3] metres
    verts: torch.Tensor  # [..., V, 3] metres
    bone_frames: torch.Tensor  # [..., 20, 3, 3]


class HandModel(torch.nn.Module):
    """A skeleton-driven, watertight hand mesh without licensed weights.

    Args:
        side: ``"right"`` or ``"left"`` (the mirror image of the right hand, outward normals).
        resolution: ``"coarse"`` (330 vertices) or ``"fine"`` (762 vertices).
        thumb_dof: 2 or 3 degrees of freedom at the thumb's CMC joint (2 pins the twist at 0).

    ``model(params)`` gives joints ``[..., 21, 3]`` and vertices ``[..., V, 3]`` in metres, with
    the fixed ``model.faces`` ``[F, 3]``; differentiable in every parameter, on any device.
    """

    limits: torch.Tensor

    def __init__(self, side: str = "right", resolution: str = "coarse", thumb_dof: int = 3):
        super().__init__()
        if side not in ("right", "left"):
            raise ValueError(f"HandModel: side must be 'right' or 'left', got {side!r}")
        self.side, self.resolution = side, resolution
        self.surface = hand_surface(resolution)
        if side == "left":  # mirroring reverses orientation: flip each face to keep normals outward
            self.surface.faces = self.surface.faces.flip(-1)
        self.register_buffer("limits", angle_limits(thumb_dof), persistent=False)

    @property
    def faces(self) -> torch.Tensor:
        """``[F, 3]`` int64, the same for every pose."""
        return self.surface.faces

    @property
    def num_verts(self) -> int:
        return self.surface.num_verts

    def rest_pose(self, batch_shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> HandParams:
        """Open hand at the origin, default bone lengths, identity rotation."""
        kw = dict(dtype=dtype, device=device)
        return HandParams(
            rotation=torch.zeros(*batch_shape, 3, **kw),
            translation=torch.zeros(*batch_shape, 3, **kw),
            bone_lengths=torch.tensor(DEFAULT_BONE_LENGTHS, **kw).expand(*batch_shape, 20).clone(),
            angles=torch.zeros(*batch_shape, 21, **kw),
            scale=torch.ones(batch_shape, **kw),
        )

    def pose(self, batch_shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
             device: torch.device | str | None = None, **angles_deg: float) -> HandParams:
        """The rest pose with named joint angles set, in degrees: ``pose(index_pip_flex=90)``."""
        params = self.rest_pose(batch_shape, dtype, device)
        for name, value in angles_deg.items():
            if name not in ANGLE_NAMES:
                raise ValueError(f"HandModel.pose: unknown angle {name!r}; known: {ANGLE_NAMES}")
            params.angles[..., ANGLE_NAMES.index(name)] = math.radians(value)
        return params

    def sample_poses(self, n: int, generator: torch.Generator | None = None, global_rotation: bool = False,
                     length_jitter: float = 0.0, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> HandParams:
        """``n`` random plausible poses: angles uniform within the limits, optionally a uniformly
        random global rotation and bone lengths scaled by independent factors in
        ``[1 - length_jitter, 1 + length_jitter]``. Drawn on the CPU (reproducible with
        ``generator``), then moved to ``device``."""
        lo, hi = self.limits[:, 0].cpu(), self.limits[:, 1].cpu()
        params = self.rest_pose((n,), torch.float64)
        params.angles = lo + torch.rand(n, 21, generator=generator, dtype=torch.float64) * (hi - lo)
        if length_jitter:
            jitter = 1 + length_jitter * (2 * torch.rand(n, 20, generator=generator, dtype=torch.float64) - 1)
            params.bone_lengths = params.bone_lengths * jitter
        if global_rotation:  # uniform on SO(3): normalized Gaussian quaternions, as a matrix
            q = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator, dtype=torch.float64), dim=-1)
            params.rotation = quaternion_to_matrix(q)
        return params.to(dtype=dtype, device=device)

    def forward(self, params: HandParams, vertices: torch.Tensor | None = None) -> HandOutput:
        """The posed hands; with ``vertices`` (int64 indices), ``verts`` holds only those (for
        collision tests of a part: the same bits as the full output's rows, for less work)."""
        batch_dims = len(_checked_batch_shape(params))
        rotation = rotation_matrix(params.rotation, batch_dims)
        joints, frames = local_skeleton(params.angles, params.bone_lengths)
        verts = self.surface.vertices(joints, frames, vertices)
        mirror = self.side == "left"
        world = place(torch.cat([joints, verts], -2), rotation, params.translation, mirror, params.scale)
        return HandOutput(joints=world[..., :21, :], verts=world[..., 21:, :],
                          bone_frames=place_frames(frames, rotation, mirror))

    def fit(self, target_joints: torch.Tensor, iterations: int = 10) -> HandParams:
        """Inverse kinematics: parameters whose joints best match ``target_joints [..., 21, 3]``
        (an analytic solution refined by Levenberg-Marquardt, angles within limits). The rotation
        is returned as a matrix and the scale as 1 (it is folded into the bone lengths).

        ``target_joints`` must be floating point and finite, with coordinates below
        ``finfo(dtype).max ** (1/4)`` (4.3e9 in float32: the solver's products of four
        coordinates stay finite). An empty batch gives empty parameters."""
        ck = Checker("HandModel.fit")
        ck.tensor(target_joints, "target_joints", ("...", 21, 3))
        iterations = ck.integer(iterations, "iterations", minimum=0)
        limit = torch.finfo(target_joints.dtype).max ** 0.25
        if not bool((target_joints.abs() <= limit).all()):
            ck.fail(f"target_joints must be finite with coordinates below {limit:.2g} in magnitude "
                    f"({target_joints.dtype}), got NaN, Inf or larger values")
        batch = target_joints.shape[:-2]
        if batch.numel() == 0:  # nothing to fit (and vmap refuses empty batches)
            empty = self.rest_pose(batch, target_joints.dtype, target_joints.device)
            empty.rotation = torch.eye(3, dtype=target_joints.dtype, device=target_joints.device).expand(*batch, 3, 3)
            return empty
        angles, lengths, rot, trans = ik.fit(target_joints, self.limits, mirror=self.side == "left",
                                             iterations=iterations)
        return HandParams(rotation=rot, translation=trans, bone_lengths=lengths, angles=angles,
                          scale=torch.ones_like(trans[..., 0]))

    def to_trimesh(self, verts: torch.Tensor):
        """One hand's vertices ``[V, 3]`` as a ``trimesh.Trimesh`` with this model's faces."""
        import trimesh

        if verts.shape != (self.num_verts, 3):
            raise ValueError(f"to_trimesh: verts must have shape [{self.num_verts}, 3], got {list(verts.shape)}")
        return trimesh.Trimesh(verts.detach().cpu().double().numpy(), self.faces.cpu().numpy(), process=False)

    def export(self, verts: torch.Tensor, path: str | Path) -> None:
        """Writes one hand as PLY or OBJ (by the file extension)."""
        suffix = Path(path).suffix.lower()
        if suffix not in (".ply", ".obj"):
            raise ValueError(f"export: path must end in .ply or .obj, got {str(path)!r}")
        self.to_trimesh(verts).export(str(path))


def _checked_batch_shape(params: HandParams) -> torch.Size:
    """The batch shape ``...`` every field of ``params`` shares (see :class:`HandParams`)."""
    ck = Checker("HandModel")
    if not isinstance(params, HandParams):
        ck.fail(f"params must be HandParams, got {type(params).__name__}", TypeError)
    t = ck.tensor(params.translation, "translation", ("...", 3))
    ck.tensor(params.rotation, "rotation", [("...", 3), ("...", 6), ("...", 3, 3)], like=t)
    ck.tensor(params.bone_lengths, "bone_lengths", ("...", 20), like=t)
    ck.tensor(params.angles, "angles", ("...", 21), like=t)
    ck.tensor(params.scale, "scale", ("...",), like=t)
    return t.shape[:-1]


__all__ = ["HandModel", "HandParams", "HandOutput"]
