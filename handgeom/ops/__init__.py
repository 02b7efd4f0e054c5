"""handgeom's operators. Each op family lives in its own module; all are re-exported here."""

from handgeom.ops.edge_conv import edge_conv2d
from handgeom.ops.mesh import MeshBVH, penetration_loss, points_inside_mesh, ray_mesh_intersect, signed_distance
from handgeom.ops.occupancy import conditioned_mlp, conditioned_mlp_penalty
from handgeom.ops.projection import bone_plane_projection, sample_joint_features

__all__ = ["edge_conv2d", "bone_plane_projection", "sample_joint_features", "MeshBVH", "points_inside_mesh", "ray_mesh_intersect",
           "signed_distance", "penetration_loss", "conditioned_mlp", "conditioned_mlp_penalty"]
