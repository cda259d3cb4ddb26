"""A latency look-up table for NAS-EOD's space: every part of a candidate detector timed once on a
device, a candidate's latency predicted as the sum of its parts — so a search can put latency in
its reward (``Lat(m)``) without timing every candidate; a worker process gets the table by pickling,
a run directory keeps it as JSON (:meth:`LatencyTable.to_dict`).

Entries (ms, batch 1, eval mode, no_grad, at the thread count the table records):

- ``stem``; ``backbone{i}:<layer>``: each of the 17 backbone layers in each of its 12 (k, e, SE)
  options; ``backbone.head``: the 1x1 conv to 1280;
- per neck width w: ``neck@w.lateral.p{3,4,5}`` (1x1 convs), ``neck@w.merge.p{4,3}`` (a top-down
  step: up-sampling, concatenation, separable 3x3), ``neck@w.block.p{5,4,3}:<layer>`` (each searched
  block in each of its 12 options), ``neck@w.extra.p{6,7}`` (stride-2 separable convs), ``head@w``
  (the whole separable head on P3-P7), ``postprocess@w`` (from the head's end to the detector's:
  anchors, decoding, score threshold, NMS) and ``glue@w`` (a whole call less all of the above:
  Python between the modules, input checks).

How: each part is timed *inside a real forward pass*, by forward hooks, in 12 x (neck widths)
reference detectors, one per layer option with every searched layer in that option (shapes do not
depend on the options, so each reference times one option at every position). A module timed alone
in a loop keeps its weights and input hot in the caches and its allocations recycled, and reads
fast; inside the network it pays what it pays in a candidate (on a busy 2-core CPU the first e6
block at 128 px measured 1.8x its isolated time). The references are called in sweeps, one call
each per sweep, ``repeats`` sweeps after ``warmup``, so a load change on a shared machine touches
every entry alike; each entry keeps the median (or min) of its calls. :meth:`LatencyTable.validate` times whole
sampled detectors in the same sweeps.

``clock="thread"`` (CPU at one thread) reads the calling thread's CPU time instead of the wall
clock: time spent preempted by other processes is left out, which makes a table measured on a busy
shared machine usable; the wall clock (default) is what a device delivers. On CUDA every hook
synchronises, so each part is its own GPU time plus a launch; the sum is an upper bound when the
launches of a real call overlap the GPU's work.

The post-processing is that of untrained detectors, whose scores mostly fall below the threshold,
like the candidates a search times; a trained detector's NMS sees more boxes.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from nasx.evaluate.cost import CLOCKS, check_clock, sweep_times, torch_threads
from nasx.evaluate.rank import kendall_tau, spearman_rho
from nasx.spaces.mbconv import MBLayer
from nasx.spaces.nas_eod import BACKBONE_LAYERS, EXPANSIONS, KERNELS, NECK_LEVELS, SE, NasEodSpace
from nasx.spaces.space import as_rng

__all__ = ["CLOCKS", "LatencyTable", "OPTIONS", "SAMPLINGS", "STATISTICS", "spread_sample"]

log = logging.getLogger(__name__)

STATISTICS = ("median", "min")
SAMPLINGS = ("spread", "uniform")
SPREAD_SHARPNESS = 3.0   # log-odds between a decision's cheapest and dearest option at the extreme tilts
FORMAT = "nasx.latency_table/1"
OPTIONS = tuple(MBLayer(k, e, se) for k in KERNELS for e in EXPANSIONS for se in SE)   # the 12 of every layer
EXTRA_LEVELS = ("p6", "p7")
_STATS: dict[str, Callable] = {"median": statistics.median, "min": min}

Job = tuple[nn.Module, tuple]   # a module and its positional inputs


class _Dense(nn.Module):
    """A detector without its post-processing: backbone -> neck -> head."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor):
        det = self.detector
        return det.head(list(det.neck(det.backbone(images)).values()))


def spread_sample(space: NasEodSpace, tilt: float, rng) -> dict:
    """An architecture of ``space`` whose every decision leans to its cheap options (``tilt`` -1) or its
    dear ones (+1): option j of n drawn with probability proportional to exp(s·tilt·j/(n-1)), s =
    :data:`SPREAD_SHARPNESS` (every decision's options are in increasing cost: k 3 < 5, e 1 < 3 < 6, SE
    off < on, narrow < wide neck). ``tilt`` 0 is uniform sampling."""
    if not -1 <= tilt <= 1:
        raise ValueError(f"spread_sample: tilt must be in [-1, 1], got {tilt}")
    rng = as_rng(rng)
    indices = []
    for d in space.decisions():
        n = d.valid
        weights = [math.exp(SPREAD_SHARPNESS * tilt * j / max(n - 1, 1)) for j in range(n)]
        u, acc = rng.random() * sum(weights), 0.0
        for j, w in enumerate(weights):
            acc += w
            if u < acc:
                break
        indices.append(j)
    return space.from_indices(indices)


def _references(space: NasEodSpace, device: str, seed: int) -> list[tuple[nn.Module, dict[nn.Module, str], int]]:
    """One detector per (layer option, neck width) with every searched layer in that option, and the
    table entry each of its timed modules feeds: together they time every option of every layer in
    a real forward pass (the cache and allocator state it leaves are the network's)."""
    out = []
    for option in OPTIONS:
        for width in space.neck_widths:
            arch = {**{f"backbone{i}.{f}": v for i in range(BACKBONE_LAYERS)
                       for f, v in (("k", option.kernel), ("e", option.expansion), ("se", option.se))},
                    "neck.width": width,
                    **{f"neck.{p}.{f}": v for p in NECK_LEVELS
                       for f, v in (("k", option.kernel), ("e", option.expansion), ("se", option.se))}}
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                det = space.build(arch).to(device).eval()
            bb, neck, prefix = det.backbone, det.neck, f"neck@{width}"
            if list(neck.block) != list(NECK_LEVELS) or neck.out_names[len(NECK_LEVELS):] != list(EXTRA_LEVELS):
                raise RuntimeError(f"LatencyTable: the neck has levels {neck.out_names} and blocks {list(neck.block)}; "
                                   f"the table expects blocks {list(NECK_LEVELS)} and extra levels "
                                   f"{list(EXTRA_LEVELS)}")
            keys = {bb.stem: "stem", det.head: f"head@{width}"}
            keys.update({b: f"backbone{i}:{option}" for i, b in enumerate(b for stage in bb.stages for b in stage)})
            if bb.head is not None:
                keys[bb.head] = "backbone.head"
            keys.update({m: f"{prefix}.lateral.{p}" for p, m in neck.lateral.items()})
            keys.update({m: f"{prefix}.merge.{p}" for p, m in neck.merge.items()})
            keys.update({m: f"{prefix}.block.{p}:{option}" for p, m in neck.block.items()})
            keys.update({m: f"{prefix}.extra.{p}" for p, m in zip(EXTRA_LEVELS, neck.extra)})
            out.append((det, keys, width))
    return out


def _hooked_sweeps(references, input_size, device: str, warmup: int, repeats: int, clock: str,
                   seed: int = 0) -> dict[str, list[float]]:
    """Milliseconds of every entry over ``repeats`` sweeps (after ``warmup``) over the reference
    detectors. Per detector and sweep: one call with hooks timing each module (its entry), the
    post-processing (from the head's end to the call's end: anchors, decoding, NMS) and one call
    with the hooks idle whose total, less the parts, is the glue (``glue@w``: Python between the
    modules, input checks)."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    now = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    images = torch.rand(1, 3, *input_size, generator=torch.Generator().manual_seed(seed)).to(dev)
    state = {"on": False, "head_end": 0}
    starts: dict[nn.Module, int] = {}
    call: dict[str, float] = {}

    def pre(module, _args):
        if state["on"]:
            sync()
            starts[module] = now()

    def post(module, _args, _out):
        if state["on"]:
            sync()
            end = now()
            call[keys_of[module]] = (end - starts.pop(module)) / 1e6
            if module in heads:
                state["head_end"] = end

    keys_of = {module: key for _, keys, _ in references for module, key in keys.items()}
    heads = {det.head for det, _, _ in references}
    hooks = [h for module in keys_of
             for h in (module.register_forward_pre_hook(pre), module.register_forward_hook(post))]
    samples: dict[str, list[float]] = {}
    try:
        with torch.no_grad():
            for sweep in range(warmup + repeats):
                for det, _, width in references:
                    call.clear()
                    state["on"] = True
                    det(images)
                    sync()
                    post_ms = (now() - state["head_end"]) / 1e6
                    state["on"] = False
                    sync()
                    start_plain = now()
                    det(images)
                    sync()
                    total = (now() - start_plain) / 1e6
                    if sweep < warmup:
                        continue
                    for key, ms in call.items():
                        samples.setdefault(key, []).append(ms)
                    samples.setdefault(f"postprocess@{width}", []).append(post_ms)
                    samples.setdefault(f"glue@{width}", []).append(total - sum(call.values()) - post_ms)
    finally:
        for h in hooks:
            h.remove()
    return samples


class LatencyTable:
    """Measured latencies (ms) of the parts of :class:`~nasx.spaces.nas_eod.NasEodSpace`'s detectors;
    see the module docstring for the entries and how they are timed. Build one with :meth:`measure`,
    predict with :meth:`predict`, check the prediction against whole detectors with :meth:`validate`.
    Plain data: pickles, and :meth:`to_dict` / :meth:`from_dict` go through JSON.

    Args:
        entries: entry name -> milliseconds.
        space: the space's :meth:`~NasEodSpace.settings` (the table rebuilds the space to read architectures).
        device, threads: where and at how many torch threads the entries were timed.
        statistic: ``"median"`` or ``"min"`` of each entry's timed calls; clock: ``"wall"`` or ``"thread"``.
        repeats, warmup: timed and untimed sweeps.
        scale: a prediction is ``scale`` times the sum of the parts (1: the plain sum). Parts timed
            inside reference detectors can add up below what a mixed detector takes whole (on a CPU
            with spinning OpenMP threads about 30 % below, the ranking intact); :meth:`validate` fits
            the factor and :meth:`calibrated` applies it, so predictions are in the units of a
            measured target latency.
    """

    def __init__(self, *, entries: Mapping[str, float], space: Mapping, device: str = "cpu", threads: int = 1,
                 statistic: str = "median", clock: str = "wall", repeats: int = 20, warmup: int = 3,
                 scale: float = 1.0):
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"LatencyTable: scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        if statistic not in STATISTICS:
            raise ValueError(f"LatencyTable: statistic must be one of {STATISTICS}, got {statistic!r}")
        check_clock(clock, device, threads, who="LatencyTable")
        bad = {k: v for k, v in entries.items() if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"LatencyTable: entries must be finite non-negative milliseconds; got "
                             f"{dict(list(bad.items())[:3])}")
        self.entries = {str(k): float(v) for k, v in entries.items()}
        self.space_settings = dict(space)
        self.device, self.threads, self.statistic, self.clock = str(device), int(threads), statistic, clock
        self.repeats, self.warmup = int(repeats), int(warmup)
        self._space = NasEodSpace(**self.space_settings)

    # -- measuring -------------------------------------------------------------------------------
    @classmethod
    def measure(cls, space: NasEodSpace, device: str = "cpu", repeats: int = 20, *, warmup: int = 3,
                threads: Optional[int] = None, statistic: str = "median", clock: str = "wall",
                seed: int = 0) -> "LatencyTable":
        """Time every part of ``space``'s detectors on ``device`` ("cpu", "cuda", "cuda:1", ...):
        ``repeats`` sweeps over the reference detectors after ``warmup`` untimed ones, ``statistic`` of
        each entry's calls. ``threads``: torch's intra-op threads while timing (default: the current
        count; restored afterwards). ``clock``: see the module docstring. ``seed``: the reference
        detectors' weights and input image."""
        if not isinstance(space, NasEodSpace):
            raise TypeError(f"LatencyTable.measure: expected a NasEodSpace, got {type(space).__name__}")
        if statistic not in STATISTICS:
            raise ValueError(f"LatencyTable.measure: statistic must be one of {STATISTICS}, got {statistic!r}")
        if repeats < 1 or warmup < 0:
            raise ValueError(f"LatencyTable.measure: expected repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
        device = str(torch.device(device))
        threads = threads or torch.get_num_threads()
        check_clock(clock, device, threads, who="LatencyTable")
        with torch_threads(threads):
            references = _references(space, device, seed)
            samples = _hooked_sweeps(references, space.input_size, device, warmup, repeats, clock, seed)
        log.info("latency table: %d entries from %d reference detectors timed %d times on %s", len(samples),
                 len(references), repeats, device)
        entries = {name: max(0.0, _STATS[statistic](values)) for name, values in samples.items()}
        return cls(entries=entries, space=space.settings(), device=device, threads=threads, statistic=statistic,
                   clock=clock, repeats=repeats, warmup=warmup)

    # -- predicting ------------------------------------------------------------------------------
    def space(self) -> NasEodSpace:
        """The space the table was measured for."""
        return self._space

    def keys(self, arch, *, postprocess: bool = True) -> list[str]:
        """The entries ``arch`` (a mapping or its text) is the sum of."""
        space = self._space
        a = space.decode(arch) if isinstance(arch, str) else space.check(arch)
        width = a["neck.width"]
        out = ["stem"] + [f"backbone{i}:{layer}" for i, layer in enumerate(space.backbone_layers(a))]
        if space.layout.head:
            out.append("backbone.head")
        prefix = f"neck@{width}"
        out += [f"{prefix}.lateral.{p}" for p in NECK_LEVELS] + [f"{prefix}.merge.{p}" for p in NECK_LEVELS[1:]]
        out += [f"{prefix}.block.{p}:{layer}" for p, layer in zip(NECK_LEVELS, space.neck_layers(a))]
        out += [f"{prefix}.extra.{p}" for p in EXTRA_LEVELS] + [f"head@{width}", f"glue@{width}"]
        if postprocess:
            out.append(f"postprocess@{width}")
        return out

    def parts(self, arch, *, postprocess: bool = True) -> dict[str, float]:
        """Entry -> ms of every part of ``arch``."""
        keys = self.keys(arch, postprocess=postprocess)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise KeyError(f"LatencyTable: no entry for {missing[:3]}{' ...' if len(missing) > 3 else ''}; the table "
                           f"has {len(self.entries)} entries measured for {self.space_settings}")
        return {k: self.entries[k] for k in keys}

    def predict(self, arch, *, postprocess: bool = True) -> float:
        """Predicted batch-1 latency of ``arch``'s detector in ms: ``scale`` times the sum of :meth:`parts`
        (with the post-processing, as :meth:`validate` measures whole detectors, unless ``postprocess=False``)."""
        return self.scale * float(sum(self.parts(arch, postprocess=postprocess).values()))

    def fastest(self, space: Optional[NasEodSpace] = None) -> tuple[str, float]:
        """The architecture of ``space`` (default the table's) with the smallest prediction, and that
        prediction: coordinate descent over the decisions from every first option — a prediction is a
        sum over parts, each depending on a few decisions, so one or two passes settle it."""
        space = space or self._space
        decisions = space.decisions()
        best = [0] * len(decisions)
        best_ms = self.predict(space.encode(space.from_indices(best)))
        changed = True
        while changed:
            changed = False
            for d, decision in enumerate(decisions):
                for j in range(decision.valid):
                    trial = best[:d] + [j] + best[d + 1:]
                    ms = self.predict(space.encode(space.from_indices(trial)))
                    if ms < best_ms - 1e-9:
                        best, best_ms, changed = trial, ms, True
        return space.encode(space.from_indices(best)), best_ms

    def calibrated(self, scale: float) -> "LatencyTable":
        """The same entries with predictions ``scale`` times their sum (e.g. :meth:`validate`'s ``scale_fit``)."""
        return LatencyTable.from_dict(dict(self.to_dict(), scale=float(scale)))

    # -- storing -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: ``from_dict(to_dict())`` is an equal table."""
        return {"format": FORMAT, "space": self.space_settings, "device": self.device, "threads": self.threads,
                "statistic": self.statistic, "clock": self.clock, "repeats": self.repeats, "warmup": self.warmup,
                "scale": self.scale, "torch": torch.__version__, "entries": dict(self.entries)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LatencyTable":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"LatencyTable.from_dict: expected a dict with format {FORMAT!r}, got {got!r}")
        missing = [k for k in ("space", "entries", "device", "threads") if k not in data]
        if missing:
            raise ValueError(f"LatencyTable.from_dict: missing {missing}")
        keys = ("device", "threads", "statistic", "clock", "repeats", "warmup", "scale")
        return cls(entries=data["entries"], space=data["space"], **{k: data[k] for k in keys if k in data})

    def __eq__(self, other) -> bool:
        return isinstance(other, LatencyTable) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"LatencyTable({len(self.entries)} entries, {self.device}, {self.threads} threads, {self.clock} clock, "
                f"space {self.space_settings})")

    # -- checking ----------------------------------------------------------------------------------
    def validate(self, space: Optional[NasEodSpace] = None, n: int = 30, rng=0, device: Optional[str] = None, *,
                 repeats: Optional[int] = None, warmup: Optional[int] = None, postprocess: bool = True,
                 sampling: str = "spread", also: Optional[Mapping[str, nn.Module]] = None) -> dict:
        """Time ``n`` distinct sampled whole detectors (batch 1, eval mode, post-processing included
        unless ``postprocess=False``) at the table's thread count, clock and statistic, in sweeps as
        the table's entries, and compare with :meth:`predict`.

        ``sampling="spread"`` (default) draws the i-th detector by :func:`spread_sample` with its tilt
        evenly spaced from -1 to 1, so the check covers the space's latency range as a search moves
        through it (a controller starts uniform and drifts toward cheap or dear regions).
        ``"uniform"`` draws every decision uniformly: 61 independent choices then add up to latencies
        within about ±10 % of the mean (the central limit), a range where a shared CPU's run-to-run
        noise decides much of the ranking.

        Returns ``{"kendall_tau", "spearman", "repeat_tau" (the measurement against itself: Kendall
        tau between the statistic of the even and of the odd sweeps — the noise ceiling of the check,
        at half its repeats), "mean_abs_pct_error" (percent), "scale" (the table's),
        "scale_fit" (the median measured / summed ratio: the scale that centres the errors),
        "mean_abs_pct_error_fitted" (with it), "n", "device", "threads", "sampling",
        "clock", "postprocess", "pairs": [{"encoding", "predicted_ms", "measured_ms"}, ...], "also_ms"}``.
        ``space``: the table's (default) or an equal one; ``rng``: see :func:`~nasx.spaces.space.as_rng`;
        ``repeats`` / ``warmup``: default the table's. The result's ``"sampling"`` says which.
        ``also``: name -> more detectors (on the space's input size, e.g. the baselines a search must
        beat) timed in the same sweeps; their times, in the units the check's ``scale_fit`` brings the
        table's predictions to, are the result's ``"also_ms"``."""
        space = space or self._space
        if not isinstance(space, NasEodSpace) or space.settings() != self._space.settings():
            got = space.settings() if isinstance(space, NasEodSpace) else type(space).__name__
            raise ValueError(f"LatencyTable.validate: the table was measured for {self.space_settings}, got {got}")
        if n < 2:
            raise ValueError(f"LatencyTable.validate: n must be >= 2 (a rank correlation needs pairs), got {n}")
        device = str(torch.device(device or self.device))
        check_clock(self.clock, device, self.threads, who="LatencyTable")
        repeats, warmup = repeats or self.repeats, self.warmup if warmup is None else warmup
        if sampling not in SAMPLINGS:
            raise ValueError(f"LatencyTable.validate: sampling must be one of {SAMPLINGS}, got {sampling!r}")
        rng = as_rng(rng)
        archs: dict[str, dict] = {}
        for _ in range(100 * n):
            tilt = -1 + 2 * (len(archs) / (n - 1)) if sampling == "spread" else 0.0
            arch = spread_sample(space, tilt, rng) if sampling == "spread" else space.sample(rng)
            archs.setdefault(space.encode(arch), arch)
            if len(archs) == n:
                break
        h, w = space.input_size
        images = torch.rand(1, 3, h, w, device=device)
        with torch_threads(self.threads):
            jobs: dict[str, Job] = {}
            for text in archs:
                det = space.build(text)
                jobs[text] = (det if postprocess else _Dense(det), (images,))
            extra = {name: (det if postprocess else _Dense(det), (images,)) for name, det in (also or {}).items()}
            if set(extra) & set(jobs):
                raise ValueError(f"LatencyTable.validate: also's names {sorted(set(extra) & set(jobs))} are encodings "
                                 f"of sampled architectures")
            samples = sweep_times({**jobs, **extra}, device, warmup, repeats, self.clock)
        pairs = [{"encoding": text, "predicted_ms": self.predict(text, postprocess=postprocess),
                  "measured_ms": _STATS[self.statistic](samples[text])} for text in archs]
        predicted = [p["predicted_ms"] for p in pairs]
        measured = [p["measured_ms"] for p in pairs]
        fit = self.scale * statistics.median(m / p for p, m in zip(predicted, measured))

        def error(scale: float) -> float:
            return 100 * statistics.fmean(abs(scale * p - m) / m for p, m in zip(predicted, measured))

        stat = _STATS[self.statistic]
        halves = [[stat(samples[text][h::2]) for text in archs] for h in (0, 1)] if repeats >= 2 else None
        return {"kendall_tau": kendall_tau(predicted, measured), "spearman": spearman_rho(predicted, measured),
                "repeat_tau": kendall_tau(*halves) if halves else math.nan,
                "mean_abs_pct_error": error(1.0), "scale": self.scale, "scale_fit": fit,
                "mean_abs_pct_error_fitted": error(fit / self.scale), "n": len(pairs), "device": device,
                "threads": self.threads, "clock": self.clock, "postprocess": postprocess, "sampling": sampling,
                "pairs": pairs, "also_ms": {name: stat(samples[name]) for name in (also or {})}}
