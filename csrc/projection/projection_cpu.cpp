// CPU launch of the projection kernels: 32-column forward tiles (vectorized runs), 64 channels per
// backward task and 32-column backward tiles (the pixel geometry computed once per 64 channels,
// then one contiguous run of the gradient per channel and row).
#include "common/parallel.h"
#include "projection/projection.h"

namespace handgeom::projection {

DeviceOps cpu_ops() { return make_device_ops<32, 64, CpuLauncher>(); }

}  // namespace handgeom::projection
