// CUDA launch of the projection kernels (launch code only; the bodies are projection_kernels.h):
// one pixel per forward thread (a warp's stores are contiguous), 8 channels per backward thread
// (visiting its bone's pixels one at a time).
#include "common/cuda_launch.cuh"
#include "projection/projection.h"

namespace handgeom::projection {

DeviceOps cuda_ops() { return make_device_ops<1, 8, CudaLauncher>(); }

}  // namespace handgeom::projection
