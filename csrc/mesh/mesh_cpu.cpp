// CPU launch of the mesh queries.
#include "common/parallel.h"
#include "mesh/mesh.h"

namespace handgeom::mesh {

DeviceOps cpu_ops() { return make_device_ops<CpuLauncher>(); }

}  // namespace handgeom::mesh
