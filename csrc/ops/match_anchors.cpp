// Schema of IoU anchor matching (torchvision's detection Matcher on box_iou(gt_boxes, anchors)).
// Kernels: cpu/match_anchors_kernel.cpp, cuda/match_anchors_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  // -> (matched [N] int64: GT index, -1 below low, -2 between; max_iou [N])
  m.def(
      "match_anchors(Tensor anchors, Tensor gt_boxes, float high_threshold, float low_threshold, "
      "bool allow_low_quality_matches) -> (Tensor, Tensor)");
}
