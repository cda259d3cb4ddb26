"""RoIAlign (He et al. 2017, Mask R-CNN): fixed-size features of boxes on a feature map.

Letters: N images, C channels, H x W feature map, K boxes, h x w bins per box.
"""
from typing import List, Tuple, Union

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2

from nasx.ops._checks import check_roi_args, check_roi_input
from nasx.ops._quantized import check_per_tensor

__all__ = ["roi_align"]


def _as_rois(boxes: Union[Tensor, List[Tensor]], like: Tensor) -> Tensor:
    """[K, 5] rows (batch index, x1, y1, x2, y2) from a [K, 5] tensor or a list of [K_i, 4] per image."""
    if isinstance(boxes, Tensor):
        return boxes.dequantize() if boxes.is_quantized else boxes
    if not torch.jit.is_scripting():
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(
                f"roi_align: expected boxes to be a Tensor[K, 5] or a list of Tensor[K_i, 4], got {type(boxes).__name__}"
            )
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor):
                raise TypeError(f"roi_align: expected boxes[{i}] to be a Tensor[K_i, 4], got {type(b).__name__}")
    parts: List[Tensor] = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.size(1) != 4:
            raise ValueError(f"roi_align: expected boxes[{i}] of shape [K_i, 4] (x1, y1, x2, y2), got {list(b.shape)}")
        if b.is_quantized:
            b = b.dequantize()
        parts.append(torch.cat([torch.full_like(b[:, :1], i), b], dim=1))
    if len(parts) == 0:
        return torch.zeros((0, 5), dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)
    return torch.cat(parts, dim=0)


def _bins(output_size: List[int]) -> Tuple[int, int]:
    if torch.jit.is_scripting():  # BroadcastingList2: TorchScript has made an int a pair already
        return output_size[0], output_size[1]
    else:
        if isinstance(output_size, int):
            return output_size, output_size
        if len(output_size) != 2:
            raise ValueError(f"roi_align: expected output_size to be an int or (height, width), got {output_size}")
        return int(output_size[0]), int(output_size[1])


def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign, identical to ``torchvision.ops.roi_align`` (forward and gradient).

    Each box is divided into ``output_size`` bins; each bin is the mean of a grid of
    bilinear samples of ``input``. Differentiable with respect to ``input``; the CPU
    backward is deterministic (bitwise equal to torchvision's serial CPU loop), the
    CUDA backward uses atomic adds.

    A quantized ``input`` (per tensor) is dequantized, pooled in float32 and requantized
    with its scale, zero point and dtype, as torchvision's quantized RoIAlign does (which
    also requires quantized boxes of the same dtype and one image; nasx takes float or
    quantized boxes and any batch).

    Args:
        input (Tensor[N, C, H, W]): feature map, floating point (float16/bfloat16 are
            computed in float32 and returned in their dtype) or quantized.
        boxes (Tensor[K, 5] or list of Tensor[K_i, 4]): boxes in input-image coordinates
            as (batch index, x1, y1, x2, y2), or one (x1, y1, x2, y2) tensor per image.
        output_size (int or (int, int)): bins per box, (h, w).
        spatial_scale (float): feature-map pixels per box unit, e.g. 1/16 for stride 16.
        sampling_ratio (int): samples per bin along each axis; <= 0 picks
            ceil(box extent / bins) for every box (adaptive).
        aligned (bool): shift boxes by -0.5 pixel so that sampling is pixel-centred
            (Detectron2's correction); False keeps the legacy behaviour.

    Returns:
        Tensor[K, C, h, w] in the dtype of ``input``.
    """
    rois = _as_rois(boxes, input)
    ph, pw = _bins(output_size)
    if input.is_quantized:
        check_per_tensor("roi_align", "input", input)
        out = torch.ops.nasx.roi_align(
            input.dequantize(), rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned)
        )
        return torch.quantize_per_tensor(out, input.q_scale(), input.q_zero_point(), input.dtype)
    return torch.ops.nasx.roi_align(input, rois, float(spatial_scale), ph, pw, int(sampling_ratio), bool(aligned))


@torch.library.register_fake("nasx::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    check_roi_input("roi_align", input)
    check_roi_args("roi_align", rois, pooled_height, pooled_width)
    return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width))


@torch.library.register_fake("nasx::_roi_align_backward")
def _roi_align_backward_fake(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio, aligned
):
    check_roi_args("roi_align_backward", rois, pooled_height, pooled_width)
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, ph, pw, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, ph, pw, *input.shape, sampling_ratio, aligned)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned = ctx.args
    grad_input = torch.ops.nasx._roi_align_backward.default(
        grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned
    )
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("nasx::roi_align", _backward, setup_context=_setup_context)
