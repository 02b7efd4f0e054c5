// The Python module handgeom._C. Loading it registers the operators (TORCH_LIBRARY static
// initializers); the module itself only reports how it was built.
#include <pybind11/pybind11.h>

#include <string>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.def("build_info", [] {
    py::dict info;
    info["version"] = HANDGEOM_VERSION;
    info["torch_built_against"] = HANDGEOM_TORCH_VERSION;
#ifdef HANDGEOM_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cuda_archs"] = std::string(HANDGEOM_CUDA_ARCHS);
    info["openmp"] = bool(HANDGEOM_OPENMP);
    return info;
  }, "How this build of handgeom was compiled.");
}
