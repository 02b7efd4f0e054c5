// CPU launch of the per-edge graph convolution.
#include "common/parallel.h"
#include "edge_conv/edge_conv.h"

namespace handgeom::edge_conv {

DeviceOps cpu_ops() { return make_device_ops<32, CpuLauncher>(); }

}  // namespace handgeom::edge_conv
