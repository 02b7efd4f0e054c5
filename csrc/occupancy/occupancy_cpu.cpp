// CPU launch of the conditioned MLP: 32-point tiles (two AVX-512 vectors of floats: GCC 12 vectorizes
// 16-point tiles 10x worse), and the modulation gradients of 8 tiles summed per task.
#include "common/parallel.h"
#include "occupancy/occupancy.h"

namespace handgeom::occupancy {

DeviceOps cpu_ops() { return make_device_ops<32, 8, CpuLauncher>(); }

}  // namespace handgeom::occupancy
