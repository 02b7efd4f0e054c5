"""Named poses (joint angles in degrees) and interacting two-hand configurations."""

from __future__ import annotations

import math

import torch

from handgeom.hand.model import HandModel, HandParams

_CURL = {"mcp_flex": 85, "pip_flex": 100, "dip_flex": 60}
_FOLDED_THUMB = {"thumb_cmc_flex": 35, "thumb_cmc_abd": 10, "thumb_mcp_flex": 45, "thumb_ip_flex": 40}


def _fingers(names, **joint):
    return {f"{f}_{j}": v for f in names for j, v in joint.items()}


POSES: dict[str, dict[str, float]] = {
    "open": {"index_mcp_abd": -8, "ring_mcp_abd": 8, "pinky_mcp_abd": 10},
    "fist": {**_fingers(("index", "middle", "ring", "pinky"), **_CURL), **_FOLDED_THUMB},
    # thumb tip on the index tip (thumb angles fitted to bring the two tips together)
    "pinch": {"index_mcp_flex": 40, "index_pip_flex": 55, "index_dip_flex": 30, "thumb_cmc_flex": 10,
              "thumb_cmc_abd": 26, "thumb_cmc_twist": 10, "thumb_mcp_flex": 18, "thumb_ip_flex": 51,
              **_fingers(("middle", "ring", "pinky"), mcp_flex=30, pip_flex=30, dip_flex=15)},
    "grip": {**_fingers(("index", "middle", "ring", "pinky"), mcp_flex=50, pip_flex=60, dip_flex=30),
             "thumb_cmc_abd": 30, "thumb_mcp_flex": 20},
    "point": {**_fingers(("middle", "ring", "pinky"), **_CURL), **_FOLDED_THUMB, "index_mcp_abd": -5},
}


def named_pose(model: HandModel, name: str, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> HandParams:
    """One of ``POSES`` for ``model``, at the origin."""
    if name not in POSES:
        raise ValueError(f"named_pose: unknown pose {name!r}; known: {sorted(POSES)}")
    return model.pose((), dtype, device, **POSES[name])


def _axis_angle(x: float, y: float, z: float) -> torch.Tensor:
    return torch.tensor([x, y, z], dtype=torch.float64) * (math.pi / 180)


# Two hands that interpenetrate: (right pose, right rotation/translation, left pose, left rotation/translation),
# rotations as axis-angle in degrees, translations in metres.
TWO_HAND_PRESETS = {
    # palms facing, fingers hooked around the other hand's
    "clasped": ("grip", (0, 0, 0), (0, 0, 0), "grip", (0, 180, 0), (0.0, 0.0, -0.03)),
    # fingers interleaved, palms facing, half-closed
    "interlocked": ("open", (0, 0, 0), (0, 0, 0), "open", (0, 180, 0), (0.006, 0.02, -0.018)),
    # the right fist closed around the left index finger
    "finger_grasp": ("fist", (0, 0, 0), (0, 0, 0), "point", (0, 0, 90), (0.12, 0.06, -0.01)),
}


def two_hand_preset(name: str, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> tuple[HandParams, HandParams]:
    """``(right, left)`` parameters of an interpenetrating pair from ``TWO_HAND_PRESETS``, for the
    coarse or fine right and left ``HandModel``s (parameters do not depend on resolution)."""
    if name not in TWO_HAND_PRESETS:
        raise ValueError(f"two_hand_preset: unknown preset {name!r}; known: {sorted(TWO_HAND_PRESETS)}")
    right_pose, right_rot, right_t, left_pose, left_rot, left_t = TWO_HAND_PRESETS[name]
    hands = []
    for side, pose, rot, t in (("right", right_pose, right_rot, right_t), ("left", left_pose, left_rot, left_t)):
        params = named_pose(HandModel(side), pose, torch.float64)
        params.rotation = _axis_angle(*rot)
        params.translation = torch.tensor(t, dtype=torch.float64)
        hands.append(params.to(dtype=dtype, device=device))
    return hands[0], hands[1]
