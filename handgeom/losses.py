"""Losses that compose handgeom's ops: the occupancy-network hand-hand intersection loss.

(The exact signed-distance penetration loss is the op :func:`handgeom.ops.penetration_loss`.)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch

from handgeom.hand.skeleton import bone_ends
from handgeom.models.occupancy import HAND_CULL_MARGIN, HandOccupancyNet

__all__ = ["intersection_loss", "hand_query_points", "mirror", "default_occupancy_net"]

_DENSE_FRACTIONS = torch.arange(1, 6) / 6  # 5 points inside each bone


def mirror(x: torch.Tensor) -> torch.Tensor:
    """``x [..., 3]`` with its x coordinate negated: a left hand becomes a right hand."""
    return x * x.new_tensor([-1.0, 1.0, 1.0])


def hand_query_points(joints: torch.Tensor, points: Literal["sparse", "dense"]) -> torch.Tensor:
    """The points of a hand tested for intersection: its 21 joints (``"sparse"``), or the joints
    plus 5 evenly spaced points inside each of the 20 bones (``"dense"``, 121 points)."""
    if points == "sparse":
        return joints
    start, end = bone_ends(joints)  # [B, 20, 3]
    f = _DENSE_FRACTIONS.to(joints)[None, None, :, None]
    on_bones = start[:, :, None] + f * (end - start)[:, :, None]
    return torch.cat([joints, on_bones.flatten(1, 2)], 1)


@lru_cache(maxsize=4)
def default_occupancy_net(device: str = "cpu") -> HandOccupancyNet:
    """The shipped :meth:`HandOccupancyNet.pretrained`, loaded once per device."""
    return HandOccupancyNet.pretrained(device)


def intersection_loss(joints_left: torch.Tensor, joints_right: torch.Tensor, net: HandOccupancyNet | None = None,
                      points: Literal["sparse", "dense", "mesh"] = "sparse", both: bool = True,
                      truncate: bool = False, verts_left: torch.Tensor | None = None,
                      verts_right: torch.Tensor | None = None, cull_margin: float | None = HAND_CULL_MARGIN,
                      reduction: Literal["mean", "sum", "none"] = "mean") -> torch.Tensor:
    r"""Hand-hand intersection loss of "Two Hands Are Better Than One":

    .. math::
        \sum_i O(x^L_i \mid X^R)^2 + \alpha \sum_i O(\mathrm{flip}(x^R)_i \mid \mathrm{flip}(X^L))^2

    with :math:`O` the occupancy probability of a right hand (the network knows only right
    hands: the mirrored right hand's points are tested against the mirrored left hand) and
    :math:`\alpha` = 1 if ``both`` else 0.

    Args:
        joints_left, joints_right: ``[B, 21, 3]`` metres, one world frame.
        net: a :class:`HandOccupancyNet`; default the shipped one (frozen, eval mode: each sum
            and its gradients come from one fused pass, :func:`handgeom.ops.conditioned_mlp_penalty`).
        points: the tested points: ``"sparse"`` the 21 joints, ``"dense"`` joints and 5 points
            per bone (121), ``"mesh"`` the hand meshes' vertices ``verts_left`` / ``verts_right``
            ``[B, V, 3]``.
        truncate: keep only probabilities above 0.5 (the paper's variant).
        cull_margin: points farther than this (metres) outside the other hand's joint box count as
            outside without querying the network (see ``HandOccupancyNet.forward``): the default
            culls no point of the hand model's volume, and it bounds the query to where the
            network was trained (its box grown by 1 cm, and a 40 cm cube around it, sparsely);
            ``None`` queries the network everywhere.
        reduction: over the batch, of the per-pair sums.

    Returns:
        The loss (``[B]`` for ``reduction="none"``); differentiable in both hands' joints (and
        vertices).
    """
    if joints_left.dim() != 3 or joints_left.shape[1:] != (21, 3) or joints_right.shape != joints_left.shape:
        raise ValueError("intersection_loss: joints_left and joints_right must both have shape [B, 21, 3], got "
                         f"{list(joints_left.shape)} and {list(joints_right.shape)}")
    if points not in ("sparse", "dense", "mesh"):
        raise ValueError(f"intersection_loss: points must be 'sparse', 'dense' or 'mesh', got {points!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"intersection_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if net is None:
        net = default_occupancy_net(str(joints_left.device))

    def tested(joints, verts, name):
        if points != "mesh":
            return hand_query_points(joints, points)
        if verts is None or verts.dim() != 3 or verts.shape[0] != joints.shape[0] or verts.shape[-1] != 3:
            raise ValueError(f"intersection_loss: points='mesh' needs {name} of shape [B, V, 3]")
        return verts

    loss = net.penalty(tested(joints_left, verts_left, "verts_left"), joints_right, cull_margin, truncate)
    if both:
        loss = loss + net.penalty(mirror(tested(joints_right, verts_right, "verts_right")), mirror(joints_left),
                                  cull_margin, truncate)
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()
