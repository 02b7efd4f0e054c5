// CUDA launch of bone_plane_conv (launch code only; the bodies are plane_conv_kernels.h, the
// matrix products cuBLAS): one output element per forward thread (consecutive threads take
// consecutive columns, so a warp's stores are contiguous), one (sample, bone, output channel) per
// backward-through-the-pixels thread, the bones in groups of 16 MiB of scratch (12 of DIR's
// bones at 32x32: 49k backward threads), a gradient that is not channels-last copied whole.
// Untested on a device.
#include "common/cuda_launch.cuh"
#include "projection/plane_conv.h"

namespace handgeom::projection {

ConvDeviceOps conv_cuda_ops() { return make_conv_device_ops<ConvTiles<1, 1, 1, (16 << 20), (16 << 20), 0>, CudaLauncher>(); }

}  // namespace handgeom::projection
