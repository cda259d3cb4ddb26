// Schema of Soft-NMS (Bodla et al. 2017). Kernels: cpu/soft_nms_kernel.cpp, cuda/soft_nms_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  m.def(
      "soft_nms(Tensor boxes, Tensor scores, float iou_threshold, float sigma, float score_threshold, "
      "str method) -> (Tensor, Tensor)");
}
