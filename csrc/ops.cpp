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
}
