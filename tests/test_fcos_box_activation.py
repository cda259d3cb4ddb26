"""The FCOS box branch: ReLU (the FCOS repository's) can die, exp(s·x) (the FCOS paper's) cannot."""
import pytest
import torch

from nasx.models.detectors.fcos import ltrb_giou_loss
from nasx.models.heads.fcos_head import FCOSPredictor
from nasx.spaces.detectors import build_from_spec
from nasx.spaces.nas_fcos import NasFcosSpace


def _box_grad(activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The GIoU loss and its gradient on the box conv when every raw output is negative (the
    state a ReLU branch dies in)."""
    torch.manual_seed(0)
    pred = FCOSPredictor(in_channels=8, num_classes=3, num_levels=1, box_activation=activation)
    torch.nn.init.constant_(pred.box_reg.bias, -3.0)
    feats = [torch.rand(2, 8, 6, 6)]
    _, boxes, _ = pred(feats, feats)
    ltrb = boxes[0].permute(0, 2, 3, 1).reshape(-1, 4)
    target = torch.rand(ltrb.shape[0], 4) * 4 + 0.5
    loss = ltrb_giou_loss(ltrb, target).mean()
    loss.backward()
    return loss.detach(), pred.box_reg.weight.grad.abs().sum() + pred.box_reg.bias.grad.abs().sum()


def test_a_dead_relu_branch_gets_no_gradient_and_exp_does():
    loss, grad = _box_grad("relu")
    assert loss.item() == pytest.approx(1.0) and grad.item() == 0.0       # stuck: zero-size boxes, no gradient
    loss, grad = _box_grad("exp")
    assert loss.item() < 1.0 and grad.item() > 0.0


def test_box_activation_reaches_the_built_heads_and_is_checked():
    head = NasFcosSpace(channels=8, box_activation="exp").build(
        "baseline", in_channels={"c3": 8, "c4": 16, "c5": 32}, num_classes=2)[1]
    assert head.predictor.box_activation == "exp"
    spec = {"detector": "nas_fcos", "backbone": "basicblock_8_1-21-21-21", "arch": "baseline", "fpn_channels": 8,
            "num_classes": 2}
    assert build_from_spec(spec).head.predictor.box_activation == "relu"       # a spec without it: as before
    assert build_from_spec({**spec, "box_activation": "exp"}).head.predictor.box_activation == "exp"
    fcos = build_from_spec({"detector": "fcos", "backbone": "basicblock_8_1-21-21-21", "num_classes": 2,
                            "fpn_channels": 16, "box_activation": "exp"})
    assert fcos.head.predictor.box_activation == "exp"
    with pytest.raises(ValueError, match=r"box_activation must be one of \('relu', 'exp'\), got 'softplus'"):
        FCOSPredictor(in_channels=8, num_classes=2, box_activation="softplus")
    with pytest.raises(ValueError, match="NasFcosSpace: box_activation must be one of"):
        NasFcosSpace(channels=8, box_activation="sigmoid")
