// Input validation and dispatcher registration of the conditioned MLP.
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "occupancy/occupancy.h"

namespace handgeom::occupancy {
namespace {

struct Args {
  Tensor inputs, weights, scale, shift;  // contiguous; weights packed as Weights<T> reads them
};

Args validate(const Checker& ck, const Tensor& inputs, const Tensor& w_in, const Tensor& b_in, const Tensor& w_hidden,
              const Tensor& b_hidden, const Tensor& w_out, const Tensor& b_out, const Tensor& scale,
              const Tensor& shift) {
  ck.shape(inputs, "inputs", {-1, -1, -1});
  ck.floating(inputs, "inputs");
  ck.shape(w_hidden, "w_hidden", {-1, -1, -1});
  const int64_t L = w_hidden.size(0), H = w_hidden.size(1), D = inputs.size(2);
  ck.check(H >= 1 && H <= kMaxWidth, "the hidden width (w_hidden.shape[1]) must be in [1, ", kMaxWidth, "], got ", H);
  ck.check(L >= 2 && L <= kMaxLayers && L % 2 == 0, "the number of hidden layers (w_hidden.shape[0]) must be even and in [2, ",
           kMaxLayers, "] (residual blocks of two), got ", L);
  ck.check(D >= 1 && D <= kMaxInputs, "the number of input features (inputs.shape[2]) must be in [1, ", kMaxInputs,
           "], got ", D);
  ck.shape(w_hidden, "w_hidden", {L, H, H});
  ck.shape(w_in, "w_in", {H, D});
  ck.shape(b_in, "b_in", {H});
  ck.shape(b_hidden, "b_hidden", {L, H});
  ck.shape(w_out, "w_out", {H});
  ck.shape(b_out, "b_out", {1});
  ck.shape(scale, "scale", {inputs.size(0), L, H});
  ck.shape(shift, "shift", {inputs.size(0), L, H});
  const std::pair<const Tensor*, const char*> others[] = {{&w_in, "w_in"},         {&b_in, "b_in"},
                                                          {&w_hidden, "w_hidden"}, {&b_hidden, "b_hidden"},
                                                          {&w_out, "w_out"},       {&b_out, "b_out"},
                                                          {&scale, "scale"},       {&shift, "shift"}};
  for (const auto& [t, name] : others) {
    ck.same_dtype(*t, name, inputs, "inputs");
    ck.same_device(*t, name, inputs, "inputs");
  }
  const Tensor weights = at::cat({w_in.reshape(-1), b_in, w_hidden.reshape(-1), b_hidden.reshape(-1), w_out, b_out});
  return {inputs.contiguous(), weights, scale.contiguous(), shift.contiguous()};
}

template <DeviceOps (*ops)()>
Tensor forward_op(const Tensor& inputs, const Tensor& w_in, const Tensor& b_in, const Tensor& w_hidden,
                  const Tensor& b_hidden, const Tensor& w_out, const Tensor& b_out, const Tensor& scale,
                  const Tensor& shift) {
  const Args a = validate(Checker("conditioned_mlp"), inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift);
  const c10::DeviceGuard guard(inputs.device());
  return ops().forward(a.inputs, a.weights, a.scale, a.shift);
}

// The reverse pass behind both ops below: seed [B, N] is the gradient of the logits, or the
// penalty's point weights (truncate set).
template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor, Tensor> reverse_op(const Checker& ck, const Tensor& seed, const char* seed_name,
                                                      const Tensor& inputs, const Tensor& w_in, const Tensor& b_in,
                                                      const Tensor& w_hidden, const Tensor& b_hidden,
                                                      const Tensor& w_out, const Tensor& b_out, const Tensor& scale,
                                                      const Tensor& shift, std::optional<bool> truncate) {
  const Args a = validate(ck, inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift);
  ck.shape(seed, seed_name, {inputs.size(0), inputs.size(1)});
  ck.same_dtype(seed, seed_name, inputs, "inputs");
  ck.same_device(seed, seed_name, inputs, "inputs");
  const c10::DeviceGuard guard(inputs.device());
  return ops().reverse(seed.contiguous(), a.inputs, a.weights, a.scale, a.shift, truncate);
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor> backward_op(const Tensor& grad_logits, const Tensor& inputs, const Tensor& w_in,
                                               const Tensor& b_in, const Tensor& w_hidden, const Tensor& b_hidden,
                                               const Tensor& w_out, const Tensor& b_out, const Tensor& scale,
                                               const Tensor& shift) {
  const auto [grad_inputs, grad_scale, grad_shift, none] =
      reverse_op<ops>(Checker("conditioned_mlp_backward"), grad_logits, "grad_logits", inputs, w_in, b_in, w_hidden,
                      b_hidden, w_out, b_out, scale, shift, std::nullopt);
  return {grad_inputs, grad_scale, grad_shift};
}

template <DeviceOps (*ops)()>
std::tuple<Tensor, Tensor, Tensor, Tensor> penalty_op(const Tensor& inputs, const Tensor& point_weights,
                                                      const Tensor& w_in, const Tensor& b_in, const Tensor& w_hidden,
                                                      const Tensor& b_hidden, const Tensor& w_out, const Tensor& b_out,
                                                      const Tensor& scale, const Tensor& shift, bool truncate) {
  const auto [grad_inputs, grad_scale, grad_shift, penalty] =
      reverse_op<ops>(Checker("conditioned_mlp_penalty"), point_weights, "point_weights", inputs, w_in, b_in, w_hidden,
                      b_hidden, w_out, b_out, scale, shift, truncate);
  return {penalty, grad_inputs, grad_scale, grad_shift};
}

}  // namespace

TORCH_LIBRARY_IMPL(handgeom, CPU, m) {
  m.impl("conditioned_mlp", &forward_op<cpu_ops>);
  m.impl("conditioned_mlp_backward", &backward_op<cpu_ops>);
  m.impl("conditioned_mlp_penalty", &penalty_op<cpu_ops>);
}

#ifdef HANDGEOM_WITH_CUDA
TORCH_LIBRARY_IMPL(handgeom, CUDA, m) {
  m.impl("conditioned_mlp", &forward_op<cuda_ops>);
  m.impl("conditioned_mlp_backward", &backward_op<cuda_ops>);
  m.impl("conditioned_mlp_penalty", &penalty_op<cuda_ops>);
}
#endif

}  // namespace handgeom::occupancy
