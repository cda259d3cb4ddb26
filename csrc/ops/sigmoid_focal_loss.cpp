// Schemas of the sigmoid focal loss (Lin et al. 2017) and its fused backward.
// Kernels: cpu/sigmoid_focal_loss_kernel.cpp, cuda/sigmoid_focal_loss_kernel.cu.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  m.def("sigmoid_focal_loss(Tensor inputs, Tensor targets, float alpha, float gamma, str reduction) -> Tensor");
  // Gradients with respect to inputs and, when targets_grad, targets (else an empty tensor).
  m.def(
      "sigmoid_focal_loss_backward(Tensor grad, Tensor inputs, Tensor targets, float alpha, float gamma, "
      "str reduction, bool targets_grad) -> (Tensor, Tensor)");
}
