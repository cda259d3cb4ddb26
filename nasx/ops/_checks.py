"""Shape and dtype checks for the fake (meta) kernels, all ops' in one place.

They mirror the C++ checks (csrc/ops/box_checks.h, csrc/ops/pareto_checks.h and each
op's own) so that a graph traced by torch.compile fails on the same inputs the eager
op rejects, with the same words.
"""
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_boxes(t: torch.Tensor, op: str, name: str) -> None:
    torch._check(t.dtype in FLOAT_DTYPES, lambda: f"{op}: expected {name} to be a floating-point tensor, got {t.dtype}")
    torch._check(
        t.dim() == 2 and t.shape[1] == 4,
        lambda: f"{op}: expected {name} of shape [N, 4] (x1, y1, x2, y2), got shape {list(t.shape)}",
    )


def check_scores(scores: torch.Tensor, boxes: torch.Tensor, op: str) -> None:
    torch._check(
        scores.dim() == 1 and scores.shape[0] == boxes.shape[0],
        lambda: f"{op}: expected scores of shape [N] with N = boxes.size(0) = {boxes.shape[0]}, "
        f"got shape {list(scores.shape)}",
    )


def dynamic_length() -> "torch.SymInt":
    """A data-dependent output length (e.g. how many boxes NMS keeps)."""
    return torch.library.get_ctx().new_dynamic_size()


# ---------------------------------------------------------------- per-op argument checks of the fake kernels

FOCAL_LOSS_REDUCTIONS = ("none", "mean", "sum")


def check_focal_loss_args(inputs, targets, gamma, reduction, op):
    """sigmoid_focal_loss and its backward."""
    torch._check(inputs.dtype in FLOAT_DTYPES, lambda: f"{op}: expected inputs to be a floating-point tensor, got {inputs.dtype}")
    torch._check(targets.dtype in FLOAT_DTYPES, lambda: f"{op}: expected targets to be a floating-point tensor, got {targets.dtype}")
    torch._check(
        inputs.shape == targets.shape,
        lambda: f"{op}: expected targets of the same shape as inputs {list(inputs.shape)}, got shape {list(targets.shape)}",
    )
    torch._check(reduction in FOCAL_LOSS_REDUCTIONS, lambda: f'{op}: expected reduction "none", "mean" or "sum", got "{reduction}"')
    torch._check(gamma >= 0, lambda: f"{op}: expected gamma >= 0, got {gamma}")


def check_fcos_points(points, strides, size_ranges, op):
    """fcos_targets and fcos_targets_batched: points [P, 2], strides [P], size_ranges [P, 2]."""
    torch._check(points.dtype in FLOAT_DTYPES, lambda: f"{op}: expected points to be a floating-point tensor, got {points.dtype}")
    torch._check(
        points.dim() == 2 and points.shape[1] == 2,
        lambda: f"{op}: expected points of shape [P, 2] (x, y), got shape {list(points.shape)}",
    )
    p = points.shape[0]
    torch._check(
        strides.dim() == 1 and strides.shape[0] == p,
        lambda: f"{op}: expected strides of shape [P] with P = points.size(0) = {p}, got shape {list(strides.shape)}",
    )
    torch._check(
        size_ranges.dim() == 2 and size_ranges.shape[0] == p and size_ranges.shape[1] == 2,
        lambda: f"{op}: expected size_ranges of shape [P, 2] (lo, hi) with P = points.size(0) = {p}, "
        f"got shape {list(size_ranges.shape)}",
    )


def check_fcos_batched_gts(gt_boxes, gt_valid, op):
    """fcos_targets_batched: padded gt_boxes [B, G, 4] and a bool gt_valid."""
    torch._check(
        gt_boxes.dim() == 3 and gt_boxes.shape[2] == 4,
        lambda: f"{op}: expected gt_boxes of shape [B, G, 4] (x1, y1, x2, y2), got shape {list(gt_boxes.shape)}",
    )
    torch._check(gt_valid.dtype == torch.bool, lambda: f"{op}: expected gt_valid to be a bool tensor, got {gt_valid.dtype}")


def check_roi_input(op, input):
    """roi_align: the feature map [N, C, H, W]."""
    torch._check(input.dtype in FLOAT_DTYPES, lambda: f"{op}: expected input to be a floating-point tensor, got {input.dtype}")
    torch._check(input.dim() == 4, lambda: f"{op}: expected input of shape [N, C, H, W], got shape {list(input.shape)}")


def check_roi_args(op, rois, ph, pw):
    """roi_align and its backward: rois [K, 5] and the pooled size."""
    torch._check(rois.dtype in FLOAT_DTYPES, lambda: f"{op}: expected rois to be a floating-point tensor, got {rois.dtype}")
    torch._check(
        rois.dim() == 2 and rois.shape[1] == 5,
        lambda: f"{op}: expected rois of shape [K, 5] (batch index, x1, y1, x2, y2), got shape {list(rois.shape)}",
    )
    torch._check(ph > 0 and pw > 0, lambda: f"{op}: expected pooled_height > 0 and pooled_width > 0, got {ph}, {pw}")


def deform_conv2d_out_shape(op, input, weight, offset, mask, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """deform_conv2d and its backward: checks the arguments, returns (H_out, W_out)."""
    for name, t in (("input", input), ("weight", weight), ("offset", offset)):
        torch._check(t.dtype in FLOAT_DTYPES, lambda: f"{op}: expected {name} to be a floating-point tensor, got {t.dtype}")
        torch._check(t.dim() == 4, lambda: f"{op}: expected {name} to have 4 dimensions, got shape {list(t.shape)}")
    kh, kw = weight.shape[2], weight.shape[3]
    out_h = (input.shape[2] + 2 * pad_h - (dilation_h * (kh - 1) + 1)) // stride_h + 1
    out_w = (input.shape[3] + 2 * pad_w - (dilation_w * (kw - 1) + 1)) // stride_w + 1
    torch._check(out_h > 0 and out_w > 0, lambda: f"{op}: the output would be empty")
    torch._check(
        offset.shape[0] == input.shape[0] and offset.shape[2] == out_h and offset.shape[3] == out_w,
        lambda: f"{op}: expected offset of shape [{input.shape[0]}, 2 * offset_groups * {kh} * {kw}, {out_h}, {out_w}], "
        f"got shape {list(offset.shape)}",
    )
    return out_h, out_w


# The dtype and rank checks of csrc/ops/pareto_checks.h (same words).
def check_pareto_floats(op: str, **tensors: tuple) -> None:
    for name, (t, dim) in tensors.items():
        torch._check(
            t.dtype in FLOAT_DTYPES, lambda: f"{op}: expected {name} to be a floating-point tensor, got {t.dtype}"
        )
        torch._check(t.dim() == dim, lambda: f"{op}: expected {name} with {dim} dimension(s), got shape {list(t.shape)}")


def check_pareto_integers(op: str, **tensors: tuple) -> None:
    for name, (t, dim) in tensors.items():
        torch._check(
            not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool,
            lambda: f"{op}: expected {name} to be an integer tensor, got {t.dtype}",
        )
        torch._check(t.dim() == dim, lambda: f"{op}: expected {name} with {dim} dimension(s), got shape {list(t.shape)}")
