// Schemas of every handgeom operator, in one place. Implementations are registered per device
// by each op family (csrc/<family>/<op>.cpp); autograd and fake tensors by handgeom/ops/.
#include <torch/library.h>

TORCH_LIBRARY(handgeom, m) {
  // Multi-plane joint-to-feature projection (DIR, ICCV 2023).
  m.def("bone_plane_projection(Tensor joint_uv, Tensor joint_feat, Tensor bones, int height, "
        "int width, float radius, str profile, float sigma) -> Tensor");
  m.def("bone_plane_projection_backward(Tensor grad_out, Tensor joint_uv, Tensor joint_feat, "
        "Tensor bones, int height, int width, float radius, str profile, float sigma) "
        "-> (Tensor, Tensor)");
  // The projection convolved with a k x k kernel, without building the planes.
  m.def("bone_plane_conv(Tensor joint_uv, Tensor joint_feat, Tensor bones, Tensor weight, Tensor? bias, "
        "int height, int width, float radius, str profile, float sigma) -> Tensor");
  m.def("bone_plane_conv_backward(Tensor grad_out, Tensor joint_uv, Tensor joint_feat, Tensor bones, "
        "Tensor weight, int height, int width, float radius, str profile, float sigma) -> (Tensor, Tensor, Tensor)");

  // Batched triangle-mesh queries over a per-mesh BVH (csrc/mesh/).
  m.def("mesh_bvh(Tensor verts, Tensor faces, Tensor? order) -> (Tensor order, Tensor tris, Tensor boxes)");
  m.def("mesh_inside(Tensor points, Tensor order, Tensor tris, Tensor boxes, int n_rays) -> Tensor");
  m.def("mesh_ray_hit(Tensor origins, Tensor dirs, Tensor order, Tensor tris, Tensor boxes) "
        "-> (Tensor t, Tensor face, Tensor bary)");
  m.def("mesh_signed_distance(Tensor points, Tensor verts, Tensor faces, Tensor order, Tensor tris, "
        "Tensor boxes) -> (Tensor sdf, Tensor face, Tensor closest)");
  m.def("mesh_penetration(Tensor points, Tensor verts, Tensor faces, Tensor order, Tensor tris, "
        "Tensor boxes, bool squared) -> (Tensor loss, Tensor face)");
  m.def("mesh_distance_backward(Tensor coef, Tensor points, Tensor verts, Tensor faces, Tensor face) "
        "-> (Tensor grad_points, Tensor grad_verts)");

  // Per-edge 2D graph convolution, direct method (SIA-GCN; csrc/edge_conv/).
  m.def("edge_conv2d(Tensor x, Tensor weight, Tensor edges, Tensor? bias, bool mean) -> Tensor");
  m.def("edge_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor edges, bool mean) "
        "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");

  // Conditioned (FiLM-modulated) residual MLP: the occupancy decoder in eval mode (csrc/occupancy/).
  m.def("conditioned_mlp(Tensor inputs, Tensor w_in, Tensor b_in, Tensor w_hidden, Tensor b_hidden, "
        "Tensor w_out, Tensor b_out, Tensor scale, Tensor shift) -> Tensor");
  m.def("conditioned_mlp_backward(Tensor grad_logits, Tensor inputs, Tensor w_in, Tensor b_in, "
        "Tensor w_hidden, Tensor b_hidden, Tensor w_out, Tensor b_out, Tensor scale, Tensor shift) "
        "-> (Tensor grad_inputs, Tensor grad_scale, Tensor grad_shift)");
  // Its weighted occupancy penalty per sample with the gradients, in one pass.
  m.def("conditioned_mlp_penalty(Tensor inputs, Tensor point_weights, Tensor w_in, Tensor b_in, Tensor w_hidden, "
        "Tensor b_hidden, Tensor w_out, Tensor b_out, Tensor scale, Tensor shift, bool truncate) "
        "-> (Tensor penalty, Tensor grad_inputs, Tensor grad_scale, Tensor grad_shift)");
}
