import math

import pytest
import torch
from conftest import needs_cuda

from nasx.models.detectors import AnchorGenerator, BoxCoder, DefaultBoxGenerator, RetinaNet, SSDLite
from nasx.spaces.detectors import build_detector

TINY_RESIDUAL = "basicblock_8_1-2-2-2"  # channels 8, 16, 32, 64 at strides 4..32
TINY_MBCONV = "mb8_c8s1:k3e1-c16s2:k3e3-c16s2:k3e3-c24s2:k3e3-c32s2:k3e3_64"


def tiny(name, **kwargs):
    torch.manual_seed(0)
    if name == "retinanet":
        return build_detector("retinanet", backbone=TINY_RESIDUAL, num_classes=3, fpn_channels=16, head_norm="gn",
                              **kwargs)
    return build_detector("ssdlite", backbone=TINY_MBCONV, num_classes=3, extra_channels=(32, 32, 16, 16), **kwargs)


def batch():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 30.0, 60.0, 62.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[10.0, 8.0, 50.0, 44.0]]), "labels": torch.tensor([1])},
    ]
    return images, [(64, 64), (60, 56)], targets


DETECTORS = ["retinanet", "ssdlite"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convs: threads only add contention on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", DETECTORS)
def test_train_losses_finite_and_backward(name):
    model = tiny(name).train()
    images, sizes, targets = batch()
    losses = model(images, sizes, targets)
    assert set(losses) == {"cls", "reg"}
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_retinanet_giou_loss_and_image_without_objects():
    model = tiny("retinanet", reg_loss="giou").train()
    images, sizes, targets = batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, sizes, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("name", DETECTORS)
def test_eval_outputs_follow_the_contract(name):
    model = tiny(name, score_thresh=0.0).eval()
    images, sizes, _ = batch()
    with torch.no_grad():
        out = model(images, sizes)
    assert len(out) == 2
    for det, (h, w) in zip(out, sizes):
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert 0 < k <= 100 and det["boxes"].shape == (k, 4)
        assert det["scores"].shape == (k,) and det["labels"].shape == (k,) and det["labels"].dtype == torch.int64
        assert det["labels"].min() >= 0 and det["labels"].max() < 3
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # by decreasing score


@pytest.mark.parametrize("name", DETECTORS)
def test_a_few_steps_reduce_the_loss(name):
    model = tiny(name).train()
    images, sizes, targets = batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(8):
        loss = sum(model(images, sizes, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0], history


@pytest.mark.parametrize("name", DETECTORS)
def test_bad_inputs_raise_clear_errors(name):
    model = tiny(name).train()
    images, sizes, targets = batch()
    with pytest.raises(ValueError, match="targets are required in training mode"):
        model(images, sizes)
    with pytest.raises(ValueError, match=r"Tensor\[B, 3, H, W\].*\[3, 64, 64\]"):
        model.eval()(images[0], sizes)
    with pytest.raises(ValueError, match="target 1 needs 'boxes' and 'labels'"):
        model.train()(images, sizes, [targets[0], {"boxes": targets[1]["boxes"]}])


def test_anchor_generator_shapes_order_and_cache():
    gen = AnchorGenerator(sizes=(32, 64), strides=(8, 16))
    a3, a4 = gen([(2, 3), (1, 2)], device="cpu")
    assert a3.shape == (2 * 3 * 9, 4) and a4.shape == (2 * 9, 4)
    wh = a3[:, 2:] - a3[:, :2]
    # the 9 shapes of a location: 3 ratios x 3 octave scales of base 32
    areas = (wh[:9, 0] * wh[:9, 1]).view(3, 3)
    expected = torch.tensor([32.0 ** 2 * s ** 2 for s in (1, 2 ** (1 / 3), 2 ** (2 / 3))])
    assert torch.allclose(areas, expected.expand(3, 3), rtol=1e-5)
    assert torch.allclose(wh[:9, 1] / wh[:9, 0], torch.tensor([0.5, 1.0, 2.0]).repeat_interleave(3), rtol=1e-5)
    centres = (a3[:, :2] + a3[:, 2:]) / 2
    assert torch.allclose(centres[0], torch.tensor([4.0, 4.0])) and torch.allclose(centres[9], torch.tensor([12.0, 4.0]))
    assert torch.allclose(centres[27], torch.tensor([4.0, 12.0]))  # second row
    assert gen([(2, 3), (1, 2)], device="cpu")[0] is a3
    with pytest.raises(ValueError, match="expected 2 levels"):
        gen([(2, 3)])


def test_default_boxes_follow_ssdlite():
    gen = DefaultBoxGenerator()
    assert gen.num_anchors == [3, 6, 6, 6, 6, 6]
    assert [round(s, 3) for s in gen.scales] == [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0]
    boxes = gen([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], (320, 320))
    assert [b.shape[0] for b in boxes] == [1200, 600, 150, 54, 24, 6]
    last = boxes[-1]
    wh = last[:, 2:] - last[:, :2]
    assert torch.allclose(wh[0], torch.tensor([0.95 * 320, 0.95 * 320]))
    assert torch.allclose(wh[-1], torch.full((2,), math.sqrt(0.95) * 320))
    assert torch.allclose((last[:, :2] + last[:, 2:]) / 2, torch.tensor([160.0, 160.0]))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_round_trip(weights):
    coder = BoxCoder(weights)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 45.0, 25.0]])
    boxes = torch.tensor([[1.0, 2.0, 13.0, 18.0], [0.0, 10.0, 60.0, 30.0]])
    deltas = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(deltas, anchors), boxes, atol=1e-5)
    assert torch.allclose(coder.encode(anchors, anchors), torch.zeros(2, 4))


def test_head_and_anchor_mismatch_is_rejected():
    model = tiny("retinanet")
    with pytest.raises(ValueError, match="predicts 9 anchors per location but the anchor generator makes 4"):
        RetinaNet(backbone=model.backbone, neck=model.neck, head=model.head, num_classes=3,
                  anchor_generator=AnchorGenerator(aspect_ratios=(1.0, 2.0), scales=(1.0, 2.0)))
    ssd = tiny("ssdlite")
    with pytest.raises(ValueError, match=r"SSDLite: the head predicts \[3, 6, 6, 6, 6, 6\]"):
        SSDLite(backbone=ssd.backbone, neck=ssd.neck, head=ssd.head, num_classes=3,
                box_generator=DefaultBoxGenerator(reduce_lowest=False))


def test_ssdlite_taps_the_expansion_of_the_first_stride32_block():
    model = tiny("ssdlite")
    assert model.backbone.channels == {"c4": 24 * 3, "c5": 64}
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert feats["c4"].shape == (1, 72, 4, 4) and feats["c5"].shape == (1, 64, 2, 2)
    plain = build_detector("ssdlite", backbone=TINY_MBCONV, num_classes=3, tap_expansion=False)
    assert plain.backbone.channels == {"c4": 24, "c5": 64}
    with pytest.raises(ValueError, match="ssdlite has no FPN"):
        build_detector("ssdlite", backbone=TINY_MBCONV, num_classes=3, fpn_channels=128)


@needs_cuda
@pytest.mark.parametrize("name", DETECTORS)
def test_cuda_train_and_eval(name):
    model = tiny(name).cuda().train()
    images, sizes, targets = batch()
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    losses = model(images.cuda(), sizes, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    out = model.eval()(images.cuda(), sizes)
    assert out[0]["boxes"].is_cuda and out[0]["labels"].dtype == torch.int64
