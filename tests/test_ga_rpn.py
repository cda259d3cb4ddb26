"""GA-RPN (guided anchoring): structure, parameter count, targets, losses, a short training run."""
import math

import pytest
import torch
from torch import nn

from nasx.evaluate.cost import count_macs
from nasx.models.detectors.ga_rpn import GARPN
from nasx.models.detectors.ga_targets import (approx_shape_assign, bounded_iou_shape_loss, gt_levels,
                                              location_targets, valid_gt_boxes)
from nasx.ops import box_iou

LOSS_KEYS = {"rpn_loc", "rpn_shape", "rpn_cls", "rpn_reg"}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convs: threads only add contention on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_rpn(**kwargs):
    torch.manual_seed(0)
    settings = dict(in_channels=16, strides=(4, 8, 16), pre_nms_top_n=(200, 100), post_nms_top_n=(50, 40),
                    batch_size_per_image=64)
    return GARPN(**{**settings, **kwargs})


def features(b=2, c=16, device="cpu"):
    torch.manual_seed(1)
    return [torch.randn(b, c, 64 // s, 64 // s, device=device) for s in (4, 8, 16)]


def targets(device="cpu"):
    return [
        {"boxes": torch.tensor([[6.0, 8.0, 30.0, 40.0], [34.0, 30.0, 60.0, 58.0]], device=device),
         "labels": torch.tensor([0, 2], device=device)},
        {"boxes": torch.tensor([[12.0, 10.0, 52.0, 44.0]], device=device), "labels": torch.tensor([1], device=device)},
    ]


def empty_target(device="cpu"):
    return {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.int64, device=device)}


SIZES = [(64, 64), (60, 56)]


def test_parameter_count_matches_mmdet_ga_rpn_head_at_256_channels():
    c = 256
    by_hand = (
        c * c * 9 + c          # rpn_conv 3x3 with bias
        + c * 1 + 1            # conv_loc 1x1 -> 1
        + c * 2 + 2            # conv_shape 1x1 -> (dw, dh)
        + 2 * (4 * 2 * 9)      # conv_offset 1x1, 2 -> 4 offset groups x 9 taps x (dy, dx), no bias
        + c * c * 9            # deformable 3x3, no bias
        + c * 1 + 1            # conv_cls
        + c * 4 + 4            # conv_reg
    )
    assert by_hand == 1_182_104
    model = GARPN(in_channels=c, strides=(4, 8, 16, 32, 64))
    assert sum(p.numel() for p in model.parameters()) == by_hand
    # One offset group (the offsets 2 -> 18) saves 2 x 54 weights.
    single = GARPN(in_channels=c, strides=(4, 8, 16, 32, 64), deform_groups=1)
    assert sum(p.numel() for p in single.parameters()) == by_hand - 2 * 54
    head = model.head
    assert head.feature_adaption.conv_offset.bias is None and head.feature_adaption.conv_adaption.bias is None


def test_initialisation_as_mmdet():
    model = tiny_rpn()
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(model.head.conv_loc.bias, torch.tensor([prior]))
    for conv in (model.head.rpn_conv, model.head.conv_cls, model.head.conv_reg, model.head.conv_shape):
        assert conv.weight.std() < 0.02 and not conv.bias.any()
    _, _, _, loc = model.head(features())
    assert abs(torch.sigmoid(loc[0]).mean().item() - 0.01) < 0.005


def test_eval_proposals_structure(device):
    model = tiny_rpn().to(device).eval()
    proposals, losses = model(features(device=device), SIZES, targets(device))  # targets ignored in eval
    assert losses == {} and len(proposals) == 2
    for boxes, (h, w) in zip(proposals, SIZES):
        assert boxes.dim() == 2 and boxes.shape[1] == 4 and 0 < boxes.shape[0] <= 40
        assert not boxes.requires_grad and boxes.device.type == device
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= model.min_size).all()


def test_train_losses_and_gradients(device):
    model = tiny_rpn().to(device).train()
    tgts = targets(device)
    tgts[1] = empty_target(device)  # an image without objects trains too
    proposals, losses = model(features(device=device), SIZES, tgts)
    assert len(proposals) == 2 and all(p.shape[0] <= 50 and not p.requires_grad for p in proposals)
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert all(losses[k] > 0 for k in LOSS_KEYS)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_no_gt_anywhere_gives_zero_box_losses_that_reach_the_parameters(device):
    model = tiny_rpn().to(device).train()
    _, losses = model(features(device=device), SIZES, [empty_target(device), empty_target(device)])
    assert losses["rpn_shape"] == 0 and losses["rpn_reg"] == 0
    assert losses["rpn_loc"] > 0 and losses["rpn_cls"] > 0  # all negatives
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_degenerate_boxes_train_without_nan():
    model = tiny_rpn().train()
    degenerate = {"boxes": torch.tensor([[10.0, 10.0, 10.0, 30.0], [5.0, 40.0, 25.0, 40.0], [30.0, 30.0, 20.0, 50.0]]),
                  "labels": torch.tensor([0, 1, 2])}
    mixed = {"boxes": torch.tensor([[20.0, 20.0, 20.0, 40.0], [12.0, 10.0, 52.0, 44.0]]),
             "labels": torch.tensor([0, 1])}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        _, losses = model(features(), SIZES, [degenerate, mixed])
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
    assert valid_gt_boxes(degenerate["boxes"]).shape == (0, 4)
    assert valid_gt_boxes(mixed["boxes"]).tolist() == [[12.0, 10.0, 52.0, 44.0]]


def test_location_filter_and_empty_proposals():
    feats = features()
    model = tiny_rpn(loc_filter_thr=1.0).eval()  # no centre is that sure: nothing is proposed
    proposals, _ = model(feats, SIZES)
    assert all(p.shape == (0, 4) for p in proposals)
    model.loc_filter_thr = 0.0
    assert all(p.shape[0] > 0 for p in model(feats, SIZES)[0])
    # Training proposals are not filtered (mmdet's rule: the location branch is still learning).
    model.loc_filter_thr = 1.0
    assert all(p.shape[0] > 0 for p in model.train()(feats, SIZES, targets())[0])


def test_gt_levels_round_in_log_scale_and_clamp():
    sides = torch.tensor([0.0, 8.0, 32.0, 45.0, 46.0, 64.0, 128.0, 5000.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], dim=1)
    assert gt_levels(boxes, base_size=32, num_levels=3).tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_location_targets_centre_ignore_and_adjacent_levels():
    # A 32 x 32 GT (level 0 at base size 32) centred at (32, 32) on 64 x 64 -> levels of 16, 8, 4 cells.
    gt = torch.tensor([[16.0, 16.0, 48.0, 48.0]])
    target, valid = location_targets(gt, (4, 8, 16), [(16, 16), (8, 8), (4, 4)], base_size=32)
    assert target.shape == valid.shape == (16 * 16 + 8 * 8 + 4 * 4,)
    t0, v0 = target[:256].view(16, 16), valid[:256].view(16, 16)
    # Centre region [28.8, 35.2]: cell centres 30 and 34 (cells 7, 8); ignore region [24, 40]: cells 6..9.
    assert torch.nonzero(t0).tolist() == [[7, 7], [7, 8], [8, 7], [8, 8]]
    ignored = torch.nonzero(~v0)
    assert ignored.shape[0] == 16 - 4 and ignored.min() == 6 and ignored.max() == 9
    # Level 1 is adjacent: its ignore region (cells 3, 4) is ignored, nothing positive.
    t1, v1 = target[256:320].view(8, 8), valid[256:320].view(8, 8)
    assert not t1.any() and torch.nonzero(~v1).tolist() == [[3, 3], [3, 4], [4, 3], [4, 4]]
    # Level 2 is two levels away: plain negatives.
    assert not target[320:].any() and valid[320:].all()
    # An 8 x 8 GT centred at (24, 32): no cell centre in its centre region, so its centre cell (row 8,
    # column 6) is positive, beating the first GT's ignore region. No GT: everything negative.
    both = torch.tensor([[16.0, 16.0, 48.0, 48.0], [20.0, 28.0, 28.0, 36.0]])
    t2, v2 = location_targets(both, (4, 8, 16), [(16, 16), (8, 8), (4, 4)], base_size=32)
    assert t2[:256].view(16, 16)[8, 6] == 1 and v2[:256].view(16, 16)[8, 6]
    assert int(t2[:256].sum()) == 5
    t3, v3 = location_targets(torch.zeros(0, 4), (4, 8, 16), [(16, 16), (8, 8), (4, 4)], base_size=32)
    assert not t3.any() and v3.all()


def test_approx_shape_assign_takes_the_best_of_the_nine_approximates():
    model = tiny_rpn()
    sizes = [(16, 16), (8, 8), (4, 4)]
    approxs = torch.cat(model.approx_generator(sizes)).view(-1, 9, 4)            # (N, 9, 4)
    gt = torch.tensor([[10.0, 20.0, 50.0, 40.0]])                                # 40 x 20: a wide box
    matched = approx_shape_assign(approxs, gt)
    centre_cell = 7 * 16 + 7                                                     # cell centred at (30, 30)
    assert matched[centre_cell] == 0
    # Its best approximate is wide (ratio 0.5); no single square anchor would reach IoU 0.7.
    ious = box_iou(gt, approxs[centre_cell])[0]
    assert ious.max() >= 0.7 and ious.argmax() < 3
    assert matched[0] == -1 and (matched >= -2).all()
    assert (approx_shape_assign(approxs, torch.zeros(0, 4)) == -1).all()


def test_bounded_iou_shape_loss():
    gt = torch.tensor([[20.0, 10.0], [20.0, 10.0], [0.0, 10.0]])
    pred = torch.tensor([[20.0, 10.0], [40.0, 10.0], [20.0, 10.0]])
    loss = bounded_iou_shape_loss(pred, gt, beta=0.2)
    # d = 1 - min(w / w_g, w_g / w), smooth L1: 0 for equal sizes, 0.5 - 0.1 for a factor 2.
    assert loss[0].item() == pytest.approx(0.0, abs=1e-4)
    assert loss[1].item() == pytest.approx(0.4, abs=1e-3)
    assert torch.isfinite(loss[2]) and loss[2].item() == pytest.approx(0.9, abs=1e-3)


def test_mac_counting_sees_the_deformable_conv():
    model = tiny_rpn()
    report = count_macs(model.head, features(b=1))
    # 16 x 16 + 8 x 8 + 4 x 4 outputs, 16 x 16 x 9 weights each, plus 4 bilinear taps per sample.
    cells = 256 + 64 + 16
    assert report.per_module["feature_adaption.conv_adaption"] == cells * 16 * 16 * 9 + cells * 16 * 9 * 4


def synthetic_images(boxes, size=64):
    """Objects whose pixels encode their position within the box (x / y ramps) and a presence channel:
    a tiny backbone can locate centres and sizes from local features."""
    images = torch.zeros(len(boxes), 3, size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for i, bs in enumerate(boxes):
        for x1, y1, x2, y2 in bs.tolist():
            inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
            images[i, 0][inside] = ((xs - (x1 + x2) / 2) / (x2 - x1) * 2)[inside]
            images[i, 1][inside] = ((ys - (y1 + y2) / 2) / (y2 - y1) * 2)[inside]
            images[i, 2][inside] = 1.0
    return images


class TinyDetector(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.rpn = GARPN(in_channels=c, strides=(4, 8, 16), pre_nms_top_n=(200, 100), post_nms_top_n=(50, 50),
                         batch_size_per_image=64)

    def forward(self, images, sizes, targets=None):
        f0 = self.stem(images)
        f1 = self.down1(f0)
        return self.rpn([f0, f1, self.down2(f1)], sizes, targets)


def test_training_lowers_the_loss_and_finds_the_objects():
    torch.manual_seed(0)
    boxes = [torch.tensor([[6.0, 8.0, 30.0, 40.0], [34.0, 30.0, 60.0, 58.0]]), torch.tensor([[12.0, 10.0, 52.0, 44.0]])]
    tgts = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.int64)} for b in boxes]
    images, sizes = synthetic_images(boxes), [(64, 64), (64, 64)]
    model = TinyDetector()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def recall_iou():
        """Mean over GTs of the best IoU among the image's 10 best proposals."""
        model.eval()
        with torch.no_grad():
            proposals, _ = model(images, sizes)
        model.train()
        return torch.cat([box_iou(b, p[:10]).max(dim=1).values for b, p in zip(boxes, proposals)]).mean().item()

    totals = []
    for _ in range(60):
        _, losses = model(images, sizes, tgts)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-5:]) / 5 < 0.5 * sum(totals[:5]) / 5
    assert recall_iou() > 0.5


def test_input_errors():
    model = tiny_rpn().train()
    feats = features()
    with pytest.raises(ValueError, match="got 2 feature levels, expected 3"):
        model(feats[:2], SIZES, targets())
    with pytest.raises(ValueError, match=r"feature level 1: expected Tensor\[B, 16, H, W\]"):
        model([feats[0], feats[1][:, :8], feats[2]], SIZES, targets())
    with pytest.raises(ValueError, match="same B on every level"):
        model([feats[0], feats[1][:1], feats[2]], SIZES, targets())
    with pytest.raises(ValueError, match="got 2 images but 1 image_sizes"):
        model(feats, SIZES[:1], targets())
    with pytest.raises(ValueError, match="targets are required in training mode"):
        model(feats, SIZES)
    with pytest.raises(ValueError, match="got 2 images but 1 targets"):
        model(feats, SIZES, targets()[:1])
    bad = targets()
    bad[1] = {"boxes": torch.zeros(3, 5), "labels": torch.zeros(3, dtype=torch.int64)}
    with pytest.raises(ValueError, match=r"target 1: expected boxes Tensor\[G, 4\] and labels Tensor\[G\]"):
        model(feats, SIZES, bad)
    bad[1] = {"boxes": torch.zeros(3, 4), "labels": torch.zeros(2, dtype=torch.int64)}
    with pytest.raises(ValueError, match="target 1: expected boxes"):
        model(feats, SIZES, bad)
    bad[1] = {"boxes": torch.zeros(3, 4)}
    with pytest.raises(ValueError, match="target 1 needs Tensors 'boxes' and 'labels'"):
        model(feats, SIZES, bad)


def test_constructor_errors():
    with pytest.raises(ValueError, match="pre_nms_top_n is a \\(training, inference\\) pair"):
        GARPN(in_channels=16, strides=(4, 8), pre_nms_top_n=(100,))
    with pytest.raises(ValueError, match="bg_iou <= fg_iou"):
        GARPN(in_channels=16, strides=(4, 8), fg_iou=0.3, bg_iou=0.7)
    with pytest.raises(ValueError, match="center_ratio <= ignore_ratio"):
        GARPN(in_channels=16, strides=(4, 8), center_ratio=0.6, ignore_ratio=0.5)
    with pytest.raises(ValueError, match="multiple of deform_groups"):
        GARPN(in_channels=18, strides=(4, 8))
    with pytest.raises(ValueError, match="at least one level"):
        GARPN(in_channels=16, strides=())
