// Host side of the conditioned MLP: launch sequences written once and instantiated by
// occupancy_cpu.cpp and occupancy_cuda.cu with their launcher.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <optional>
#include <tuple>

#include "occupancy/occupancy_kernels.h"

namespace handgeom::occupancy {

using at::Tensor;

// inputs [B, N, D], weights packed (Weights), scale/shift [B, L, H]; validated, contiguous.
template <typename T>
Problem<T> make_problem(const Tensor& inputs, const Tensor& weights, const Tensor& scale, const Tensor& shift) {
  const int D = int(inputs.size(2)), L = int(scale.size(1)), H = int(scale.size(2));
  return {inputs.data_ptr<T>(), scale.data_ptr<T>(), shift.data_ptr<T>(), {weights.data_ptr<T>(), D, H, L},
          inputs.size(0), inputs.size(1)};
}

template <int TILE, typename Launch>
Tensor forward(const Tensor& inputs, const Tensor& weights, const Tensor& scale, const Tensor& shift,
               const Launch& launch) {
  Tensor logits = at::empty({inputs.size(0), inputs.size(1)}, inputs.options());
  if (logits.numel() == 0) return logits;
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "conditioned_mlp", [&] {
    const Forward<scalar_t, TILE> body{{}, make_problem<scalar_t>(inputs, weights, scale, shift), logits.data_ptr<scalar_t>()};
    launch(inputs.size(0) * body.tiles(), body);
  });
  return logits;
}

// The reverse pass (Backward): seed is grad_logits, or with truncate set the point weights of the
// penalty, whose per-sample values come back as the fourth tensor (undefined otherwise).
// kSlotTiles: tiles whose modulation gradients one CPU task sums (0: a whole sample, for CUDA's
// atomics); the slots' partial sums are added up here.
template <int TILE, int64_t kSlotTiles, typename Launch>
std::tuple<Tensor, Tensor, Tensor, Tensor> reverse(const Tensor& seed, const Tensor& inputs, const Tensor& weights,
                                                   const Tensor& scale, const Tensor& shift,
                                                   std::optional<bool> truncate, const Launch& launch) {
  const int64_t B = inputs.size(0), N = inputs.size(1), L = scale.size(1), H = scale.size(2);
  const int64_t tiles = (N + TILE - 1) / TILE;
  const int64_t tiles_per_slot = kSlotTiles > 0 ? kSlotTiles : std::max<int64_t>(tiles, 1);
  const int64_t slots = (tiles + tiles_per_slot - 1) / tiles_per_slot;
  Tensor grad_inputs = at::empty_like(inputs);  // every point's row is written
  launch.fresh_output(grad_inputs);
  Tensor grad_mod = at::zeros({B * slots, 2, L, H}, inputs.options());
  Tensor penalty = truncate ? at::zeros({B, slots}, inputs.options()) : Tensor();
  if (inputs.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "conditioned_mlp_backward", [&] {
      const Backward<scalar_t, TILE> body{{},
                                          make_problem<scalar_t>(inputs, weights, scale, shift),
                                          seed.data_ptr<scalar_t>(),
                                          grad_inputs.data_ptr<scalar_t>(),
                                          grad_mod.data_ptr<scalar_t>(),
                                          truncate ? penalty.data_ptr<scalar_t>() : nullptr,
                                          truncate.value_or(false),
                                          slots,
                                          tiles_per_slot};
      launch.grouped(B * slots, tiles_per_slot, body);
    });
  }
  const Tensor summed = grad_mod.view({B, slots, 2, L, H}).sum(1);
  return {grad_inputs, summed.select(1, 0).contiguous(), summed.select(1, 1).contiguous(),
          truncate ? penalty.sum(1) : penalty};
}

// The entry points of one device (occupancy_cpu.cpp, occupancy_cuda.cu); occupancy.cpp validates.
struct DeviceOps {
  Tensor (*forward)(const Tensor&, const Tensor&, const Tensor&, const Tensor&);
  std::tuple<Tensor, Tensor, Tensor, Tensor> (*reverse)(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                        const Tensor&, std::optional<bool>);
};

template <int TILE, int64_t kSlotTiles, typename Launch>
DeviceOps make_device_ops() {
  return {
      [](const Tensor& x, const Tensor& w, const Tensor& s, const Tensor& t) {
        return forward<TILE>(x, w, s, t, Launch{});
      },
      [](const Tensor& seed, const Tensor& x, const Tensor& w, const Tensor& s, const Tensor& t,
         std::optional<bool> truncate) { return reverse<TILE, kSlotTiles>(seed, x, w, s, t, truncate, Launch{}); },
  };
}

DeviceOps cpu_ops();
DeviceOps cuda_ops();

}  // namespace handgeom::occupancy
