"""Deformable convolution v1 and modulated v2 (Dai et al. 2017; Zhu et al. 2019).

Legend: N images, C_in / C_out channels, kH x kW kernel (K = kH kW taps),
G weight groups, O offset groups, H_out x W_out output pixels.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from nasx.ops._checks import deform_conv2d_out_shape
from nasx.ops._quantized import reject_quantized

__all__ = ["deform_conv2d", "DeformConv2d"]


def _pair(v: Tuple[int, int], name: str) -> Tuple[int, int]:
    if torch.jit.is_scripting():  # typed as torchvision's: a pair
        return v
    else:
        if isinstance(v, int):
            return v, v
        pair = tuple(v)
        if len(pair) != 2:
            raise ValueError(f"deform_conv2d: expected {name} to be an int or a pair of ints, got {v}")
        return int(pair[0]), int(pair[1])


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: Tuple[int, int] = (1, 1),
    padding: Tuple[int, int] = (0, 0),
    dilation: Tuple[int, int] = (1, 1),
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Deformable 2-D convolution, identical to ``torchvision.ops.deform_conv2d``.

    Tap (i, j) of output pixel (y, x) samples ``input`` bilinearly at
    ``(y * stride_h - pad_h + i * dil_h + dy, x * stride_w - pad_w + j * dil_w + dx)``,
    with (dy, dx) read from ``offset``, scaled by ``mask`` if given (v2), and the
    samples are convolved with ``weight``. Points with ``h <= -1``, ``h >= H`` (or
    likewise in w) sample 0, and so does a NaN offset. Differentiable with respect to
    input, offset, weight, mask and bias. When ``groups == C_in`` (depthwise) a direct
    kernel without im2col/GEMM runs. The CPU backward is deterministic; the CUDA
    input gradient uses atomic adds.

    Args:
        input (Tensor[N, C_in, H, W]): floating point (float16/bfloat16 computed in float32).
        offset (Tensor[N, 2 * O * K, H_out, W_out]): per offset group and tap, (dy, dx)
            interleaved: channel ``(g * K + k) * 2`` is dy, ``+ 1`` is dx. Channel c of the
            input belongs to offset group ``c // (C_in / O)``.
        weight (Tensor[C_out, C_in / G, kH, kW]): G = C_in / weight.size(1) weight groups.
        bias (Tensor[C_out], optional).
        stride, padding, dilation (int or (int, int)); in TorchScript (int, int), as torchvision's.
        mask (Tensor[N, O * K, H_out, W_out], optional): modulation scalars (v2).

    Returns:
        Tensor[N, C_out, H_out, W_out] in the dtype of ``input``, with
        ``H_out = (H + 2 pad_h - dil_h (kH - 1) - 1) // stride_h + 1`` (W_out likewise).
    """
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        reject_quantized("deform_conv2d", name, t)
    reject_quantized("deform_conv2d", "mask", mask)
    reject_quantized("deform_conv2d", "bias", bias)
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    return torch.ops.nasx.deform_conv2d(input, weight, offset, mask, bias, sh, sw, ph, pw, dh, dw)


@torch.library.register_fake("nasx::deform_conv2d")
def _deform_conv2d_fake(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    out_h, out_w = deform_conv2d_out_shape("deform_conv2d", input, weight, offset, mask, stride_h, stride_w, pad_h,
                                           pad_w, dilation_h, dilation_w)
    return input.new_empty((input.shape[0], weight.shape[0], out_h, out_w))


@torch.library.register_fake("nasx::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(grad, input, weight, offset, mask, stride_h, stride_w, pad_h, pad_w, dilation_h,
                                 dilation_w):
    deform_conv2d_out_shape("deform_conv2d_backward", input, weight, offset, mask, stride_h, stride_w, pad_h, pad_w,
                            dilation_h, dilation_w)
    grad_mask = torch.empty_like(mask) if mask is not None else input.new_empty((0,))
    return (torch.empty_like(input), torch.empty_like(weight), torch.empty_like(offset), grad_mask,
            input.new_empty((weight.shape[0],)))


def _setup_context(ctx, inputs, output):
    input, weight, offset, mask, bias, *conv_args = inputs
    ctx.save_for_backward(input, weight, offset, mask)
    ctx.conv_args = conv_args
    ctx.has_mask, ctx.has_bias = mask is not None, bias is not None


def _backward(ctx, grad):
    input, weight, offset, mask = ctx.saved_tensors
    gi, gw, goff, gmask, gbias = torch.ops.nasx._deform_conv2d_backward.default(
        grad, input, weight, offset, mask if ctx.has_mask else None, *ctx.conv_args
    )
    return (gi, gw, goff, gmask if ctx.has_mask else None, gbias if ctx.has_bias else None) + (None,) * 6


torch.library.register_autograd("nasx::deform_conv2d", _backward, setup_context=_setup_context)


class DeformConv2d(nn.Module):
    """Deformable convolution that predicts its own offsets (and mask) from its input.

    A plain convolution with the same kernel, stride, padding and dilation reads the
    input and predicts ``2 * O * K`` offsets, plus ``O * K`` mask logits when
    ``modulated`` (DCNv2; the mask is their sigmoid). That convolution is
    zero-initialised, as in DCNv2 practice: at initialisation the offsets are 0, so
    the layer samples the regular grid (a plain convolution; scaled by 0.5 with
    modulation), and learns to deform from there. ``groups=in_channels`` gives the
    depthwise deformable convolution, which runs a dedicated kernel.

    Args:
        in_channels, out_channels (int): C_in, C_out.
        kernel_size, stride, padding, dilation (int or (int, int)); padding defaults to
            ``dilation * (kernel_size - 1) // 2`` ("same" size at stride 1).
        groups (int): weight groups G (C_in and C_out multiples of it).
        offset_groups (int): O, input channels share offsets in O contiguous groups.
        bias (bool): learnable bias of the output.
        modulated (bool): predict a mask (v2) as well as offsets (v1).

    Shape:
        input Tensor[N, C_in, H, W] -> Tensor[N, C_out, H_out, W_out].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=None, dilation=1,
                 groups: int = 1, offset_groups: int = 1, bias: bool = True, modulated: bool = True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv2d: expected in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"to be multiples of groups ({groups})")
        if in_channels % offset_groups:
            raise ValueError(f"DeformConv2d: expected in_channels ({in_channels}) to be a multiple of "
                             f"offset_groups ({offset_groups})")
        kh, kw = _pair(kernel_size, "kernel_size")
        dh, dw = _pair(dilation, "dilation")
        padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2) if padding is None else _pair(padding, "padding")
        self.stride, self.padding, self.dilation = _pair(stride, "stride"), padding, (dh, dw)
        self.groups, self.offset_groups, self.modulated = groups, offset_groups, modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._num_offsets = 2 * offset_groups * kh * kw
        self.offset_conv = nn.Conv2d(in_channels, self._num_offsets + (offset_groups * kh * kw if modulated else 0),
                                     (kh, kw), self.stride, self.padding, self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The weight and bias as nn.Conv2d initialises them; the offset predictor at zero.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def forward(self, input: Tensor) -> Tensor:
        predicted = self.offset_conv(input)
        offset = predicted[:, : self._num_offsets]
        mask = predicted[:, self._num_offsets :].sigmoid() if self.modulated else None
        return deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"offset_groups={self.offset_groups}, modulated={self.modulated}, bias={self.bias is not None}")
