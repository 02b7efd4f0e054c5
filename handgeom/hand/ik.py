"""Inverse kinematics: hand parameters from 3D joints, batched.

An analytic solution first (bone lengths from joint distances, the global pose by Kabsch on the
rigid palm joints, each joint angle from its bone's direction in its parent's frame), then
damped Gauss-Newton (Levenberg-Marquardt) on all parameters with the angles kept within limits.
"""

from __future__ import annotations

import torch

from handgeom.hand.kinematics import _flex, _radial, _rest_chain_frames, axis_angle_to_matrix, forward_kinematics
from handgeom.hand.skeleton import BONES, CHAIN_ANGLES

_MIRROR = (-1.0, 1.0, 1.0)


def _kabsch(local: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotation R minimizing |R local_i + t - target_i|^2 over t, for ``[..., N, 3]`` point sets."""
    a = local - local.mean(-2, keepdim=True)
    b = target - target.mean(-2, keepdim=True)
    u, _, vh = torch.linalg.svd(a.transpose(-1, -2) @ b)
    d = torch.sign(torch.linalg.det(vh.transpose(-1, -2) @ u.transpose(-1, -2)))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return vh.transpose(-1, -2) @ fix @ u.transpose(-1, -2)


def analytic_fit(joints: torch.Tensor, limits: torch.Tensor):
    """Right-hand parameters (angles, lengths, rotation matrix, translation) from ``[..., 21, 3]``."""
    bones = torch.tensor(BONES, device=joints.device)
    lengths = (joints[..., bones[:, 1], :] - joints[..., bones[:, 0], :]).norm(dim=-1)
    rest = _rest_chain_frames(joints.dtype, joints.device)  # [5, 3, 3]
    chain = joints[..., 1:, :].unflatten(-2, (5, 4))  # [..., 5, 4, 3]
    palm_local = torch.cat([torch.zeros_like(rest[:1, :, 1]), rest[:, :, 1]], 0) * torch.cat(
        [torch.ones_like(lengths[..., :1]), lengths[..., 0::4]], -1).unsqueeze(-1)
    palm = torch.cat([joints[..., :1, :], chain[..., 0, :]], -2)
    rot = _kabsch(palm_local, palm)
    translation = palm.mean(-2) - (palm_local.mean(-2).unsqueeze(-2) @ rot.transpose(-1, -2)).squeeze(-2)

    def local_dir(frame, k):  # direction of chain bone k+1 in `frame` coordinates
        d = chain[..., k + 1, :] - chain[..., k, :]
        return (d.unsqueeze(-2) @ (rot.unsqueeze(-3) @ frame)).squeeze(-2)

    frame = rest.expand(*joints.shape[:-2], 5, 3, 3)
    d = local_dir(frame, 0)
    flex1 = torch.atan2(-d[..., 2], d[..., :2].norm(dim=-1))
    abd = torch.atan2(d[..., 0], d[..., 1])
    frame = frame @ _radial(abd) @ _flex(flex1)
    d = local_dir(frame, 1)
    flex2 = torch.atan2(-d[..., 2], d[..., 1])
    frame = frame @ _flex(flex2)
    d = local_dir(frame, 2)
    flex3 = torch.atan2(-d[..., 2], d[..., 1])
    per_chain = torch.stack([flex1, abd, torch.zeros_like(abd), flex2, flex3], -1)  # [..., 5, 5]
    angles = torch.zeros(*joints.shape[:-2], 21, dtype=joints.dtype, device=joints.device)
    for c, idx in enumerate(CHAIN_ANGLES):
        for k, i in enumerate(idx):
            if i >= 0:
                angles[..., i] = per_chain[..., c, k]
    angles = angles.clamp(limits[:, 0], limits[:, 1])
    return angles, lengths, rot, translation


def fit(target: torch.Tensor, limits: torch.Tensor, mirror: bool = False, iterations: int = 10,
        damping: float = 1e-6):
    """Parameters whose joints best match ``target [..., 21, 3]``; see the module docstring.

    Returns ``(angles [..., 21], bone_lengths [..., 20], rotation [..., 3, 3], translation [..., 3])``;
    ``target`` is checked by :meth:`handgeom.hand.HandModel.fit`.
    """
    batch_shape = target.shape[:-2]
    flip = target.new_tensor(_MIRROR)
    right = (target * flip if mirror else target).reshape(-1, 21, 3)
    limits = limits.to(target)
    angles, lengths, rot0, trans = analytic_fit(right, limits)

    def joints_of(x, r0):  # x = [rotation delta (3), translation (3), angles (21), lengths (20)]
        rot = r0 @ axis_angle_to_matrix(x[:3])
        return forward_kinematics(x[6:27], x[27:], rot, x[3:6])[0].reshape(-1)

    x = torch.cat([torch.zeros_like(trans), trans, angles, lengths], -1)  # [N, 47]
    jac = torch.func.vmap(torch.func.jacfwd(joints_of))
    residual = torch.func.vmap(joints_of)(x, rot0) - right.reshape(-1, 63)
    lam = torch.full_like(x[:, :1], 1e-3)
    for _ in range(iterations):
        j = jac(x, rot0)  # [N, 63, 47]
        jtj = j.transpose(1, 2) @ j
        g = (j.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(damping)
        step = torch.linalg.solve(jtj + torch.diag_embed(lam * diag), -g)
        candidate = x + step
        candidate[:, 6:27] = candidate[:, 6:27].clamp(limits[:, 0], limits[:, 1])
        new_residual = torch.func.vmap(joints_of)(candidate, rot0) - right.reshape(-1, 63)
        better = (new_residual.square().sum(-1) < residual.square().sum(-1)).unsqueeze(-1)
        x = torch.where(better, candidate, x)
        residual = torch.where(better, new_residual, residual)
        lam = torch.where(better, lam / 10, lam * 10)
    rot = rot0 @ axis_angle_to_matrix(x[:, :3])
    trans = x[:, 3:6]
    if mirror:  # fitted the mirrored targets with the right hand: conjugate back
        rot = flip[:, None] * rot * flip
        trans = trans * flip
    return (x[:, 6:27].reshape(*batch_shape, 21), x[:, 27:].reshape(*batch_shape, 20),
            rot.reshape(*batch_shape, 3, 3), trans.reshape(*batch_shape, 3))
