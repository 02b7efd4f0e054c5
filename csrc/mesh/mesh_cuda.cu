// CUDA launch of the mesh queries (launch code only; the bodies are mesh_kernels.h).
#include "common/cuda_launch.cuh"
#include "mesh/mesh.h"

namespace handgeom::mesh {

DeviceOps cuda_ops() { return make_device_ops<CudaLauncher>(); }

}  // namespace handgeom::mesh
