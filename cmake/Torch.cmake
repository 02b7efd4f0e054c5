# Torch as imported targets, located through torch.utils.cmake_prefix_path.
#
# Why not find_package(Torch): with a CUDA build of torch (what `pip install torch` gives on
# Linux), TorchConfig.cmake always runs torch's CUDA setup and stops with a fatal error when no
# CUDA toolkit is installed, so a CPU-only build would be impossible; it also ignores
# CMAKE_CUDA_ARCHITECTURES (autodetecting eleven architectures without a GPU) and requires nvrtc.
# An extension needs only torch's headers and four libraries, declared here.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c [=[
import os, torch, torch.utils, pybind11
print(os.path.dirname(os.path.dirname(torch.utils.cmake_prefix_path)), end=';')
print(torch.__version__, torch.version.cuda or '', int(torch._C._GLIBCXX_USE_CXX11_ABI), pybind11.get_cmake_dir(), sep=';', end='')
]=]
  OUTPUT_VARIABLE _torch_info ERROR_VARIABLE _torch_error RESULT_VARIABLE _torch_result)
if(NOT _torch_result EQUAL 0)
  message(FATAL_ERROR "handgeom: cannot import torch and pybind11 with ${Python_EXECUTABLE}:\n"
    "${_torch_error}\nInstall torch first and build without isolation, so the extension is "
    "compiled against the torch it will run with:\n"
    "  pip install torch && pip install --no-build-isolation .")
endif()
list(GET _torch_info 0 TORCH_PREFIX)
list(GET _torch_info 1 TORCH_VERSION)
list(GET _torch_info 2 TORCH_CUDA_VERSION)
list(GET _torch_info 3 TORCH_CXX11_ABI)
list(GET _torch_info 4 PYBIND11_CMAKE_DIR)
message(STATUS "handgeom: torch ${TORCH_VERSION} (CUDA '${TORCH_CUDA_VERSION}') at ${TORCH_PREFIX}")

function(_handgeom_torch_library target)
  add_library(handgeom::${target} INTERFACE IMPORTED)
  foreach(lib IN LISTS ARGN)
    find_library(_lib_${lib} ${lib} PATHS "${TORCH_PREFIX}/lib" NO_DEFAULT_PATH REQUIRED)
    target_link_libraries(handgeom::${target} INTERFACE "${_lib_${lib}}")
  endforeach()
endfunction()

_handgeom_torch_library(torch c10 torch_cpu torch)
target_include_directories(handgeom::torch SYSTEM INTERFACE
  "${TORCH_PREFIX}/include" "${TORCH_PREFIX}/include/torch/csrc/api/include")
target_compile_definitions(handgeom::torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI})
