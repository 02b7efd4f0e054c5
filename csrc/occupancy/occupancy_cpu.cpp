// CPU launch of the conditioned MLP: 64-point tiles (measured on AVX-512: 7% faster than 32 in the
// backward pass, 128 slower; GCC 12 vectorizes 16-point tiles 10x worse), and the modulation
// gradients of 4 tiles summed per task.
#include "common/parallel.h"
#include "occupancy/occupancy.h"

namespace handgeom::occupancy {

DeviceOps cpu_ops() { return make_device_ops<64, 4, CpuLauncher>(); }

}  // namespace handgeom::occupancy
