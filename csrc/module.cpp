// The nasx._C extension module. Importing it runs the static TORCH_LIBRARY
// registrations of every op in csrc/ops; the functions below only describe the build.
#include <pybind11/pybind11.h>

namespace {

bool cuda_enabled() {
#ifdef NASX_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "nasx compiled kernels (registered as torch.ops.nasx.*)";
  m.def("cuda_enabled", &cuda_enabled, "Whether the CUDA kernels were compiled into this build.");
  m.attr("torch_version") = NASX_TORCH_VERSION;
}
