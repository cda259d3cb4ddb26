"""Shape and dtype checks for the fake (meta) kernels.

They mirror the C++ checks (csrc/ops/box_checks.h) so that a graph traced by
torch.compile fails on the same inputs the eager op rejects, with the same words.
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
