// CUDA launch of the per-edge graph convolution (launch code only; bodies: edge_conv_kernels.h).
#include "common/cuda_launch.cuh"
#include "edge_conv/edge_conv.h"

namespace handgeom::edge_conv {

DeviceOps cuda_ops() { return make_device_ops<1, CudaLauncher>(); }

}  // namespace handgeom::edge_conv
