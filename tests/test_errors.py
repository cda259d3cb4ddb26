"""Bad input gets an error that names the op, the argument, what was expected and what came."""
import pytest
import torch

import nasx

B = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]])
S = torch.tensor([0.9, 0.8])

CASES = [
    # (call, exception, message fragment)
    (lambda: nasx.ops.nms(B[:, :3], S, 0.5), ValueError, "nms: expected boxes of shape [N, 4] (x1, y1, x2, y2), got shape [2, 3]"),
    (lambda: nasx.ops.nms(B[None], S, 0.5), ValueError, "got shape [1, 2, 4]"),
    (lambda: nasx.ops.nms(B, S[:1], 0.5), ValueError, "expected scores of shape [N] with N = boxes.size(0) = 2, got shape [1]"),
    (lambda: nasx.ops.nms(B, S[None], 0.5), ValueError, "got shape [1, 2]"),
    (lambda: nasx.ops.nms(B.long(), S, 0.5), TypeError, "expected boxes to be a floating-point tensor"),
    (lambda: nasx.ops.nms(B, S.long(), 0.5), TypeError, "expected scores to be a floating-point tensor, got Long"),
    (lambda: nasx.ops.nms(B, S, float("nan")), ValueError, "iou_threshold must be a number"),
    (lambda: nasx.ops.batched_nms(B, S, torch.tensor([0.0, 1.0]), 0.5), TypeError, "expected idxs to be an integer tensor"),
    (lambda: nasx.ops.batched_nms(B, S, torch.tensor([0]), 0.5), ValueError, "expected idxs of shape [N] with N = boxes.size(0) = 2, got shape [1]"),
    (lambda: nasx.ops.box_iou(B, B[:, :2]), ValueError, "box_iou: expected boxes2 of shape [N, 4]"),
    (lambda: nasx.ops.generalized_box_iou(B.int(), B), TypeError, "generalized_box_iou: expected boxes1 to be a floating-point tensor"),
    (lambda: nasx.ops.soft_nms(B, S, method="hard"), ValueError, 'expected method "gaussian" or "linear", got "hard"'),
    (lambda: nasx.ops.soft_nms(B, S, sigma=0.0), ValueError, "expected sigma > 0, got 0"),
    (lambda: nasx.ops.soft_nms(B, S[:1]), ValueError, "soft_nms: expected scores of shape [N]"),
]


@pytest.mark.parametrize("call,exc,fragment", CASES)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


def test_mixed_devices_named():
    if not (torch.cuda.is_available() and nasx.cuda_enabled()):
        pytest.skip("needs a CUDA GPU")
    with pytest.raises(ValueError, match="expected all tensors on one device, got boxes on cuda:0 and scores on cpu"):
        nasx.ops.nms(B.cuda(), S, 0.5)
    with pytest.raises(ValueError, match="boxes1 on cpu and boxes2 on cuda:0"):
        nasx.ops.box_iou(B, B.cuda())


def test_bad_input_leaves_inputs_untouched():
    boxes, scores = B.clone(), S.clone()
    with pytest.raises(ValueError):
        nasx.ops.nms(boxes, scores[:1], 0.5)
    assert torch.equal(boxes, B) and torch.equal(scores, S)
