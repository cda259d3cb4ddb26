"""The SM-NAS pipeline end to end on tiny data: killed with SIGKILL and resumed, its report,
plots and stage markers; a changed setting refused. (The strategy: tests/test_evolution.py;
the spaces: tests/test_sm_nas_space.py; the detectors: tests/test_two_stage.py.)"""
import json
import os
import sys

import pytest

from nasx.cli import main
from nasx.pipelines.sm_nas import SmNasConfig
from runhelpers import killed_then_resumed, tiny_synth

# Widths 1/8 and 800 x 600 -> 64 x 48 (inputs from 48 x 48 to 112 x 64), two steps per candidate.
TINY_RUN = ["--width", "0.125", "--input-scale", "0.08", "--short-steps", "2", "--short-batch-size", "4",
            "--short-val-images", "4", "--short-latency-repeats", "2", "--short-macs-rois", "16",
            "--stage1-min", "2", "--stage1-max", "2", "--stage2-min", "2", "--stage2-max", "2", "--min-random", "1",
            "--retrain-steps", "2", "--retrain-top", "1", "--final-sweeps", "2", "--budget-minutes", "0.01", "--no-tensorboard",
            "--no-ga-rpn"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=8, val=4)


def test_end_to_end_search_survives_sigkill(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasx", "search", "sm-nas", "--data", str(tiny_data), "--out", str(out), *TINY_RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # killed in stage one: after the two baselines and the first searched architecture
    before, records = killed_then_resumed(cmd, out, env, tmp_path / "stderr.txt", min_records=3)
    sources = [r["source"] for r in records]
    assert sources.count("baseline1") == 2 and sources.count("stage1") >= 2 and sources.count("stage2/0") >= 2
    assert {"start2/0", "baseline2/0"} <= set(sources)
    stage1 = [r for r in records if r["source"] == "stage1" and r["status"] == "ok"]
    assert all({"map", "latency_ms", "macs", "params", "s_per_step"} <= set(r) for r in stage1)

    report = json.loads((out / "report.json").read_text())
    assert report["evaluated"] == sum(r["status"] == "ok" for r in records)
    assert report["stage1"]["front"] and set(report["stage1"]["baselines"]) == {"R18-FPN", "R50-FPN"}
    part = report["stage2"][0]
    assert part["pick"] == json.loads((out / "stages" / "pick.json").read_text())["picks"][0]["encoding"]
    assert part["front"] and part["start"]["macs"] > 0 and isinstance(part["dominates_start"], bool)
    assert set(part["audit"]) >= {"audited", "would_enter_front", "error_rate"}
    assert len(part["hypervolume"]) == part["rounds"] and part["pruned"] == sum(part["pruned_per_round"])
    # stage two evolves from the pick: its start model is the population's first member
    import torch

    state = torch.load(out / "stage2_0_state.pt", weights_only=False)["strategy"]
    assert state["population"][0]["encoding"] == part["start"]["arch"]
    names = [r["name"] for r in part["retrained"]]
    assert names[:2] == ["start", "front1"] and all(r["map"] >= 0 for r in part["retrained"])
    # after the longer training: front models with more mAP than the start at no more MACs
    rows = {r["name"]: r for r in part["retrained"]}
    assert part["retrained_dominating_start"] == [n for n in names if n.startswith("front") and rows[n]["map"] >
                                                  rows["start"]["map"] and rows[n]["macs"] <= rows["start"]["macs"]]
    assert part["retrained_dominates_start"] == bool(part["retrained_dominating_start"])
    # the retrained models' latencies come from one joint timing of them all
    together = json.loads((out / "stages" / "timed_together-0.json").read_text())
    assert together["sweeps"] == 2 and all(r["latency_ms"] == together["latency_ms"][r["name"]]
                                           and r["latency_ms_alone"] > 0 for r in part["retrained"])
    for png in ("stage1_pareto.png", "stage2_pareto.png"):
        assert (out / png).stat().st_size > 0
    assert (out / "report.html").is_file()
    assert sorted(s.stem for s in (out / "stages").glob("*.json")) == ["pick", "report", "retrain", "stage1",
                                                                       "stage2-0", "timed_together-0"]
    # a changed setting is refused by name; the run is untouched
    assert main(["search", "sm-nas", "--data", str(tiny_data), "--out", str(out),
                 *[v if v != "0.125" else "0.25" for v in TINY_RUN]]) == 1
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)


def test_config_checks():
    with pytest.raises(ValueError, match="stage1_share"):
        SmNasConfig(data="d", out="o", stage1_share=1.5)
    with pytest.raises(ValueError, match="picks"):
        SmNasConfig(data="d", out="o", picks=0)
    cfg = SmNasConfig(data="d", out="o", short={"steps": 7})
    assert cfg.short.steps == 7
    # the thread clock times PyTorch at one thread; the timing goes to every measure_latency call
    with pytest.raises(ValueError, match=r"ShortTrainConfig \(latency_clock.*clock 'thread' .* None threads"):
        SmNasConfig(data="d", out="o", short={"latency_clock": "thread"})
    with pytest.raises(ValueError, match="clock must be one of"):
        SmNasConfig(data="d", out="o", short={"latency_clock": "cpu"})
    quiet = SmNasConfig(data="d", out="o", short={"latency_clock": "thread", "latency_threads": 1}).short
    assert quiet.timing("cpu") == {"device": "cpu", "runtime": "torch", "threads": 1, "clock": "thread"}


def test_missing_dataset_is_named(tmp_path, capsys):
    assert main(["search", "sm-nas", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), *TINY_RUN]) == 1
    assert "nasx data synth" in capsys.readouterr().err
