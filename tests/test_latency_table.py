"""NAS-EOD's latency look-up table on a tiny space: it covers every choice, predicts the sum of its
entries, survives JSON and pickling, and validates against whole detectors with finite numbers."""
import json
import math
import pickle
import random

import pytest
import torch

from conftest import needs_cuda
from nasx.evaluate.latency_table import OPTIONS, LatencyTable, spread_sample
from nasx.spaces.errors import EncodingError
from nasx.spaces.nas_eod import BACKBONE_LAYERS, NECK_LEVELS, NasEodSpace

torch.set_num_threads(1)

TINY = NasEodSpace(width=0.25, input_size=64, num_classes=3, head_convs=1)


@pytest.fixture(scope="module")
def table():
    return LatencyTable.measure(TINY, "cpu", repeats=2, warmup=1)


def test_table_covers_every_choice(table):
    entries = table.entries
    assert len(OPTIONS) == 12 and len(set(OPTIONS)) == 12
    for i in range(BACKBONE_LAYERS):
        assert all(f"backbone{i}:{o}" in entries for o in OPTIONS)
    for w in TINY.neck_widths:
        assert all(f"neck@{w}.block.{p}:{o}" in entries for p in NECK_LEVELS for o in OPTIONS)
        fixed = [f"neck@{w}.lateral.{p}" for p in NECK_LEVELS] + [f"neck@{w}.merge.p4", f"neck@{w}.merge.p3",
                                                                   f"neck@{w}.extra.p6", f"neck@{w}.extra.p7",
                                                                   f"head@{w}", f"glue@{w}", f"postprocess@{w}"]
        assert all(k in entries for k in fixed)
    assert {"stem", "backbone.head"} <= set(entries)
    n_width = 3 + 2 + 3 * 12 + 2 + 3
    assert len(entries) == 1 + 17 * 12 + 1 + len(TINY.neck_widths) * n_width
    assert all(math.isfinite(v) and v >= 0 for v in entries.values())
    assert sum(v > 0 for v in entries.values()) >= len(entries) - 2 * len(TINY.neck_widths)   # glue may be 0
    assert table.threads == 1 and table.device == "cpu" and table.clock == "wall"


def test_prediction_is_the_sum_of_the_entries(table):
    rng = random.Random(0)
    for _ in range(5):
        arch = TINY.sample(rng)
        keys = table.keys(arch)
        assert len(keys) == len(set(keys)) == 1 + 17 + 1 + 3 + 2 + 3 + 2 + 1 + 1 + 1
        assert table.predict(arch) == pytest.approx(sum(table.entries[k] for k in keys), rel=1e-12)
        assert table.predict(TINY.encode(arch)) == table.predict(arch)
        assert table.predict(arch, postprocess=False) == pytest.approx(
            table.predict(arch) - table.entries[f"postprocess@{arch['neck.width']}"])
        layers = TINY.backbone_layers(arch)
        assert keys[1:18] == [f"backbone{i}:{layer}" for i, layer in enumerate(layers)]


def test_fastest_is_no_slower_than_any_sample(table):
    encoding, ms = table.fastest()
    assert ms == table.predict(encoding)
    rng = random.Random(0)
    assert all(ms <= table.predict(TINY.encode(TINY.sample(rng))) + 1e-9 for _ in range(50))
    assert ms <= table.predict(TINY.encode(spread_sample(TINY, -1.0, rng)))


def test_table_round_trips_through_json_and_pickle(table):
    data = json.loads(json.dumps(table.to_dict()))
    again = LatencyTable.from_dict(data)
    assert again == table and pickle.loads(pickle.dumps(table)) == table
    arch = TINY.sample(3)
    assert again.predict(arch) == table.predict(arch)
    assert again.space().settings() == TINY.settings()
    with pytest.raises(ValueError, match=r"expected a dict with format 'nasx.latency_table/1', got None"):
        LatencyTable.from_dict({"entries": {}})
    with pytest.raises(ValueError, match=r"entries must be finite non-negative milliseconds"):
        LatencyTable(entries={"stem": -1.0}, space=TINY.settings())
    # a calibrated table predicts its scale times the sum, and keeps the scale through JSON
    scaled = table.calibrated(1.3)
    assert scaled.predict(arch) == pytest.approx(1.3 * table.predict(arch), rel=1e-12)
    assert LatencyTable.from_dict(json.loads(json.dumps(scaled.to_dict()))) == scaled != table
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        table.calibrated(0.0)


def test_wrong_architectures_and_settings_are_refused(table):
    with pytest.raises(EncodingError, match=r"this space \(width 0.25, head 1280\)"):
        table.predict(NasEodSpace().encode(NasEodSpace().sample(0)))
    partial = LatencyTable(entries={"stem": 1.0}, space=TINY.settings())
    with pytest.raises(KeyError, match=r"no entry for \['backbone0:"):
        partial.predict(TINY.sample(0))
    with pytest.raises(ValueError, match=r"the table was measured for"):
        table.validate(NasEodSpace(width=0.25, input_size=96), n=3)
    with pytest.raises(ValueError, match=r"LatencyTable: clock 'thread' .* got device 'cpu', 2 threads"):
        LatencyTable.measure(TINY, "cpu", threads=2, clock="thread")
    with pytest.raises(ValueError, match=r"statistic must be one of"):
        LatencyTable.measure(TINY, "cpu", statistic="mean")


def test_validate_returns_finite_numbers(table):
    result = table.validate(n=4, rng=1, repeats=2, warmup=1)
    assert result["n"] == 4 and len(result["pairs"]) == 4 and result["postprocess"] is True
    for key in ("kendall_tau", "spearman", "mean_abs_pct_error"):
        assert math.isfinite(result[key]), result
    assert -1 <= result["kendall_tau"] <= 1 and result["mean_abs_pct_error"] >= 0
    for pair in result["pairs"]:
        assert pair["predicted_ms"] == table.predict(pair["encoding"]) and pair["measured_ms"] > 0
    dense = table.validate(n=3, rng=1, repeats=1, warmup=0, postprocess=False, sampling="uniform")
    assert dense["postprocess"] is False and all(math.isfinite(p["measured_ms"]) for p in dense["pairs"])
    assert result["sampling"] == "spread" and dense["sampling"] == "uniform"
    # the measurement against itself (even vs odd sweeps) needs two sweeps
    assert -1 <= result["repeat_tau"] <= 1 and math.isnan(dense["repeat_tau"])
    # the fitted scale centres the errors: the median measured / predicted ratio
    ratios = sorted(p["measured_ms"] / p["predicted_ms"] for p in result["pairs"])
    assert result["scale"] == 1.0 and result["scale_fit"] == pytest.approx((ratios[1] + ratios[2]) / 2)
    assert math.isfinite(result["mean_abs_pct_error_fitted"])
    with pytest.raises(ValueError, match="sampling must be one of"):
        table.validate(n=3, sampling="stratified")
    # other detectors (the baselines a search must beat) timed in the check's sweeps
    spec, _ = TINY.baseline_spec()
    from nasx.spaces.detectors import build_from_spec
    also = table.validate(n=2, rng=1, repeats=2, warmup=0, also={"fpnlite": build_from_spec(spec)})
    assert set(also["also_ms"]) == {"fpnlite"} and also["also_ms"]["fpnlite"] > 0 and result["also_ms"] == {}
    taken = also["pairs"][0]["encoding"]
    with pytest.raises(ValueError, match="are encodings of sampled architectures"):
        table.validate(n=2, rng=1, repeats=1, warmup=0, also={taken: build_from_spec(spec)})


def test_spread_sampling_covers_cheap_to_dear():
    """Tilt -1 leans every decision to its cheapest option, +1 to its dearest; the predicted latencies of
    a spread follow the tilt, and span more than uniform draws do. (A thread-clock table: a busy
    machine's preemptions would otherwise decide the entries' order.)"""
    table = LatencyTable.measure(TINY, "cpu", repeats=3, warmup=1, threads=1, clock="thread", statistic="min")
    rng = random.Random(0)
    cheap, dear = (TINY.to_indices(spread_sample(TINY, t, rng)) for t in (-1.0, 1.0))
    sizes = TINY.decision_sizes
    assert sum(i == 0 for i in cheap) > 0.6 * len(sizes)
    assert sum(i == n - 1 for i, n in zip(dear, sizes)) > 0.6 * len(sizes)
    tilts = [-1 + 2 * k / 19 for k in range(20)]
    spread = [table.predict(spread_sample(TINY, t, rng)) for t in tilts]
    uniform = [table.predict(TINY.sample(rng)) for _ in tilts]
    assert spread[0] < spread[-1] and max(spread) - min(spread) > max(uniform) - min(uniform)
    with pytest.raises(ValueError, match=r"tilt must be in \[-1, 1\]"):
        spread_sample(TINY, 1.5, rng)


def test_thread_clock_table():
    space = NasEodSpace(width=0.25, input_size=64, num_classes=3, head_convs=1, neck_widths=(64,))
    table = LatencyTable.measure(space, "cpu", repeats=1, warmup=0, threads=1, clock="thread", statistic="min")
    assert table.clock == "thread" and table.statistic == "min" and len(space.neck_widths) == 1
    assert math.isfinite(table.predict(space.sample(0)))


@needs_cuda
def test_cuda_table():
    table = LatencyTable.measure(TINY, "cuda", repeats=2, warmup=1)
    assert table.device == "cuda" and math.isfinite(table.predict(TINY.sample(0)))
    assert math.isfinite(table.validate(n=3, repeats=2, warmup=1)["mean_abs_pct_error"])
