"""Plainly written pure-torch references for every nasx op.

Slow on purpose: one obvious loop or broadcast per op, no cleverness, so that the
tests can trust them. They follow the same arithmetic as the kernels (and as
torchvision): area = (x2 - x1) * (y2 - y1), IoU = inter / (area_a + area_b - inter),
thresholds compared in float64.
"""
import math

import torch
from torch import Tensor


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def box_area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = _compute_dtype(boxes1, boxes2)
    inter, union = _inter_union(boxes1.to(dtype), boxes2.to(dtype))
    return (inter / union).to(out_dtype)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = _compute_dtype(boxes1, boxes2)
    b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
    inter, union = _inter_union(b1, b2)
    iou = inter / union
    lt = torch.min(b1[:, None, :2], b2[None, :, :2])
    rb = torch.max(b1[:, None, 2:], b2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return (iou - (enclosing - union) / enclosing).to(out_dtype)


def _score_order(scores: Tensor) -> list[int]:
    """Indices of non-NaN scores, by decreasing score then increasing index."""
    values = scores.tolist()
    keep = [i for i, s in enumerate(values) if not math.isnan(s)]
    return sorted(keep, key=lambda i: (-values[i], i))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    dtype = _compute_dtype(boxes, scores)
    boxes = boxes.to(dtype)
    order = _score_order(scores.to(dtype))
    keep: list[int] = []
    suppressed = [False] * len(order)
    for pos, i in enumerate(order):
        if suppressed[pos]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        if not rest:
            continue
        ious = box_iou(boxes[i : i + 1], boxes[rest])[0].double()
        for k, over in enumerate((ious > iou_threshold).tolist()):
            if over:
                suppressed[pos + 1 + k] = True
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    keep: list[int] = []
    for c in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == c).flatten()
        keep += members[nms(boxes[members], scores[members], iou_threshold)].tolist()
    values = scores.to(_compute_dtype(boxes, scores)).tolist()
    keep.sort(key=lambda i: (-values[i], i))
    return torch.tensor(keep, dtype=torch.int64)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: str = "gaussian",
) -> tuple[Tensor, Tensor]:
    dtype = _compute_dtype(boxes, scores)
    boxes = boxes.to(dtype)
    current = scores.to(dtype).clone()
    thr = torch.tensor(score_threshold, dtype=dtype)
    alive = [i for i in range(len(current)) if not torch.isnan(current[i]) and current[i] >= thr]
    keep: list[int] = []
    kept_scores: list[Tensor] = []
    while alive:
        best = max(alive, key=lambda i: (current[i].item(), -i))
        keep.append(best)
        kept_scores.append(current[best].clone())
        alive.remove(best)
        if not alive:
            break
        ious = box_iou(boxes[best : best + 1], boxes[alive])[0]
        ious = torch.where(ious > 0, ious, torch.zeros_like(ious))  # NaN IoU counts as no overlap
        if method == "gaussian":
            weight = torch.exp(-(ious * ious) / torch.tensor(sigma, dtype=dtype))
        else:
            nt = torch.tensor(iou_threshold, dtype=dtype)
            weight = torch.where(ious > nt, 1 - ious, torch.ones_like(ious))
        current[alive] = current[alive] * weight
        alive = [i for i in alive if current[i] >= thr]
    out_scores = torch.stack(kept_scores) if kept_scores else current.new_empty(0)
    return torch.tensor(keep, dtype=torch.int64), out_scores.to(scores.dtype)


# ---------------------------------------------------------------------------
# Feature-map ops: roi_align, deform_conv2d (torchvision's semantics)
# ---------------------------------------------------------------------------


def _roi_bilinear(plane: Tensor, y: float, x: float) -> Tensor:
    """Bilinear sample of every channel of plane[C, H, W] at (y, x), RoIAlign's border rules."""
    _, height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return plane.new_zeros(plane.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * plane[:, y_low, x_low]
        + hy * lx * plane[:, y_low, x_high]
        + ly * hx * plane[:, y_high, x_low]
        + ly * lx * plane[:, y_high, x_high]
    )


def roi_align(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False,
) -> Tensor:
    """rois: [K, 5] (batch index, x1, y1, x2, y2). Differentiable with respect to input."""
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    out = []
    for roi in rois.tolist():
        plane = input[int(roi[0])]
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        grid_h = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_h / ph), 0)
        grid_w = sampling_ratio if sampling_ratio > 0 else max(math.ceil(roi_w / pw), 0)
        count = max(grid_h * grid_w, 1)
        bins = []
        for i in range(ph):
            for j in range(pw):
                acc = input.new_zeros(input.shape[1])
                for iy in range(grid_h):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc = acc + _roi_bilinear(plane, y, x)
                bins.append(acc / count)
        out.append(torch.stack(bins, dim=1).view(-1, ph, pw) if bins else input.new_zeros(input.shape[1], ph, pw))
    if not out:
        return input.new_zeros((0, input.shape[1], ph, pw))
    return torch.stack(out)


def _deform_bilinear(input: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """input[N, C, H, W] sampled at y, x of shape [N, C, ...]; 0 unless -1 < y < H and -1 < x < W,
    corners outside the map read 0. Differentiable in input, y and x."""
    n, c, height, width = input.shape
    inside = (y > -1) & (y < height) & (x > -1) & (x < width)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    flat = input.reshape(n, c, height * width)

    def corner(yi: Tensor, xi: Tensor) -> Tensor:
        valid = inside & (yi >= 0) & (yi <= height - 1) & (xi >= 0) & (xi <= width - 1)
        index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).long()
        value = flat.gather(2, index.reshape(n, c, -1)).reshape(y.shape)
        return torch.where(valid, value, torch.zeros_like(value))

    return ((1 - ly) * (1 - lx) * corner(y0, x0) + (1 - ly) * lx * corner(y0, x0 + 1)
            + ly * (1 - lx) * corner(y0 + 1, x0) + ly * lx * corner(y0 + 1, x0 + 1))


def deform_conv2d(
    input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None, stride=(1, 1), padding=(0, 0),
    dilation=(1, 1), mask: Tensor | None = None,
) -> Tensor:
    """torchvision.ops.deform_conv2d's semantics: sample every tap of every output pixel, then convolve."""
    n, c_in, _, _ = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups, taps = c_in // c_per_group, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[2:]
    off = offset.reshape(n, offset_groups, taps, 2, out_h, out_w)
    tap_y = (torch.arange(kh) * dilation[0]).repeat_interleave(kw).to(offset)  # [K]
    tap_x = (torch.arange(kw) * dilation[1]).repeat(kh).to(offset)
    base_y = (torch.arange(out_h) * stride[0] - padding[0]).to(offset)  # [H_out]
    base_x = (torch.arange(out_w) * stride[1] - padding[1]).to(offset)
    y = base_y[:, None] + tap_y[:, None, None] + off[:, :, :, 0]  # [N, O, K, H_out, W_out]
    x = base_x[None, :] + tap_x[:, None, None] + off[:, :, :, 1]
    per_offset_group = c_in // offset_groups
    y = y.repeat_interleave(per_offset_group, dim=1)  # [N, C_in, K, H_out, W_out]
    x = x.repeat_interleave(per_offset_group, dim=1)
    columns = _deform_bilinear(input, y, x)
    if mask is not None:
        columns = columns * mask.reshape(n, offset_groups, taps, out_h, out_w).repeat_interleave(per_offset_group, 1)
    columns = columns.reshape(n, groups, c_per_group * taps, out_h * out_w)
    w = weight.reshape(groups, c_out // groups, c_per_group * taps)
    out = torch.einsum("gok,ngkp->ngop", w, columns).reshape(n, c_out, out_h, out_w)
    return out if bias is None else out + bias[None, :, None, None]
