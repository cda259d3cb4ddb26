import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nasx
from nasx.ops import _reference as ref

from conftest import needs_cuda
from targetgen import anchor_scene, dtypes, exact

threshold_pairs = st.sampled_from([(0.5, 0.4), (0.7, 0.3), (0.5, 0.5), (0.7, 0.7), (0.0, 0.0), (1.0, 0.0), (0.3, 0.1)])


@st.composite
def anchor_scenes(draw, max_n=400, max_g=30):
    """Anchors and GTs on a coarse integer grid, so that IoU ties (per anchor and per GT) are common."""
    n, g = draw(st.integers(1, max_n)), draw(st.integers(1, max_g))  # torchvision rejects empty sets
    seed = draw(st.integers(0, 2**31 - 1))
    grid = draw(st.sampled_from([1.0, 4.0, 0.0]))  # 0: continuous coordinates
    gen = torch.Generator().manual_seed(seed)

    def boxes(k):
        xy = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 64
        wh = torch.rand(k, 2, generator=gen, dtype=torch.float64) * 32 + 1
        b = torch.cat([xy, xy + wh], 1)
        return (b / grid).round() * grid if grid else b

    anchors, gts = boxes(n), boxes(g)
    if n > 2 and draw(st.booleans()):
        anchors[: n // 3] = gts[torch.randint(0, g, (n // 3,), generator=gen)]  # exact matches: IoU 1 ties
    return anchors, gts


@given(scene=anchor_scenes(), thr=threshold_pairs, low_quality=st.booleans(), dtype=dtypes)
def test_match_anchors_matches_torchvision_matcher(scene, thr, low_quality, dtype):
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    anchors, gts = (t.to(dtype) for t in scene)
    matched, max_iou = nasx.ops.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    quality = tv.ops.box_iou(gts, anchors)
    expected = Matcher(thr[0], thr[1], allow_low_quality_matches=low_quality)(quality)
    assert torch.equal(matched, expected)
    exact(max_iou, quality.max(dim=0).values)  # zero-area pairs give NaN, as box_iou
    r_matched, r_iou = ref.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    assert torch.equal(matched, r_matched)
    exact(max_iou, r_iou)


def test_match_anchors_thresholds_compared_in_iou_dtype():
    """float32(0.7) < 0.7: an IoU of exactly float32(0.7) is foreground, as in torchvision."""
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 7.0], [0.0, 0.0, 10.0, 3.0]])  # IoU 0.7 and 0.3 in float32
    iou = tv.ops.box_iou(gts, anchors)
    assert iou[0, 0].item() < 0.7
    for hi, lo in [(0.7, 0.3), (0.7, 0.7)]:
        expected = Matcher(hi, lo, allow_low_quality_matches=False)(iou)
        assert torch.equal(nasx.ops.match_anchors(anchors, gts, hi, lo)[0], expected)


def test_match_anchors_nan_boxes_like_torchvision():
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    nan = float("nan")
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [nan, 0.0, 5.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    iou = tv.ops.box_iou(gts, anchors)
    for low_quality in (False, True):
        expected = Matcher(0.5, 0.4, allow_low_quality_matches=low_quality)(iou)
        matched, max_iou = nasx.ops.match_anchors(anchors, gts, 0.5, 0.4, low_quality)
        assert torch.equal(matched, expected)
        torch.testing.assert_close(max_iou, iou.max(dim=0).values, equal_nan=True)


def test_match_anchors_empty(device):
    anchors = torch.rand(5, 4, device=device) + torch.tensor([0.0, 0.0, 1.0, 1.0], device=device)
    matched, iou = nasx.ops.match_anchors(anchors, torch.zeros(0, 4, device=device), 0.5, 0.4, True)
    assert matched.tolist() == [-1] * 5 and iou.tolist() == [0.0] * 5
    matched, iou = nasx.ops.match_anchors(anchors[:0], anchors, 0.5, 0.4, True)
    assert matched.shape == (0,) and iou.shape == (0,)


def test_match_anchors_large_scene_against_torchvision():
    tv = pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import Matcher

    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(20_000, 2, generator=gen) * 800
    anchors = torch.cat([xy, xy + torch.rand(20_000, 2, generator=gen) * 100 + 8], 1)
    gts = torch.cat([xy[:60] + 3, xy[:60] + 90], 1)
    expected = Matcher(0.5, 0.4, allow_low_quality_matches=True)(tv.ops.box_iou(gts, anchors))
    assert torch.equal(nasx.ops.match_anchors(anchors, gts, 0.5, 0.4, True)[0], expected)


# ---------------------------------------------------------------- errors, opcheck

B = torch.tensor([[0.0, 0.0, 4.0, 4.0]])

CASES = [
    (lambda: nasx.ops.match_anchors(B, B, 0.4, 0.5), ValueError,
     "match_anchors: expected low_threshold <= high_threshold, got low_threshold 0.5 and high_threshold 0.4"),
    (lambda: nasx.ops.match_anchors(B[:, :2], B, 0.5, 0.4), ValueError, "match_anchors: expected anchors of shape [N, 4]"),
    (lambda: nasx.ops.match_anchors(B, B.int(), 0.5, 0.4), TypeError, "match_anchors: expected gt_boxes to be a floating-point"),
    (lambda: nasx.ops.match_anchors(B, B, float("nan"), 0.4), ValueError, "thresholds must be numbers"),
]


@pytest.mark.parametrize("call,exc,fragment", CASES)
def test_bad_input_message(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)


def test_opcheck(device):
    anchors, gts = anchor_scene(device)
    torch.library.opcheck(torch.ops.nasx.match_anchors.default, (anchors, gts, 0.5, 0.4, True))


# ---------------------------------------------------------------- CUDA


@needs_cuda
@given(scene=anchor_scenes(max_n=3000, max_g=300), thr=threshold_pairs, low_quality=st.booleans(), dtype=dtypes)
def test_cuda_match_anchors_matches_cpu(scene, thr, low_quality, dtype):
    anchors, gts = (t.to(dtype) for t in scene)
    cpu = nasx.ops.match_anchors(anchors, gts, thr[0], thr[1], low_quality)
    gpu = nasx.ops.match_anchors(anchors.cuda(), gts.cuda(), thr[0], thr[1], low_quality)
    assert torch.equal(cpu[0], gpu[0].cpu())
    exact(gpu[1].cpu(), cpu[1])
