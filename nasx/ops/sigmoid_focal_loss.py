"""Sigmoid focal loss (Lin et al. 2017) with a fused backward kernel."""
import torch
from torch import Tensor

from nasx.ops._checks import check_focal_loss_args
from nasx.ops._quantized import reject_quantized

__all__ = ["sigmoid_focal_loss"]


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"
) -> Tensor:
    """Focal loss of binary logits: the formula and arguments of ``torchvision.ops.sigmoid_focal_loss``.

    ``loss = a_t * BCE(sigmoid(x), t) * (1 - p_t) ** gamma`` with
    ``p_t = p * t + (1 - p) * (1 - t)`` and ``a_t = alpha * t + (1 - alpha) * (1 - t)``.
    One fused pass forward and one backward (torchvision runs ~12 tensor ops each way).
    Differentiable in ``inputs`` and, for soft labels, in ``targets``.

    Bit-identical to torchvision per element on CPU: the kernel runs torchvision's operations in
    its order with the exp / log1p / pow torch's own CPU kernels use, so ``gamma=0, alpha=-1``
    is binary cross-entropy with logits exactly. On CUDA: the same operations with CUDA's math.
    This wrapper adds no rounding of its own: it is ``torch.ops.nasx.sigmoid_focal_loss``
    with ``alpha`` and ``gamma`` as Python floats.

    Args:
        inputs (Tensor[*]): logits, floating point, any shape.
        targets (Tensor[*]): binary (or soft) labels in [0, 1], same shape and device.
        alpha (float): weight of the positive class in [0, 1], or -1 for no weighting
            (other values raise ``ValueError``, as torchvision).
        gamma (float): focusing exponent, >= 0 (torchvision also takes negative ones).
        reduction (str): ``"none"`` (per element), ``"mean"`` or ``"sum"``.

    Returns:
        Tensor: the loss, shaped like ``inputs`` for ``"none"``, else a scalar, in the promoted
        dtype of the inputs (float16/bfloat16 computed in float32; ``"mean"`` of nothing is NaN).
    """
    if alpha == alpha and not (0 <= alpha <= 1) and alpha != -1:  # NaN: the kernel's own message
        raise ValueError(f"sigmoid_focal_loss: expected alpha in [0, 1] or -1 (no weighting), got {alpha}")
    reject_quantized("sigmoid_focal_loss", "inputs", inputs)
    reject_quantized("sigmoid_focal_loss", "targets", targets)
    return torch.ops.nasx.sigmoid_focal_loss(inputs, targets, float(alpha), float(gamma), str(reduction))


@torch.library.register_fake("nasx::sigmoid_focal_loss")
def _sigmoid_focal_loss_fake(inputs, targets, alpha, gamma, reduction):
    check_focal_loss_args(inputs, targets, gamma, reduction, "sigmoid_focal_loss")
    dtype = torch.promote_types(inputs.dtype, targets.dtype)
    shape = inputs.shape if reduction == "none" else ()
    return inputs.new_empty(shape, dtype=dtype)


@torch.library.register_fake("nasx::sigmoid_focal_loss_backward")
def _sigmoid_focal_loss_backward_fake(grad, inputs, targets, alpha, gamma, reduction, targets_grad):
    check_focal_loss_args(inputs, targets, gamma, reduction, "sigmoid_focal_loss_backward")
    dt = targets.new_empty(targets.shape) if targets_grad else targets.new_empty((0,))
    return inputs.new_empty(inputs.shape), dt


def _setup_context(ctx, inputs, output):
    x, t, alpha, gamma, reduction = inputs
    ctx.save_for_backward(x, t)
    ctx.args = (alpha, gamma, reduction)


def _backward(ctx, grad):
    x, t = ctx.saved_tensors
    alpha, gamma, reduction = ctx.args
    want_t = ctx.needs_input_grad[1]
    dx, dt = torch.ops.nasx.sigmoid_focal_loss_backward.default(grad, x, t, alpha, gamma, reduction, want_t)
    return (dx if ctx.needs_input_grad[0] else None), (dt if want_t else None), None, None, None


torch.library.register_autograd("nasx::sigmoid_focal_loss", _backward, setup_context=_setup_context)
