// CPU launch of bone_plane_conv: output channels in vector chunks of 32 (two AVX-512 registers
// of float32), forward tiles of 8 columns x 32 channels, weight transposes in 32 x 32 tiles, the
// bones in groups of 4 MiB of relaid-out weight (7 of DIR's bones: 2 and 4 MiB time alike at
// DIR's sizes, the forward 3 ms faster at 4; 8 MiB adds 6 MB to the peak).
#include "common/parallel.h"
#include "projection/plane_conv.h"

namespace handgeom::projection {

ConvDeviceOps conv_cpu_ops() { return make_conv_device_ops<ConvTiles<32, 8, 32, (4 << 20)>, CpuLauncher>(); }

}  // namespace handgeom::projection
