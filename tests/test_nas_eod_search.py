"""The NAS-EOD pipeline end to end on tiny data: killed with SIGKILL in the search and resumed, its
report, plot and stage markers; a changed setting refused. (The space, FPNLite and the latency
table: tests/test_nas_eod_space.py, tests/test_fpnlite.py, tests/test_latency_table.py.)"""
import json
import os
import sys

import pytest

from nasx.cli import main
from nasx.evaluate.eod_evaluator import EodRewardConfig
from nasx.pipelines.nas_eod import NasEodConfig
from runhelpers import killed_then_resumed, tiny_synth

TINY_RUN = ["--width", "0.25", "--input-size", "64", "--neck-widths", "64", "--head-convs", "1", "--short-steps", "2",
            "--short-batch-size", "4", "--short-val-images", "4", "--short-latency-repeats", "2", "--lut-repeats", "2",
            "--lut-check", "3", "--round-size", "2", "--min-archs", "4", "--max-archs", "4", "--top-k", "2",
            "--retrain-steps", "2", "--final-sweeps", "2", "--target-ratio", "0.9", "--train-over-target", "--budget-minutes", "30", "--no-tensorboard", "--quiet"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=8, val=4)


def test_end_to_end_search_survives_sigkill(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasx", "search", "nas-eod", "--data", str(tiny_data), "--out", str(out), *TINY_RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # killed in the search: after the two baselines and the first searched architecture
    before, records = killed_then_resumed(cmd, out, env, tmp_path / "stderr.txt", min_records=3)
    sources = [r["source"] for r in records]
    assert sources.count("baseline") == 2 and sources.count("search") == 4
    searched = [r for r in records if r["source"] == "search"]
    assert all(r["latency_source"] == "lut" and {"reward", "cls_loss", "reg_loss", "map"} <= set(r) for r in searched)
    assert all(r["latency_source"] == "measured" for r in records if r["source"] == "baseline")

    report = json.loads((out / "report.json").read_text())
    assert set(report["baselines"]) == {"MobileNetV2-FPNLite@16", "MobileNetV2-SSDLite"}
    assert report["best"]["arch"].startswith("mb") and report["target_latency_ms"] > 0
    assert report["lut"]["n"] == 3 and -1 <= report["lut"]["kendall_tau"] <= 1
    assert [r["name"] for r in report["retrained"]][-2:] == ["top1", "top2"]
    assert all(r["latency_ms"] > 0 for r in report["retrained"])
    # the searched detectors against FPNLite at their own neck width (one width here: @16)
    rows = {r["name"]: r for r in report["retrained"]}
    fpn = rows["MobileNetV2-FPNLite@16"]
    assert report["beating_fpnlite"] == [n for n in ("top1", "top2") if rows[n]["map"] > fpn["map"]
                                         and rows[n]["latency_ms"] <= fpn["latency_ms"]]
    assert report["beats_fpnlite"] == bool(report["beating_fpnlite"])
    # T is 0.9 x FPNLite's time in the table check's sweeps; the compared latencies come from one joint timing
    assert report["target_latency_ms"] == pytest.approx(0.9 * report["lut"]["also_ms"]["MobileNetV2-FPNLite@16"])
    together = report["timed_together"]
    assert set(together["latency_ms"]) == set(rows) and together["sweeps"] == 2
    assert all(r["latency_ms"] == together["latency_ms"][r["name"]] and r["latency_ms_alone"] > 0
               for r in report["retrained"])
    assert (out / "latency_table.json").is_file() and (out / "pareto.png").stat().st_size > 0
    assert (out / "report.html").is_file() and (out / "best.json").is_file()
    assert sorted(s.stem for s in (out / "stages").glob("*.json")) == ["baselines", "lut", "report", "retrain",
                                                                       "screen", "search", "timed_together"]
    # the searched detectors retrained: those measured within T in the screening first, by reward within each
    screen = report["screen"]
    assert len(screen["latency_ms"]) == 4 and set(screen["fpnlite_ms"]) == {"MobileNetV2-FPNLite@16"}
    assert all(screen["limit_ms"][e] == screen["fpnlite_ms"]["MobileNetV2-FPNLite@16"] for e in screen["latency_ms"])
    tops = [rows[n] for n in ("top1", "top2")]
    assert all(r["screened_ms"] == screen["latency_ms"][r["arch"]] for r in tops)
    within = [r["arch"] in screen["within"] for r in tops]
    assert within == sorted(within, reverse=True)
    assert main(["search", "nas-eod", "--data", str(tiny_data), "--out", str(out),
                 *[v if v != "0.25" else "0.5" for v in TINY_RUN]]) == 1


def test_candidates_over_the_target_are_scored_untrained(tiny_data, tmp_path, monkeypatch, capsys):
    """By default a candidate the table predicts slower than T is not trained: the narrowest FPNLite's
    held-out losses less its latency term are its reward; only trained ones count toward --min/--max-archs
    and are retrained. (Here every candidate whose first layer is k5 is predicted 10^4 x slower and T is 10 x
    FPNLite's time.) A T below the space's fastest architecture is refused before the search."""
    from nasx.evaluate.eod_reward import eod_reward
    from nasx.evaluate.latency_table import LatencyTable

    real_predict, real_validate, checking = LatencyTable.predict, LatencyTable.validate, []

    def predict(self, arch, *args, **kwargs):     # the table's own check sees the real predictions
        slow = not checking and isinstance(arch, str) and arch.split("-")[0].split(":")[1].startswith("k5")
        return real_predict(self, arch, *args, **kwargs) * (1e4 if slow else 1)

    def validate(self, *args, **kwargs):
        checking.append(True)
        try:
            return real_validate(self, *args, **kwargs)
        finally:
            checking.pop()

    monkeypatch.setattr(LatencyTable, "predict", predict)
    monkeypatch.setattr(LatencyTable, "validate", validate)
    out = tmp_path / "run"
    args = [a for a in TINY_RUN if a != "--train-over-target"]
    args[args.index("--target-ratio") + 1] = "10"
    assert main(["search", "nas-eod", "--data", str(tiny_data), "--out", str(out), *args]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    T, fpn = report["target_latency_ms"], records[0]
    assert fpn["encoding"] == "baseline:MobileNetV2-FPNLite@16"
    searched = [r for r in records if r["source"] == "search"]
    untrained = [r for r in searched if r.get("trained") is False]
    assert untrained and sum(r.get("trained", True) for r in searched) == 4
    for r in untrained:
        assert r["latency_ms"] > T and "map" not in r and r["latency_source"] == "lut"
        assert r["reward"] == pytest.approx(eod_reward(fpn["cls_loss"], fpn["reg_loss"], r["latency_ms"], target_ms=T))
    assert all(r["latency_ms"] <= T for r in searched if r.get("trained", True))
    assert report["searched"] == len(searched) and report["evaluated"] == 4
    assert report["untrained_over_target"] == len(untrained)
    top = {r["arch"] for r in report["retrained"] if r["name"].startswith("top")}
    assert top and not top & {r["encoding"] for r in untrained}
    args[args.index("--target-ratio") + 1] = "0.01"
    assert main(["search", "nas-eod", "--data", str(tiny_data), "--out", str(tmp_path / "slow"), *args]) == 1
    assert "is below the space's fastest architecture" in capsys.readouterr().err


def test_config_checks():
    with pytest.raises(ValueError, match="latency form"):
        NasEodConfig(data="d", out="o", latency_form="square")
    with pytest.raises(ValueError, match="target_latency_ms"):
        NasEodConfig(data="d", out="o", target_latency_ms=0)
    with pytest.raises(ValueError, match="target_ratio must be > 0"):
        NasEodConfig(data="d", out="o", target_ratio=0)
    with pytest.raises(ValueError, match="lut_check"):
        NasEodConfig(data="d", out="o", lut_check=1)
    with pytest.raises(ValueError, match=">= 0"):
        EodRewardConfig(10.0, beta=-1)


def test_missing_dataset_is_named(tmp_path, capsys):
    assert main(["search", "nas-eod", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), *TINY_RUN]) == 1
    assert "nasx data synth" in capsys.readouterr().err


def test_onnxruntime_target_times_every_candidate(tiny_data, tmp_path, monkeypatch):
    """--short-latency-runtime onnxruntime: no table (it times parts of a PyTorch forward); every candidate,
    the target and the retrained detectors are timed whole in that runtime (the timing itself:
    tests/test_latency_runtime.py)."""
    import nasx.evaluate
    import nasx.evaluate.cost
    from nasx.evaluate.cost import LatencyReport

    calls = []

    def fake(model, *inputs, runtime="torch", device="cpu", **kwargs):
        calls.append((runtime, device))
        return LatencyReport(median_ms=5.0 + len(calls), iqr_ms=0.1, min_ms=5.0, repeats=1, device="cpu",
                             runtime=runtime)

    monkeypatch.setattr(nasx.evaluate.cost, "measure_latency", fake)
    monkeypatch.setattr(nasx.evaluate, "measure_latency", fake)
    out = tmp_path / "run"
    args = list(TINY_RUN)
    for flag in ("--min-archs", "--max-archs"):
        args[args.index(flag) + 1] = "2"
    assert main(["search", "nas-eod", "--data", str(tiny_data), "--out", str(out), *args,
                 "--short-latency-runtime", "onnxruntime"]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["latency_source"] == "measured" and r["latency_runtime"] == "onnxruntime"
                                     for r in records)
    report = json.loads((out / "report.json").read_text())
    assert report["lut"] is None and report["latency_runtime"] == "onnxruntime"
    assert not (out / "latency_table.json").exists()
    retrained = [json.loads(line) for line in (out / "retrained.jsonl").read_text().splitlines()]
    assert len(retrained) == 4 and all(r["latency_runtime"] == "onnxruntime" for r in retrained)
    assert all(r["predicted_ms"] is None for r in report["retrained"])
    # target + 4 candidates + 4 retrained, all in ONNX Runtime on the CPU
    assert calls == [("onnxruntime", "cpu")] * 9
    # T: 0.9 x the first timing (FPNLite's); each retrained detector keeps its own timing (no joint one in ORT)
    assert report["target_latency_ms"] == pytest.approx(0.9 * 6.0) and report["timed_together"] is None
