// Schemas of the pairwise box-overlap ops. Kernels: cpu/box_iou_kernel.cpp, cuda/box_iou_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
  m.def("generalized_box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}
