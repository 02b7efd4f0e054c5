"""Rotation helpers and forward kinematics of the 21-joint hand (batched, differentiable)."""

from __future__ import annotations

import functools
import math

import torch

from handgeom.hand.skeleton import CHAIN_ANGLES


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, ``[..., 3] -> [..., 3, 3]``, smooth at zero (Taylor terms)."""
    theta2 = (v * v).sum(-1, keepdim=True).unsqueeze(-1)  # [..., 1, 1]
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``[..., 4]`` (w, x, y, z) -> rotation matrices ``[..., 3, 3]``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Zhou et al. (CVPR 2019) continuous 6D rotation: Gram-Schmidt on two columns. Two zero or
    parallel vectors span no rotation: NaN (not a matrix that collapses the hand to a point)."""
    unit = lambda v: v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # 0 / 0 = NaN
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = unit(a1)
    b2 = unit(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2)], dim=-1)


def rotation_matrix(rot: torch.Tensor, batch_dims: int | None = None) -> torch.Tensor:
    """Global rotation as axis-angle ``[..., 3]``, 6D ``[..., 6]`` or a matrix ``[..., 3, 3]``.
    ``batch_dims``: the number of batch dimensions, which tells a batch of axis-angles whose last
    batch size is 3 from one matrix; without it, ``[..., 3, 3]`` is a matrix."""
    if rot.shape[-2:] == (3, 3) and (batch_dims is None or rot.dim() == batch_dims + 2):
        return rot
    if rot.shape[-1] == 3:
        return axis_angle_to_matrix(rot)
    if rot.shape[-1] == 6:
        return rotation_6d_to_matrix(rot)
    raise ValueError(f"rotation must be axis-angle [..., 3], 6D [..., 6] or [..., 3, 3], got {list(rot.shape)}")


def _elementary_layout(axis: int) -> tuple[int, ...]:
    """Where each of the 9 entries of a rotation about ``axis`` comes from in ``(cos, -sin, sin, 1, 0)``."""
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = [[3 if r == col else 4 for col in range(3)] for r in range(3)]
    m[i][i], m[i][j], m[j][i], m[j][j] = 0, 1, 2, 0
    return tuple(v for row in m for v in row)


_ELEMENTARY = [_elementary_layout(axis) for axis in range(3)]


def _elementary(angle: torch.Tensor, axis: int) -> torch.Tensor:
    """Rotation by ``angle`` about coordinate axis ``axis``, ``[...] -> [..., 3, 3]`` (one gather
    from the five distinct entries: the hand model builds 8 of these per evaluation)."""
    c, s = torch.cos(angle), torch.sin(angle)
    entries = torch.stack([c, -s, s, torch.ones_like(c), torch.zeros_like(c)], -1)
    return entries[..., _ELEMENTARY[axis]].unflatten(-1, (3, 3))


@functools.lru_cache(maxsize=None)
def _rest_chain_frames(dtype, device) -> torch.Tensor:
    """[5, 3, 3]: the rest frame of each finger's chain base, columns (x, y = bone, z = dorsal);
    a constant, made once per dtype and device (outside inference mode, so that autograd may use it)."""
    with torch.inference_mode(False):
        return _make_rest_chain_frames().to(dtype=dtype, device=device)


def _make_rest_chain_frames() -> torch.Tensor:
    deg = math.pi / 180
    spread = torch.tensor([40.0, 15.0, 0.0, -14.0, -28.0], dtype=torch.float64) * deg
    frames = _radial(spread)  # fingers: turned radially about the dorsal axis
    # thumb: also tilted 15 deg palmar and pronated 70 deg about its own axis
    tilt_pronate = torch.tensor([-15.0, 70.0], dtype=torch.float64) * deg
    frames[0] = frames[0] @ _elementary(tilt_pronate[0], 0) @ _elementary(tilt_pronate[1], 1)
    return frames


def _radial(angle: torch.Tensor) -> torch.Tensor:
    """Turn by ``angle`` towards +x (radial) about the dorsal axis z."""
    return _elementary(-angle, 2)


def _flex(angle: torch.Tensor) -> torch.Tensor:
    """Bend by ``angle`` towards -z (palmar) about the radial axis x."""
    return _elementary(-angle, 0)


@functools.lru_cache(maxsize=None)
def _index(values: tuple, device) -> torch.Tensor:
    """A constant index tensor on ``device``, made once (not on every evaluation)."""
    return torch.tensor(values, device=device)


def chain_angles(angles: torch.Tensor) -> torch.Tensor:
    """``[..., 21] -> [..., 5, 5]`` (base flex, base abd, base twist, 2nd flex, 3rd flex)."""
    padded = torch.cat([angles, torch.zeros_like(angles[..., :1])], -1)  # index -1 -> 0
    return padded[..., _index(CHAIN_ANGLES, angles.device)]


def _chain_layout() -> tuple[tuple[int, ...], ...]:
    """For each of a chain's 5 angles, where the 9 entries of its rotation come from in the 25
    values ``(cos, -sin, sin, 1, 0)`` of the 5 angles: the flexions turn about x by ``-angle``
    (:func:`_flex`), the abduction about z by ``-angle`` (:func:`_radial`), the twist about y by
    ``+angle``. A rotation by ``-angle`` swaps ``-sin`` and ``sin``."""
    axes, signs = (0, 2, 1, 0, 0), (-1, -1, 1, -1, -1)
    swap = {1: 2, 2: 1}
    return tuple(tuple(5 * slot + (swap.get(e, e) if sign < 0 else e) for e in _ELEMENTARY[axis])
                 for slot, (axis, sign) in enumerate(zip(axes, signs)))


_CHAIN_LAYOUT = _chain_layout()


def local_skeleton(angles: torch.Tensor, bone_lengths: torch.Tensor):
    """The right hand in its own frame (wrist at the origin).

    Args:
        angles: ``[..., 21]`` joint angles (see ``skeleton.ANGLE_NAMES``).
        bone_lengths: ``[..., 20]`` metres, in ``skeleton.BONES`` order.

    Returns:
        ``joints [..., 21, 3]`` and ``bone_frames [..., 20, 3, 3]``: each bone's frame (columns
        x radial, y along the bone, z dorsal), whose origin is the bone's parent joint.
    """
    rest = _rest_chain_frames(angles.dtype, angles.device)  # [5, 3, 3]
    # the 25 elementary rotations of the 5 chains from one cos, one sin and one gather (the model
    # is evaluated in many small batches, where the number of torch calls is its cost)
    a = chain_angles(angles)  # [..., 5, 5]
    c, s = torch.cos(a), torch.sin(a)
    entries = torch.stack([c, -s, s, torch.ones_like(c), torch.zeros_like(c)], -1).flatten(-2)  # [..., 5, 25]
    flex1, abd, twist, flex2, flex3 = entries[..., _index(_CHAIN_LAYOUT, angles.device)].unflatten(-1, (3, 3)).unbind(-3)
    f1 = rest @ abd @ flex1 @ twist
    f2 = f1 @ flex2
    f3 = f2 @ flex3
    frames = torch.stack([rest.expand_as(f1), f1, f2, f3], -3)  # [..., 5, 4, 3, 3]
    # each chain's joints: the running sum of its bones, each along its frame's y axis
    chain_joints = (frames[..., 1] * bone_lengths.unflatten(-1, (5, 4)).unsqueeze(-1)).cumsum(-2)  # [..., 5, 4, 3]
    joints = torch.cat([torch.zeros_like(chain_joints[..., 0, :1, :]), chain_joints.flatten(-3, -2)], -2)
    return joints, frames.flatten(-4, -3)  # [..., 21, 3], [..., 20, 3, 3]


def place(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, mirror: bool,
          scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Hand-frame points ``[..., N, 3]`` to the world: scaled about the wrist, mirrored (x
    negated) for the left hand, rotated (axis-angle, 6D or matrix) and translated."""
    factor = scale.unsqueeze(-1).unsqueeze(-1) if isinstance(scale, torch.Tensor) else scale
    if mirror:
        factor = factor * points.new_tensor([-1.0, 1.0, 1.0])[:, None]
    # R p written out in products and sums over coordinate rows [..., N]: a hand's bits never
    # depend on its batch (a batched 3 x 3 matrix product rounds by the batch and costs ~20 µs a
    # hand), and each operation is a contiguous loop (over [..., N, 3] the inner dimension of 3
    # ran unvectorized: 3.7 against 1.4 ms for 256 hands)
    x, y, z = (points.transpose(-1, -2).contiguous() * factor).unbind(-2)
    R = rotation_matrix(rotation)
    return torch.stack([x * R[..., i, 0, None] + y * R[..., i, 1, None] + z * R[..., i, 2, None] + translation[..., i, None]
                        for i in range(3)], -1)


def forward_kinematics(angles: torch.Tensor, bone_lengths: torch.Tensor, rotation: torch.Tensor,
                       translation: torch.Tensor, mirror: bool = False):
    """World joints ``[..., 21, 3]`` and bone frames ``[..., 20, 3, 3]`` (see local_skeleton)."""
    joints, frames = local_skeleton(angles, bone_lengths)
    return place(joints, rotation, translation, mirror), place_frames(frames, rotation, mirror)


def place_frames(frames: torch.Tensor, rotation: torch.Tensor, mirror: bool) -> torch.Tensor:
    """Hand-frame bone frames ``[..., 20, 3, 3]`` to the world. A left hand's frames are the right
    hand's, mirrored, with the x axis negated again so that they stay rotations (x points ulnar)."""
    if mirror:
        flip = frames.new_tensor([-1.0, 1.0, 1.0])
        frames = flip[:, None] * frames * flip
    return rotation_matrix(rotation).unsqueeze(-3) @ frames
