// Schemas of FCOS target assignment (Tian et al. 2019).
// Kernels: cpu/fcos_targets_kernel.cpp, cuda/fcos_targets_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  // -> (gt_index [P] int64, reg_targets [P, 4], centerness [P])
  m.def(
      "fcos_targets(Tensor points, Tensor strides, Tensor size_ranges, Tensor gt_boxes, float? center_radius) "
      "-> (Tensor, Tensor, Tensor)");
  // gt_boxes [B, G, 4] padded, gt_valid [B, G] bool -> ([B, P], [B, P, 4], [B, P])
  m.def(
      "fcos_targets_batched(Tensor points, Tensor strides, Tensor size_ranges, Tensor gt_boxes, Tensor gt_valid, "
      "float? center_radius) -> (Tensor, Tensor, Tensor)");
}
