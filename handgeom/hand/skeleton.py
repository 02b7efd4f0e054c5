"""The 21-joint hand skeleton: joint order, bones, joint-order converters, default bone lengths,
joint angles and their limits.

Joint order (the OpenPose order): wrist 0; thumb 1-4 (CMC, MCP, IP, tip); index 5-8 (MCP, PIP,
DIP, tip); middle 9-12; ring 13-16; pinky 17-20. Each finger is a chain of four bones from the
wrist, so bone ``4 f + k`` joins joint ``0 if k == 0 else 4 f + k`` to joint ``4 f + k + 1``.

Hand frame (right hand): x radial (towards the thumb), y distal (towards the fingers), z dorsal
(out of the back of the hand); metres. The left hand is its mirror image (x negated).
"""

from __future__ import annotations

import math

import torch

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
_SEGMENTS = {"thumb": ("cmc", "mcp", "ip", "tip"), **{f: ("mcp", "pip", "dip", "tip") for f in FINGERS[1:]}}
JOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(f"{f}_{s}" for f in FINGERS for s in _SEGMENTS[f])
BONES: tuple[tuple[int, int], ...] = tuple(
    (0 if k == 0 else 4 * f + k, 4 * f + k + 1) for f in range(5) for k in range(4)
)
PARENTS: tuple[int, ...] = (-1,) + tuple(parent for parent, _ in BONES)
_BONE_INDEX = torch.tensor(BONES)


def bone_ends(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, end)`` ``[..., 20, 3]``: each bone's parent and child joint, for ``joints [..., 21, 3]``."""
    return joints[..., _BONE_INDEX[:, 0], :], joints[..., _BONE_INDEX[:, 1], :]

# Joint orders of other datasets: OURS[j] = theirs[TO_OURS[name][j]].
TO_OURS = {
    "openpose": list(range(21)),
    # InterHand2.6M, one hand: per finger tip to root (thumb, index, middle, ring, pinky), wrist last.
    "interhand": [20] + [4 * f + 3 - k for f in range(5) for k in range(4)],
    # MANO's 16 joints (wrist; index, middle, pinky, ring, thumb, three each) + 5 tips
    # (thumb, index, middle, ring, pinky), as in manopth.
    "mano": [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20],
    # MHP (Gomez-Donoso et al. 2017): index, middle, pinky, ring, thumb as (PIP, MCP, DIP, tip), the
    # thumb's base first of its four; index 20 is the palm position, standing in for the wrist.
    "mhp": [20, 17, 16, 18, 19, 1, 0, 2, 3, 5, 4, 6, 7, 13, 12, 14, 15, 9, 8, 10, 11],
}


def convert_joints(joints: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Reorders ``joints [..., 21, D]`` from joint order ``src`` to ``dst`` (``"openpose"`` =
    handgeom's order, ``"interhand"``, ``"mano"``, ``"mhp"``)."""
    for order in (src, dst):
        if order not in TO_OURS:
            raise ValueError(f"convert_joints: unknown joint order {order!r}; known: {sorted(TO_OURS)}")
    if joints.shape[-2] != 21:
        raise ValueError(f"convert_joints: joints must have shape [..., 21, D], got {list(joints.shape)}")
    ours = joints[..., TO_OURS[src], :]
    return ours[..., _inverse(TO_OURS[dst]), :]


def _inverse(perm: list[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


# Default bone lengths in metres: phalanx and metacarpal lengths as fractions of hand length from
# Buchholz, Armstrong & Goldstein (1992), "Anthropometric data for describing the kinematics of
# the human hand", Ergonomics 35(3), times an adult hand length of 0.18 m. The wrist-to-thumb-CMC
# segment (the carpus, not in that table) is an estimate.
HAND_LENGTH = 0.18
_RATIOS = {  # per finger: wrist->first joint, then the three phalanges (or metacarpal + 2 for the thumb)
    "thumb": (0.13, 0.251, 0.196, 0.158),
    "index": (0.374, 0.265, 0.143, 0.097),
    "middle": (0.373, 0.277, 0.170, 0.108),
    "ring": (0.336, 0.259, 0.165, 0.107),
    "pinky": (0.295, 0.206, 0.117, 0.093),
}
DEFAULT_BONE_LENGTHS: tuple[float, ...] = tuple(HAND_LENGTH * r for f in FINGERS for r in _RATIOS[f])

# Joint angles (radians), 21 of them. Per finger: MCP flexion and abduction, PIP and DIP flexion.
# Thumb: CMC flexion, abduction and twist (fixed at 0 in the two-DOF thumb), MCP and IP flexion.
# Flexion bends towards the palm; abduction turns radially (towards the thumb side).
ANGLE_NAMES: tuple[str, ...] = ("thumb_cmc_flex", "thumb_cmc_abd", "thumb_cmc_twist", "thumb_mcp_flex",
                                "thumb_ip_flex") + tuple(
    f"{f}_{j}" for f in FINGERS[1:] for j in ("mcp_flex", "mcp_abd", "pip_flex", "dip_flex"))
_DEG = math.pi / 180
# Ranges of motion in degrees, rounded from the clinical literature (e.g. Hume et al. 1990,
# "Functional range of motion of the joints of the hand"); abduction sign flips per finger side.
_LIMITS_DEG = {
    "thumb_cmc_flex": (-15, 50), "thumb_cmc_abd": (-10, 50), "thumb_cmc_twist": (-20, 20),
    "thumb_mcp_flex": (-10, 60), "thumb_ip_flex": (-15, 80),
    **{f"{f}_mcp_flex": (-20, 90) for f in FINGERS[1:]},
    **{f"{f}_pip_flex": (0, 105) for f in FINGERS[1:]},
    **{f"{f}_dip_flex": (0, 80) for f in FINGERS[1:]},
    "index_mcp_abd": (-10, 20), "middle_mcp_abd": (-15, 15), "ring_mcp_abd": (-15, 10),
    "pinky_mcp_abd": (-25, 10),
}


def angle_limits(thumb_dof: int = 3) -> torch.Tensor:
    """``[21, 2]`` (low, high) radians; ``thumb_dof=2`` pins the thumb CMC twist at 0."""
    if thumb_dof not in (2, 3):
        raise ValueError(f"angle_limits: thumb_dof must be 2 or 3, got {thumb_dof}")
    limits = torch.tensor([_LIMITS_DEG[n] for n in ANGLE_NAMES], dtype=torch.float64) * _DEG
    if thumb_dof == 2:
        limits[ANGLE_NAMES.index("thumb_cmc_twist")] = 0.0
    return limits


# Angle layout per chain, [5 chains, 5]: (base flex, base abd, base twist, 2nd flex, 3rd flex);
# -1 marks a finger's (absent) twist.
CHAIN_ANGLES: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3, 4),) + tuple(
    (5 + 4 * f, 6 + 4 * f, -1, 7 + 4 * f, 8 + 4 * f) for f in range(4))
