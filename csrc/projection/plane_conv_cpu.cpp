// CPU launch of bone_plane_conv: output channels in vector chunks of 32 (two AVX-512 registers
// of float32), forward tiles of 8 columns x 32 channels, weight transposes in 32 x 32 tiles, the
// bones in groups of 16 MiB of scratch in the forward and 4 MiB in the backward (at DIR's 32x32
// stage 12 and 9 bones; 4 MiB in the forward took 39 ms instead of 30), and a gradient that is
// not channels-last copied 64 channels (4 MB there) at a time.
#include "common/parallel.h"
#include "projection/plane_conv.h"

namespace handgeom::projection {

ConvDeviceOps conv_cpu_ops() { return make_conv_device_ops<ConvTiles<32, 8, 32, (16 << 20), (4 << 20), 64>, CpuLauncher>(); }

}  // namespace handgeom::projection
