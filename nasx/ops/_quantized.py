"""Quantized tensors at the op wrappers.

torchvision runs NMS and RoIAlign on quantized tensors (``torch.quantize_per_tensor``);
nasx's kernels are floating point, so those wrappers take quantized tensors the way
torchvision's kernels read them (integer values for NMS, dequantized values and a
requantized output for RoIAlign). Every other op that has a torchvision counterpart
rejects a quantized tensor by name here, instead of the dispatcher's "Could not run
'nasx::...' with arguments from the 'QuantizedCPU' backend".

All of it is TorchScript-compatible: the checks that TorchScript cannot express sit
under ``if not torch.jit.is_scripting()`` (a static branch there).
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ["reject_quantized", "nms_operand", "check_per_tensor"]


def reject_quantized(op: str, name: str, t: Optional[Tensor]) -> None:
    if t is not None and t.is_quantized:
        raise TypeError(
            f"{op}: expected {name} to be a floating-point tensor, got a quantized tensor "
            f"(torchvision has no quantized {op} either); pass {name}.dequantize()"
        )


def check_per_tensor(op: str, name: str, t: Tensor) -> None:
    """A quantized ``t`` must be per-tensor: one scale and zero point, which the output reuses."""
    if not torch.jit.is_scripting():
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise ValueError(
                f"{op}: expected {name} quantized per tensor (torch.quantize_per_tensor), got {t.qscheme()}"
            )


def nms_operand(t: Tensor) -> Tensor:
    """A quantized NMS input as torchvision's ``qnms`` reads it: its integer values, in float32.

    IoU does not change under one positive scale and a shift of all coordinates, nor
    the score order under a positive scale, so torchvision computes on the integers,
    cast to float32 (exact below 2^24; torchvision sorts qint32 scores beyond that
    exactly, nasx as rounded). A per-channel quantized tensor has no such invariance
    and is dequantized, and so is every quantized tensor in TorchScript (which cannot
    read the scheme).
    """
    if not t.is_quantized:
        return t
    if not torch.jit.is_scripting():
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            return t.int_repr().to(torch.float32)
    return t.dequantize()
