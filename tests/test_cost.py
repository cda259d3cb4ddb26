import pytest
import torch
from conftest import needs_cuda
from torch import nn

from nasx.evaluate import count_macs, count_params, measure_latency, measure_together
from nasx.ops import DeformConv2d
from nasx.spaces import ResidualEncoding


def test_grouped_depthwise_linear_macs_are_the_closed_form():
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4),  # 16 x 8 x 8 out, 2 in-ch per group
        nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False),  # depthwise
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    report = count_macs(model, torch.randn(2, 8, 16, 16))
    grouped = 2 * 16 * 8 * 8 * (8 // 4) * 9
    depthwise = 2 * 16 * 8 * 8 * 1 * 25
    linear = 2 * 10 * 1024
    assert report.per_module == {"0": grouped, "1": depthwise, "5": linear}
    assert report.total == grouped + depthwise + linear


def test_conv_transpose_macs():
    model = nn.ConvTranspose2d(4, 6, 2, stride=2)
    assert count_macs(model, torch.randn(1, 4, 5, 7)).total == 4 * 5 * 7 * 6 * 4


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv_macs_are_conv_plus_sampling(modulated):
    layer = DeformConv2d(6, 4, 3, stride=2, modulated=modulated)
    report = count_macs(layer, torch.randn(1, 6, 9, 11))
    h, w, k = 5, 6, 9
    offsets = (3 if modulated else 2) * k
    assert report.per_module["offset_conv"] == offsets * h * w * 6 * k
    assert report.per_module[""] == 4 * h * w * 6 * k + 6 * k * h * w * (5 if modulated else 4)


def test_hooks_removed_and_training_flag_restored():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    stats = model[1].running_mean.clone()
    count_macs(model, torch.randn(1, 3, 8, 8))
    assert model.training and not model[0]._forward_hooks
    assert torch.equal(model[1].running_mean, stats)  # ran in eval mode


def test_shared_module_counts_every_call():
    conv = nn.Conv2d(2, 2, 1, bias=False)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(self.conv(x))

    assert count_macs(Twice(), torch.randn(1, 2, 3, 3)).total == 2 * 2 * 9 * 2


def _resnet50_macs(size: int) -> int:
    """conv + fc MACs of ResNet-50 v1.5 at size x size, written out from the paper's table."""
    total = 0
    s = size // 2
    total += s * s * 64 * 3 * 49  # 7x7/2 stem
    s //= 2  # max-pool
    in_ch = 64
    for i, (blocks, planes) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for b in range(blocks):
            stride = 2 if (i > 0 and b == 0) else 1
            total += s * s * planes * in_ch  # 1x1 reduce at the input resolution
            s_out = s // stride
            total += s_out * s_out * planes * planes * 9  # 3x3 (strided)
            total += s_out * s_out * planes * 4 * planes  # 1x1 expand
            if b == 0:
                total += s_out * s_out * planes * 4 * in_ch  # projection shortcut
            in_ch, s = planes * 4, s_out
    return total + 2048 * 1000


def test_torchvision_resnet50_macs():
    models = pytest.importorskip("torchvision.models")
    with torch.device("meta"):  # shapes are all the count needs
        model = models.resnet50()
    macs = count_macs(model, torch.empty(1, 3, 224, 224, device="meta")).total
    assert macs == _resnet50_macs(224)
    assert abs(macs / 4.09e9 - 1) < 0.01  # the published 4.1 GMACs


def test_residual_resnet50_params_equal_torchvision_minus_fc():
    models = pytest.importorskip("torchvision.models")
    tv = models.resnet50()
    ours = ResidualEncoding.parse("resnet50").build()
    assert count_params(ours) == count_params(tv) - count_params(tv.fc) == 23_508_032


def test_count_params_trainable_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 16 + 10
    assert count_params(model, trainable_only=True) == 10


def test_by_prefix_groups_parts():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(4, 4, 1)))
    model.add_module("head", nn.Conv2d(4, 2, 1))
    report = count_macs(model, torch.randn(1, 3, 2, 2))
    assert report.by_prefix() == {"backbone": 4 * (12 + 16), "head": 4 * 8}
    assert report.by_prefix(2) == {"backbone.0": 48, "backbone.1": 64, "head": 32}


def test_measure_latency_reports_positive_times():
    model = nn.Conv2d(3, 4, 3).train()
    report = measure_latency(model, torch.randn(1, 3, 16, 16), device="cpu", warmup=1, repeats=5)
    assert report.repeats == 5 and len(report.samples_ms) == 5
    assert 0 < report.min_ms <= report.median_ms and report.iqr_ms >= 0
    assert model.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(model, torch.randn(1, 3, 8, 8), repeats=0)


def test_measure_latency_at_one_thread_on_the_thread_clock():
    """The thread count is set while timing and restored; the thread clock leaves out time spent
    preempted — here, asleep: a call that sleeps 30 ms reads about 30 ms on the wall, ~0 on the thread."""
    import time

    class Sleepy(nn.Module):
        def forward(self, x):
            time.sleep(0.03)
            return x

    before = torch.get_num_threads()
    wall = measure_latency(Sleepy(), torch.randn(1), warmup=0, repeats=3, threads=1)
    cpu = measure_latency(Sleepy(), torch.randn(1), warmup=0, repeats=3, threads=1, clock="thread")
    assert wall.median_ms >= 29 and cpu.median_ms < 10 and cpu.clock == "thread" and cpu.threads == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match=r"measure_latency: clock 'thread' .* 2 threads"):
        measure_latency(Sleepy(), torch.randn(1), threads=2, clock="thread")
    with pytest.raises(ValueError, match=r"clock must be one of"):
        measure_latency(Sleepy(), torch.randn(1), clock="cpu")


def test_measure_together_interleaves_the_models():
    """One call of every model per sweep, warm-up sweeps untimed, each model's report its own; the
    training flags and the thread count restored; bad settings named."""
    calls = []

    class Logged(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    models = {"a": Logged("a").train(), "b": Logged("b").eval()}
    before = torch.get_num_threads()
    reports = measure_together(models, torch.randn(1), warmup=1, repeats=3, threads=1, clock="thread")
    assert calls == ["a", "b"] * 4 and set(reports) == {"a", "b"}
    assert all(r.repeats == 3 and len(r.samples_ms) == 3 and r.clock == "thread" and r.threads == 1
               for r in reports.values())
    assert models["a"].training and not models["b"].training and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="at least one model"):
        measure_together({}, torch.randn(1))
    with pytest.raises(ValueError, match="runtime must be 'torch'"):
        measure_together(models, torch.randn(1), runtime="onnxruntime")
    with pytest.raises(ValueError, match=r"measure_together: clock 'thread' .* 2 threads"):
        measure_together(models, torch.randn(1), threads=2, clock="thread")


@needs_cuda
def test_measure_latency_on_cuda():
    model = nn.Conv2d(3, 8, 3)
    report = measure_latency(model, torch.randn(1, 3, 64, 64), device="cuda", warmup=2, repeats=5)
    assert report.device == "cuda" and report.median_ms > 0
    assert next(model.parameters()).is_cuda
