// CUDA launch of the conditioned MLP (launch code only; bodies: occupancy_kernels.h): a thread per
// point, the weights staged in shared memory (Staged in cuda_launch.cuh), modulation gradients
// added atomically per sample.
#include "common/cuda_launch.cuh"
#include "occupancy/occupancy.h"

namespace handgeom::occupancy {

DeviceOps cuda_ops() { return make_device_ops<1, 0, CudaLauncher>(); }

}  // namespace handgeom::occupancy
