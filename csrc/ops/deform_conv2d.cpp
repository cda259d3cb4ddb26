// Schemas of deformable convolution v1/v2 (Dai et al. 2017, Zhu et al. 2019), with
// torchvision's arithmetic and tensor layouts. Kernels: cpu/deform_conv2d_kernel.cpp,
// cuda/deform_conv2d_kernel.cu. groups and offset_groups are read off the shapes:
// groups = input.size(1) / weight.size(1), offset_groups = offset.size(1) / (2 kH kW).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  m.def(
      "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor? mask, Tensor? bias, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) -> Tensor");
  // Gradients of input, weight, offset, mask (shape [0] when mask is None) and bias.
  m.def(
      "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor? mask, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
