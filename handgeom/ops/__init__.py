"""handgeom's operators. Each op family lives in its own module; all are re-exported here."""

from handgeom.ops.edge_conv import edge_conv2d
from handgeom.ops.mesh import (MeshBVH, penetration_loss, points_inside_mesh, ray_mesh_intersect, signed_distance,
                              surface_points)
from handgeom.ops.occupancy import conditioned_mlp, conditioned_mlp_penalty
from handgeom.ops.projection import bone_plane_conv, bone_plane_projection, sample_joint_features

__all__ = ["edge_conv2d", "bone_plane_projection", "bone_plane_conv", "sample_joint_features", "MeshBVH", "points_inside_mesh", "ray_mesh_intersect",
           "signed_distance", "penetration_loss", "surface_points", "conditioned_mlp", "conditioned_mlp_penalty"]

import torch as _torch

# Under torch.autocast every op runs in float32 (float64 stays float64): reduced-precision inputs
# are cast up first, since the kernels are written for float32/float64 and the geometric
# predicates need at least float32.
for _op in ("bone_plane_projection", "bone_plane_projection_backward", "bone_plane_conv", "bone_plane_conv_backward",
            "mesh_bvh", "mesh_inside", "mesh_ray_hit",
            "mesh_signed_distance", "mesh_penetration", "mesh_distance_backward", "edge_conv2d", "edge_conv2d_backward",
            "conditioned_mlp",
            "conditioned_mlp_backward", "conditioned_mlp_penalty"):
    for _device in ("cpu", "cuda"):
        _torch.library.register_autocast(f"handgeom::{_op}", _device, _torch.float32)
