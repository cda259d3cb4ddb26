"""RoIAlign (He et al. 2017, Mask R-CNN): fixed-size features of boxes on a feature map."""
from __future__ import annotations

import torch
from torch import Tensor

from nasx.ops._checks import check_roi_args, check_roi_input

__all__ = ["roi_align"]


def _as_rois(boxes: Tensor | list[Tensor] | tuple[Tensor, ...], like: Tensor) -> Tensor:
    """[K, 5] rows (batch index, x1, y1, x2, y2) from a [K, 5] tensor or a list of [K_i, 4] per image."""
    if isinstance(boxes, Tensor):
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"roi_align: expected boxes to be a Tensor[K, 5] or a list of Tensor[K_i, 4], got {type(boxes).__name__}")
    parts = []
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
            shape = list(b.shape) if isinstance(b, Tensor) else type(b).__name__
            raise ValueError(f"roi_align: expected boxes[{i}] of shape [K_i, 4] (x1, y1, x2, y2), got {shape}")
        parts.append(torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1))
    if not parts:
        return like.new_zeros((0, 5))
    return torch.cat(parts, dim=0)


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign, identical to ``torchvision.ops.roi_align`` (forward and gradient).

    Each box is divided into ``output_size`` bins; each bin is the mean of a grid of
    bilinear samples of ``input``. Differentiable with respect to ``input``; the CPU
    backward is deterministic (bitwise equal to torchvision's serial CPU loop), the
    CUDA backward uses atomic adds.

    Args:
        input (Tensor[N, C, H, W]): feature map, floating point (float16/bfloat16 are
            computed in float32 and returned in their dtype).
        boxes (Tensor[K, 5] or list of Tensor[K_i, 4]): boxes in input-image coordinates
            as (batch index, x1, y1, x2, y2), or one (x1, y1, x2, y2) tensor per image.
        output_size (int or (int, int)): bins per box, (height, width).
        spatial_scale (float): feature-map pixels per box unit, e.g. 1/16 for stride 16.
        sampling_ratio (int): samples per bin along each axis; <= 0 picks
            ceil(box extent / bins) for every box (adaptive).
        aligned (bool): shift boxes by -0.5 pixel so that sampling is pixel-centred
            (Detectron2's correction); False keeps the legacy behaviour.

    Returns:
        Tensor[K, C, output_size[0], output_size[1]] in the dtype of ``input``.
    """
    rois = _as_rois(boxes, input)
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return torch.ops.nasx.roi_align.default(
        input, rois, float(spatial_scale), int(ph), int(pw), int(sampling_ratio), bool(aligned)
    )


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
