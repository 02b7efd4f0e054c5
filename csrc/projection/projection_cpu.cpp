// CPU launch of the projection kernels: 32-column forward tiles (vectorized runs), 64 channels per
// backward task (the pixel geometry computed once per 64 channels).
#include "common/parallel.h"
#include "projection/projection.h"

namespace handgeom::projection {

DeviceOps cpu_ops() { return make_device_ops<32, 64, CpuLauncher>(); }

}  // namespace handgeom::projection
