"""The network-adaptation pipeline end to end on tiny data: killed with SIGKILL in the middle of the
search and resumed from its checkpoint, its report, plots and stage markers; a changed setting
refused. (Remapping: tests/test_remap.py; space, super network and DARTS: tests/test_adaptation_space.py.)"""
import json
import os
import subprocess
import sys

import pytest
import torch

from nasx.cli import main
from nasx.pipelines.adapt import AdaptConfig
from runhelpers import start_and_kill, tiny_synth

TINY_RUN = ["--width", "0.25", "--input-size", "64", "--seed-steps", "4", "--seed-batch-size", "8", "--crop-size",
            "32", "--batch-size", "2", "--search-steps", "12", "--warmup", "0.25", "--arch-every", "2",
            "--adapt-steps", "2", "--budget-minutes", "30", "--no-tensorboard", "--quiet"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=8, val=4)


def test_end_to_end_adaptation_survives_sigkill(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasx", "search", "adapt", "--data", str(tiny_data), "--out", str(out), *TINY_RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    state = out / "search_state.pt"

    def mid_search() -> bool:  # killed once the search has checkpointed a few weight steps
        try:
            return torch.load(state, weights_only=False)["w_step"] >= 4
        except Exception:
            return False

    start_and_kill(cmd, env, tmp_path / "stderr.txt", mid_search)
    assert (out / "stages" / "seed.json").is_file() and not (out / "stages" / "search.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    search = report["search"]
    assert search["weight_steps"] == 12 and search["arch_steps"] == 5 and search["stopped"] == "steps"
    history = json.loads((out / "alphas.json").read_text())["history"]
    # α before the first architecture step, then after each (warm-up 3, then every 2 weight steps),
    # across the kill: nothing lost, nothing twice
    assert [(h["weight_step"], h["arch_step"]) for h in history] == [(3, 0), (3, 1), (5, 2), (7, 3), (9, 4), (11, 5)]
    assert {r["init"] for r in report["adapted"]} == {"remapped", "random", "seed"}
    assert report["derived"]["arch"].startswith("mb") and report["seed"]["classifier_top1"] >= 0
    assert set(report["ablation"]) >= {"remap_gain", "vs_seed", "macs_ratio_to_seed"}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert records and all(r["source"] == "darts" and r["macs"] > 0 for r in records)
    assert len({r["encoding"] for r in records}) == len(records)
    for png in ("alphas.png", "pareto.png"):
        assert (out / png).stat().st_size > 0
    assert (out / "report.html").is_file()
    assert sorted(s.stem for s in (out / "stages").glob("*.json")) == ["adapt", "report", "search", "seed"]
    # a changed setting is refused by name; the run is untouched
    assert main(["search", "adapt", "--data", str(tiny_data), "--out", str(out),
                 *[v if v != "0.25" else "0.5" for v in TINY_RUN]]) == 1


def test_config_checks():
    with pytest.raises(ValueError, match="warmup"):
        AdaptConfig(data="d", out="o", warmup=1.0)
    with pytest.raises(ValueError, match="input_size"):
        AdaptConfig(data="d", out="o", input_size=16)
    with pytest.raises(ValueError, match="seed_task"):
        AdaptConfig(data="d", out="o", seed_task="imagenet")
    assert AdaptConfig(data="d", out="o", layers=[4, 4, 4, 4, 4, 1]).layers == (4, 4, 4, 4, 4, 1)


def test_missing_dataset_is_named(tmp_path, capsys):
    assert main(["search", "adapt", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), *TINY_RUN]) == 1
    assert "nasx data synth" in capsys.readouterr().err
