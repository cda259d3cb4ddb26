"""Latency in ONNX Runtime: ``measure_latency(..., runtime="onnxruntime")``, ``nasx info --runtime`` and the
evaluators' ``latency_runtime`` setting that a search passes through."""
import json

import pytest
import torch
from torch import nn

from nasx.cli import main
from nasx.evaluate import ProxyConfig, ShortTrainConfig, measure_latency
from nasx.evaluate.cost import RUNTIMES

MBCONV = "mb8_c8s1:k3e1-c16s2:k3e3-c16s2:k3e3-c24s2:k3e3-c32s2:k3e3_64"


def test_runtime_is_checked_before_anything_runs():
    model = nn.Conv2d(3, 4, 3)
    image = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"runtime must be one of \('torch', 'onnxruntime'\), got 'tensorrt'"):
        measure_latency(model, image, runtime="tensorrt")
    with pytest.raises(ValueError, match="CPU execution provider; expected device 'cpu', got 'meta'"):
        measure_latency(model, image, device="meta", runtime="onnxruntime")
    with pytest.raises(ValueError, match=r"expected \(images Tensor\[B, C, H, W\]\).*got \['Tensor\[16\]'\]"):
        measure_latency(model, torch.randn(16), runtime="onnxruntime")
    with pytest.raises(ValueError, match="image sizes equal to the input's 16x16"):
        measure_latency(model, image, [(12, 16)], runtime="onnxruntime")
    for config in (ShortTrainConfig, ProxyConfig):
        with pytest.raises(ValueError, match="latency_runtime must be one of"):
            config(latency_runtime="onnx")
        assert config().latency_runtime == "torch"  # searches time in PyTorch unless told otherwise


def test_measure_latency_in_onnxruntime():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).train()
    report = measure_latency(model, torch.randn(1, 3, 32, 32), warmup=1, repeats=4, runtime="onnxruntime")
    assert report.runtime == "onnxruntime" and report.device == "cpu" and len(report.samples_ms) == 4
    assert 0 < report.min_ms <= report.median_ms
    assert model.training  # exported in eval mode, handed back as it came
    assert measure_latency(model, torch.randn(1, 3, 32, 32), repeats=2).runtime == "torch"


def test_info_passes_the_runtime_to_measure_latency(capsys, monkeypatch):
    import nasx.evaluate
    from nasx.evaluate.cost import LatencyReport

    calls = []

    def fake(model, *inputs, runtime="torch", **kwargs):  # the timing itself is tested above
        calls.append(runtime)
        return LatencyReport(median_ms=1.5, iqr_ms=0.1, min_ms=1.4, repeats=2, device="cpu", runtime=runtime)

    monkeypatch.setattr(nasx.evaluate, "measure_latency", fake)
    assert main(["info", "--detector", "ssdlite", "--backbone", MBCONV, "--classes", "2", "--input", "64",
                 "--latency", "--runtime", "onnxruntime", "--repeats", "2", "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency_ms"]
    assert calls == ["onnxruntime"] and latency["runtime"] == "onnxruntime" and latency["median"] == 1.5
    assert main(["info", "--detector", "ssdlite", "--backbone", MBCONV, "--classes", "2", "--input", "64",
                 "--latency", "--runtime", "onnxruntime", "--repeats", "2"]) == 0
    assert "on cpu in onnxruntime, batch 1" in capsys.readouterr().out


def test_info_runtime_needs_latency(capsys):
    assert main(["info", "--backbone", "resnet18", "--runtime", "onnxruntime"]) == 1
    assert "--runtime onnxruntime: it says where --latency times the model; add --latency" in capsys.readouterr().err


def test_searches_expose_the_runtime_flag():
    """Every search's evaluator config has the field, so its generated flags carry it (the SM-NAS search
    reads --short-latency-runtime, NAS-FCOS --proxy-latency-runtime)."""
    import argparse

    from nasx.pipelines.config_flags import add_config_arguments, config_from_args
    from nasx.pipelines.nas_fcos import NasFcosConfig
    from nasx.pipelines.sm_nas import SmNasConfig

    for config, flag, path in ((SmNasConfig, "--short-latency-runtime", "short"),
                               (NasFcosConfig, "--proxy-latency-runtime", "proxy")):
        parser = argparse.ArgumentParser()
        add_config_arguments(parser, config)
        args = parser.parse_args(["--data", "d", "--out", "o", flag, "onnxruntime"])
        assert getattr(config_from_args(config, args), path).latency_runtime == "onnxruntime"
        assert f"{{{','.join(RUNTIMES)}}}" in parser.format_help()  # the choices are shown
