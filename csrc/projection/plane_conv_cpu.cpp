// CPU launch of bone_plane_conv: output channels in vector chunks of 32 (two AVX-512 registers
// of float32), forward tiles of 8 columns x 32 channels, weight transposes in 32 x 32 tiles, the
// weight gradient 2 MiB of bones at a time (an L2-sized buffer, reused).
#include "common/parallel.h"
#include "projection/plane_conv.h"

namespace handgeom::projection {

ConvDeviceOps conv_cpu_ops() { return make_conv_device_ops<ConvTiles<32, 8, 32, (1 << 21)>, CpuLauncher>(); }

}  // namespace handgeom::projection
