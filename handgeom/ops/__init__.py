"""handgeom's operators. Each op family lives in its own module; all are re-exported here."""

from handgeom.ops.projection import bone_plane_projection, sample_joint_features

__all__ = ["bone_plane_projection", "sample_joint_features"]
