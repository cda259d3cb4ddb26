"""Every op passes torch.library.opcheck and traces under torch.compile(fullgraph=True)."""
import pytest
import torch

import nasx
from nasx.ops import _reference as ref


def _inputs(n=50, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 1], 1).to(device)
    return boxes, torch.rand(n, generator=g).to(device), torch.randint(0, 3, (n,), generator=g).to(device)


def _calls(device):
    boxes, scores, idxs = _inputs(device=device)
    return [
        (torch.ops.nasx.box_iou.default, (boxes, boxes[:7])),
        (torch.ops.nasx.generalized_box_iou.default, (boxes[:3], boxes)),
        (torch.ops.nasx.nms.default, (boxes, scores, 0.5)),
        (torch.ops.nasx.batched_nms.default, (boxes, scores, idxs, 0.5)),
        (torch.ops.nasx.soft_nms.default, (boxes, scores, 0.3, 0.5, 0.001, "gaussian")),
        (torch.ops.nasx.nms.default, (boxes[:0], scores[:0], 0.5)),
    ]


@pytest.mark.parametrize("i", range(6))
def test_opcheck(i, device):
    op, args = _calls(device)[i]
    torch.library.opcheck(op, args)


def test_compile_fullgraph_detector_postprocess():
    """A typical post-processing graph with data-dependent NMS output compiles whole."""

    def postprocess(boxes, scores, idxs):
        keep = nasx.ops.batched_nms(boxes, scores, idxs, 0.5)
        kept = boxes[keep]
        return kept, nasx.ops.box_iou(kept, boxes).amax(dim=1)

    boxes, scores, idxs = _inputs(200)
    compiled = torch.compile(postprocess, fullgraph=True, backend="eager")
    kept, best = compiled(boxes, scores, idxs)
    ref_keep = ref.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(kept, boxes[ref_keep]) and torch.equal(best, ref.box_iou(boxes[ref_keep], boxes).amax(dim=1))
