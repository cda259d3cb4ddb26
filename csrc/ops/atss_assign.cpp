// Schema of ATSS assignment (Zhang et al. 2020, adaptive training sample selection).
// Kernels: cpu/atss_assign_kernel.cpp, cuda/atss_assign_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  // -> (matched [N] int64: GT index or -1, iou [N] with the assigned GT, 0 for background)
  m.def("atss_assign(Tensor anchors, int[] num_anchors_per_level, Tensor gt_boxes, int topk) -> (Tensor, Tensor)");
}
