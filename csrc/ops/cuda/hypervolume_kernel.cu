// hypervolume on CUDA tensors: the exact algorithms (HV3D's ordered staircase,
// WFG-style slicing) are sequential sweeps with no sensible GPU form at the sizes
// an archive has, so the points are copied to the host, the CPU kernel runs, and
// the 0-dim result is returned on the points' device (one device-to-host copy).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/pareto_checks.h"

namespace nasx::ops {
namespace {

at::Tensor hypervolume_cuda(const at::Tensor& points, const at::Tensor& reference) {
  check_hypervolume_inputs(points, reference);  // NaN: by the CPU kernel, on the copy
  c10::cuda::CUDAGuard guard(points.device());
  static auto cpu_op = c10::Dispatcher::singleton()
                           .findSchemaOrThrow("nasx::hypervolume", "")
                           .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return cpu_op.call(points.cpu(), reference.cpu()).to(points.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CUDA, m) { m.impl("hypervolume", &hypervolume_cuda); }

}  // namespace nasx::ops
