"""The hand model: a 21-joint skeleton with anatomical joint angles and a watertight
skeleton-driven surface (no licensed weights), forward and inverse kinematics, poses."""

from handgeom.hand.model import HandModel, HandOutput, HandParams
from handgeom.hand.poses import POSES, TWO_HAND_PRESETS, named_pose, two_hand_preset
from handgeom.hand.skeleton import (ANGLE_NAMES, BONES, DEFAULT_BONE_LENGTHS, JOINT_NAMES, PARENTS,
                                    angle_limits, convert_joints)

__all__ = ["HandModel", "HandOutput", "HandParams", "POSES", "TWO_HAND_PRESETS", "named_pose", "two_hand_preset",
           "ANGLE_NAMES", "BONES", "DEFAULT_BONE_LENGTHS", "JOINT_NAMES", "PARENTS", "angle_limits",
           "convert_joints"]
