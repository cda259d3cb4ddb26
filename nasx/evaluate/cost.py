"""Model cost: parameter count, multiply-accumulates (MACs) and latency.

MACs are measured, not derived from a config: one real forward pass with forward
hooks on the modules that do the arithmetic, so a head shared across pyramid levels
is counted once per call and any input size is exact. Like the NAS papers (and the
"FLOPs" columns of NAS-FCOS, SM-NAS, SSDLite, which are multiply-adds), only
convolutions and linear layers count: normalisation, activations, additions,
pooling, up-sampling and the post-processing cost nothing here; biases are not counted.

Per call of a counted module (N batch, out_elems = numel of the output):

- ``nn.Conv1d/2d/3d`` (``WSConv2d`` included, its weight standardisation not counted):
  ``out_elems * (C_in / groups) * prod(kernel)``; depthwise is ``groups = C_in``.
- ``nn.ConvTranspose*d``: ``in_elems * (C_out / groups) * prod(kernel)`` (every input
  element is scattered through the kernel).
- ``nn.Linear``: ``out_elems * in_features``.
- ``nasx.ops.DeformConv2d``: the convolution's MACs as a plain conv with its weight, plus
  the bilinear sampling: each of the ``N * C_in * K * H_out * W_out`` sampled values
  (K = kh * kw) is a weighted sum of 4 neighbours (4 MACs), and one more multiply by
  the mask when modulated. Its offset-predicting conv is an ``nn.Conv2d`` child and is
  counted as such.
"""
from __future__ import annotations

import contextlib
import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
from torch import nn

from nasx.ops import DeformConv2d

__all__ = ["LatencyReport", "MacsReport", "RUNTIMES", "count_detector_macs", "count_macs", "count_params",
           "measure_latency", "measure_together", "sweep_times", "torch_threads"]


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (shared parameters once); with
    ``trainable_only`` only those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass
class MacsReport:
    """MACs of one forward pass.

    Attributes:
        total: all counted MACs.
        per_module: qualified module name -> MACs summed over its calls (only modules that count).
    """

    total: int
    per_module: dict[str, int] = field(default_factory=dict)

    def by_prefix(self, depth: int = 1) -> dict[str, int]:
        """MACs grouped by the first ``depth`` components of the module names, e.g.
        ``{"backbone": ..., "neck": ..., "head": ...}`` for a detector at depth 1.
        The model itself (a counted module called as a whole) is ``""``."""
        if depth < 1:
            raise ValueError(f"by_prefix: depth must be >= 1, got {depth}")
        out: dict[str, int] = {}
        for name, macs in self.per_module.items():
            key = ".".join(name.split(".")[:depth])
            out[key] = out.get(key, 0) + macs
        return out


def _conv_macs(module: nn.modules.conv._ConvNd, inputs, output) -> int:
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel
    return output.numel() * (module.in_channels // module.groups) * kernel


def _linear_macs(module: nn.Linear, inputs, output) -> int:
    return output.numel() * module.in_features


def _deform_macs(module: DeformConv2d, inputs, output) -> int:
    weight = module.weight  # (C_out, C_in / G, kh, kw)
    kernel = weight.shape[2] * weight.shape[3]
    conv = output.numel() * weight.shape[1] * kernel
    n, _, h_out, w_out = output.shape
    c_in = inputs[0].shape[1]
    sampling = n * c_in * kernel * h_out * w_out * (5 if module.modulated else 4)
    return conv + sampling


def _macs_rule(module: nn.Module):
    if isinstance(module, DeformConv2d):
        return _deform_macs
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_macs
    if isinstance(module, nn.Linear):
        return _linear_macs
    return None


def count_macs(model: nn.Module, *inputs, **kwargs) -> MacsReport:
    """Multiply-accumulates of ``model(*inputs, **kwargs)``, measured in eval mode under
    ``torch.no_grad`` (the model's training flag and hooks are restored afterwards).

    The count covers the whole call, batch included: pass a batch of one for the
    per-image figure the papers report.
    """
    per_module: dict[str, int] = {}
    handles = []

    def make_hook(name, rule):
        def hook(module, args, output):
            per_module[name] = per_module.get(name, 0) + int(rule(module, args, output))

        return hook

    for name, module in model.named_modules():
        rule = _macs_rule(module)
        if rule is not None:
            handles.append(module.register_forward_hook(make_hook(name, rule)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return MacsReport(total=sum(per_module.values()), per_module=per_module)


class _DenseDetector(nn.Module):
    """A detector's backbone -> neck -> head, without decoding and NMS. The children keep
    their names, so the per-module names are the detector's own."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.backbone, self.neck, self.head = detector.backbone, detector.neck, detector.head

    def forward(self, images: torch.Tensor):
        return self.head(list(self.neck(self.backbone(images)).values()))


class _TwoStageDense(nn.Module):
    """A two-stage detector's ``forward_dense`` at a fixed number of RoIs, children named as the detector's."""

    def __init__(self, detector: nn.Module, num_rois: int):
        super().__init__()
        self.detector, self.num_rois = detector, num_rois

    def forward(self, images: torch.Tensor):
        return self.detector.forward_dense(images, self.num_rois)


def count_detector_macs(detector: nn.Module, image_size: tuple[int, int], *, batch: int = 1,
                        num_rois: int = 1000) -> MacsReport:
    """MACs of a detector on a ``batch`` of ``image_size`` (H, W) images.

    Dense detectors (``backbone``, ``neck`` returning a dict of levels, ``head`` taking their list:
    FCOS, RetinaNet, SSDLite): the whole network. Two-stage detectors (those with ``forward_dense``:
    Faster / Cascade R-CNN): backbone, neck, the RPN's convolutions and every R-CNN stage's head on
    ``num_rois`` RoIs per image (1000, the test-time proposal count of torchvision and mmdet-1.x).

    The pass runs on a copy of the detector on the ``meta`` device: shapes only, no memory and
    no arithmetic, so an 800 x 1088 ResNet-50 detector takes milliseconds. Decoding, proposal
    selection, RoI pooling and NMS are not counted (they are not multiply-accumulates of layers),
    so nothing of the post-processing has to run. ``by_prefix()`` splits the total by part
    (backbone / neck / head, or backbone / neck / rpn / roi_heads).
    """
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1 or batch < 1 or num_rois < 1:
        raise ValueError(f"count_detector_macs: expected a positive image size, batch and num_rois, got {image_size}, "
                         f"{batch} and {num_rois}")
    images = torch.empty(batch, 3, h, w, device="meta")
    if hasattr(detector, "forward_dense"):
        report = count_macs(copy.deepcopy(_TwoStageDense(detector, num_rois)).to("meta"), images)
        # Names as the detector's own ("backbone...", not "detector.backbone...").
        report.per_module = {k.removeprefix("detector."): v for k, v in report.per_module.items()}
        return report
    missing = [n for n in ("backbone", "neck", "head") if not isinstance(getattr(detector, n, None), nn.Module)]
    if missing:
        raise ValueError(f"count_detector_macs: expected a detector with backbone, neck and head modules (or "
                         f"forward_dense); {type(detector).__name__} lacks {missing}")
    dense = copy.deepcopy(_DenseDetector(detector)).to("meta")
    return count_macs(dense, images)


# Where measure_latency runs the model: eager PyTorch, or its ONNX export in ONNX Runtime (CPU).
RUNTIMES = ("torch", "onnxruntime")


def runtime_device(device, runtime: str):
    """Where a search times a candidate it trained on ``device``: there in PyTorch; on the CPU in
    ONNX Runtime, whose execution provider is the CPU's whatever device the training used."""
    return device if runtime == "torch" else "cpu"


@dataclass
class LatencyReport:
    """Time of one forward pass, in milliseconds, over ``repeats`` timed runs, on ``device`` in
    ``runtime`` (one of :data:`RUNTIMES`) at ``threads`` torch threads, read from ``clock``."""

    median_ms: float
    iqr_ms: float  # 75th minus 25th percentile
    min_ms: float
    repeats: int
    device: str
    samples_ms: list[float] = field(default_factory=list, repr=False)
    runtime: str = "torch"
    threads: int = 0
    clock: str = "wall"


#: What a latency is read from: the wall clock, or the calling thread's CPU time (CPU, one thread).
CLOCKS = ("wall", "thread")


def check_clock(clock: str, device, threads: int, runtime: str = "torch", who: str = "measure_latency") -> None:
    """``clock="thread"`` reads the calling thread's CPU time: only a one-thread PyTorch run on the
    CPU does all its work in that thread."""
    if clock not in CLOCKS:
        raise ValueError(f"{who}: clock must be one of {CLOCKS}, got {clock!r}")
    if clock == "thread" and (torch.device(device).type != "cpu" or threads != 1 or runtime != "torch"):
        raise ValueError(f"{who}: clock 'thread' (the calling thread's CPU time) measures PyTorch on the CPU at one "
                         f"thread; got device {str(device)!r}, {threads} threads, runtime {runtime!r}")


def _timed(call, warmup: int, repeats: int, sync, clock: str = "wall") -> list[float]:
    """Milliseconds of ``repeats`` calls after ``warmup`` untimed ones, each ended by ``sync()``."""
    now = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    for _ in range(warmup):
        call()
    sync()
    samples = []
    for _ in range(repeats):
        start = now()
        call()
        sync()
        samples.append((now() - start) / 1e6)
    return samples


def _onnxruntime_call(model: nn.Module, inputs: tuple, kwargs: dict, device: torch.device):
    """A no-argument callable running ``model``'s ONNX export on ``inputs`` in ONNX Runtime."""
    if device.type != "cpu":
        raise ValueError(f"measure_latency: runtime 'onnxruntime' times ONNX Runtime's CPU execution provider; "
                         f"expected device 'cpu', got {str(device)!r}")
    images = inputs[0] if inputs else None
    if kwargs or not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = [type(x).__name__ if not isinstance(x, torch.Tensor) else f"Tensor{list(x.shape)}" for x in inputs]
        raise ValueError(f"measure_latency: runtime 'onnxruntime' runs a detector's export on its images; expected "
                         f"(images Tensor[B, C, H, W]) and optionally their sizes, got {got}"
                         + (f" and keywords {sorted(kwargs)}" if kwargs else ""))
    size = tuple(images.shape[-2:])
    for extra in inputs[1:]:  # the graph clips boxes to the input's size, so only that size can be honoured
        if not isinstance(extra, (list, tuple)) or any(tuple(int(v) for v in s) != size for s in extra):
            raise ValueError(f"measure_latency: runtime 'onnxruntime' takes image sizes equal to the input's "
                             f"{size[0]}x{size[1]} (the exported graph clips to it), got {extra!r}")
    from nasx.export import export_onnx, ort_session
    from nasx.export.errors import require

    require("onnx", "onnxscript", "onnxruntime")  # before the export, not after it
    exported = export_onnx(model.to("cpu"), image_size=size, batch=images.shape[0])  # optimized, as deployed
    session = ort_session(exported)  # torch's thread count: both runtimes on the same cores
    feed = {session.get_inputs()[0].name: images.detach().cpu().float().numpy()}
    return lambda: session.run(None, feed)


def _time_runtime(model, inputs, kwargs, device, warmup, repeats, runtime, clock) -> list[float]:
    if runtime == "onnxruntime":
        return _timed(_onnxruntime_call(model, inputs, kwargs, device), warmup, repeats, lambda: None)

    def move(x):
        return x.to(device) if isinstance(x, torch.Tensor) else x

    inputs = tuple(move(x) for x in inputs)
    kwargs = {k: move(v) for k, v in kwargs.items()}
    model = model.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return _timed(lambda: model(*inputs, **kwargs), warmup, repeats, sync, clock)
    finally:
        model.train(was_training)


def sweep_times(jobs: Mapping[str, tuple[nn.Module, tuple]], device, warmup: int, repeats: int,
                clock: str = "wall") -> dict[str, list[float]]:
    """Milliseconds of ``repeats`` calls of every job (a module and its positional inputs), one call per
    job per sweep over all jobs, after ``warmup`` untimed sweeps (eval mode, no_grad; on CUDA each call
    is bracketed by synchronisation). Interleaved, so a load change on a shared machine touches every
    job alike — which timing them one after the other does not."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    now = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    modes = {}
    for name, (module, _) in jobs.items():
        modes[name] = module.training
        module.to(dev).eval()
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    try:
        with torch.no_grad():
            for sweep in range(warmup + repeats):
                for name, (module, args) in jobs.items():
                    sync()
                    start = now()
                    module(*args)
                    sync()
                    if sweep >= warmup:
                        samples[name].append((now() - start) / 1e6)
    finally:
        for name, (module, _) in jobs.items():
            module.train(modes[name])
    return samples


def _checked(who: str, device, warmup: int, repeats: int, threads: Optional[int], clock: str,
             runtime: str) -> tuple[torch.device, int]:
    """The checks of every timing; returns the device and the thread count to time at."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"{who}: expected warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{who}: device 'cuda' was asked for but torch sees no CUDA GPU")
    threads = int(threads or torch.get_num_threads())
    check_clock(clock, device, threads, runtime, who=who)
    return device, threads


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside, restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _report(samples: list[float], device, runtime: str, threads: int, clock: str) -> LatencyReport:
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) >= 2 else (samples[0],) * 3
    return LatencyReport(median_ms=statistics.median(samples), iqr_ms=q3 - q1, min_ms=min(samples),
                         repeats=len(samples), device=str(device), samples_ms=samples, runtime=runtime,
                         threads=threads, clock=clock)


def measure_together(models: Mapping[str, nn.Module], *inputs, device: str | torch.device = "cpu", warmup: int = 3,
                     repeats: int = 30, threads: Optional[int] = None, clock: str = "wall",
                     runtime: str = "torch") -> dict[str, LatencyReport]:
    """:func:`measure_latency` of several models *against each other*: ``repeats`` sweeps over all of
    them on the same ``inputs``, one call each per sweep (:func:`sweep_times`), so they are compared
    under the same load. On a shared CPU two models timed one after the other can differ by a third
    from the load alone; timed together, the same two agree within a few percent. PyTorch only
    (``runtime="torch"``); the models are moved to ``device`` and stay there."""
    if runtime != "torch":
        raise ValueError(f"measure_together: times PyTorch modules in one loop; runtime must be 'torch', "
                         f"got {runtime!r}")
    if not models:
        raise ValueError("measure_together: expected at least one model, got none")
    device, threads = _checked("measure_together", device, warmup, repeats, threads, clock, runtime)
    args = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    with torch_threads(threads):
        samples = sweep_times({name: (m, args) for name, m in models.items()}, device, warmup, repeats, clock)
    return {name: _report(s, device, runtime, threads, clock) for name, s in samples.items()}


def measure_latency(model: nn.Module, *inputs, device: str | torch.device = "cpu", warmup: int = 5,
                    repeats: int = 20, runtime: str = "torch", threads: Optional[int] = None, clock: str = "wall",
                    **kwargs) -> LatencyReport:
    """Median and interquartile range of ``model(*inputs, **kwargs)`` on ``device``, in eval
    mode under ``torch.no_grad``, after ``warmup`` untimed runs (allocator, cuDNN autotuning).

    Tensors in ``inputs`` / ``kwargs`` are moved to ``device``; the model is moved there too
    (and stays). On CUDA each run is bracketed by ``torch.cuda.synchronize`` so the time is
    the GPU's, not the launch queue's. Latency is per call: pass a batch of one.

    ``runtime="onnxruntime"`` times the deployed form instead: the model exported by
    :func:`nasx.export.export_onnx` (post-processing and NMS included, at the images' size) run by
    ONNX Runtime's CPU execution provider with ``torch.get_num_threads()`` intra-op threads, so it
    competes for the same cores as PyTorch would. The export (seconds) is not timed. ``inputs`` are
    then ``(images,)`` or ``(images, image_sizes)`` with every size the images' own; ``device`` must be
    CPU; needs ``pip install nasx[export]``.

    ``threads``: torch's intra-op threads while timing (default: the current count; restored after).
    ``clock="thread"`` reads the calling thread's CPU time instead of the wall clock (PyTorch on the
    CPU at one thread): time lost to other processes is left out, so a latency measured beside a
    busy worker reads as on a quiet core.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"measure_latency: runtime must be one of {RUNTIMES}, got {runtime!r}")
    device, threads = _checked("measure_latency", device, warmup, repeats, threads, clock, runtime)
    with torch_threads(threads):
        samples = _time_runtime(model, inputs, kwargs, device, warmup, repeats, runtime, clock)
    return _report(samples, device, runtime, threads, clock)
