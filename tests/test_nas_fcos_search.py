"""The NAS-FCOS pipeline: feature cache, proxy evaluator, and a tiny end-to-end run killed with
SIGKILL and resumed, its best checkpoint scored by ``nasx eval``. (The search loop and its
strategies on their own: tests/test_search_loop.py.)"""
import json
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

from nasx.data import synth_dataset
from nasx.data.transforms import detection_transforms
from nasx.evaluate.feature_cache import FeatureCache
from nasx.evaluate.rank import kendall_tau
from nasx.evaluate.proxy import DecoderProxy, ProxyConfig
from nasx.spaces.detectors import build_backbone
from nasx.spaces.nas_fcos import BASELINE, NasFcosArch, NasFcosSpace
from runhelpers import killed_then_resumed, tiny_synth

TINY_BACKBONE = "basicblock_8_1-21-21-21"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=16, val=6, seed=1)


def test_cache_equals_a_fresh_backbone_forward(tiny_data, tmp_path):
    torch.manual_seed(0)
    trunk = build_backbone(TINY_BACKBONE, norm="gn").eval()
    data = synth_dataset(tiny_data, "train", transforms=detection_transforms(False, 64))
    cache = FeatureCache.build(trunk, data, tmp_path / "cache", input_size=(64, 64), batch_size=5,
                               fingerprint={"k": 1}, progress=False)
    assert len(cache) == 16 and cache.names == ["c3", "c4", "c5"]
    idx = [3, 11, 7]
    feats, shape, sizes, targets = cache.batch(idx)
    images = torch.stack([data[i][0] for i in sorted(idx)])
    with torch.no_grad():
        fresh = trunk(images)
    for n in ("c3", "c4", "c5"):
        torch.testing.assert_close(feats[n], fresh[n], rtol=1e-5, atol=1e-5)
    for t, i in zip(targets, sorted(idx)):
        torch.testing.assert_close(t["boxes"], data[i][1]["boxes"])
    assert shape == (64, 64) and sizes == [(64, 64)] * 3
    assert FeatureCache.matches(tmp_path / "cache", {"k": 1}) and not FeatureCache.matches(tmp_path / "cache", {"k": 2})
    assert not FeatureCache.matches(tmp_path / "nothing", {"k": 1})
    with pytest.raises(FileNotFoundError, match="not a feature cache"):
        FeatureCache(tmp_path)


def _proxy(cache_dir, steps=2):
    return DecoderProxy(cache_dir, list(range(12)), list(range(12, 16)), space=NasFcosSpace(channels=8), num_classes=4,
                        detector_kwargs={"size_ranges": [(0, 16), (16, 32), (32, 64), (64, 128), (128, 1e8)]},
                        backbone={"encoding": TINY_BACKBONE, "norm": "gn"},
                        config=ProxyConfig(steps=steps, batch_size=4, latency=False))


def test_proxy_trains_a_decoder_on_cached_features(tiny_data, tmp_path):
    trunk = build_backbone(TINY_BACKBONE, norm="gn")
    data = synth_dataset(tiny_data, "train", transforms=detection_transforms(False, 64))
    FeatureCache.build(trunk, data, tmp_path / "cache", input_size=(64, 64), progress=False)
    proxy = pickle.loads(pickle.dumps(_proxy(tmp_path / "cache")))  # what a worker process receives
    out = proxy(BASELINE)
    assert out["status"] == "ok" and out["reward"] == pytest.approx(-sum(out["losses"].values()))
    assert set(out["losses"]) == {"cls", "reg", "ctr"} and out["reward"] < 0
    assert out["macs"] > 0 and out["params"] > out["decoder_params"] > 0
    again = _proxy(tmp_path / "cache")(BASELINE)
    assert again["reward"] == pytest.approx(out["reward"], rel=1e-5)  # seeded
    with pytest.raises(ValueError, match="meta-train and meta-val"):
        DecoderProxy(tmp_path / "cache", [], [1], space=NasFcosSpace(), num_classes=8, detector_kwargs={}, backbone={})

    # what the proxy study relies on: step k of a longer training is a k-step training, per Polyak decay
    *_, (_, _, short, _) = proxy.train(BASELINE, steps=2, polyaks=(0.0, 0.95))
    seen = {step: {d: [p.clone() for p in m.parameters()] for d, m in avgs.items()}
            for step, _, avgs, _ in proxy.train(BASELINE, steps=4, polyaks=(0.0, 0.95), at=(2,))}
    assert sorted(seen) == [2, 4]
    for d in (0.0, 0.95):
        for a, b in zip(seen[2][d], short[d].parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the mAP reward: COCO AP of the decoder's detections on meta-val, the loss beside it
    scored = proxy.score(short[0.95], reward="map")
    assert 0.0 <= scored["reward"] == scored["meta_val_map"] <= 1.0 and scored["meta_val_loss"] > 0
    loss = proxy.score(short[0.95])
    assert loss["reward"] == pytest.approx(-loss["meta_val_loss"]) and "meta_val_map" not in loss
    # meta-val prefixes share the forward passes: the first prefix is what scoring it alone gives
    both = proxy.score_prefixes(short[0.95], [13, 15, 12, 14], (2, 4), reward="map")
    alone = proxy.score(short[0.95], reward="map", indices=[13, 15])
    assert both[0]["meta_val_loss"] == pytest.approx(alone["meta_val_loss"], rel=1e-6)
    assert both[0]["meta_val_map"] == pytest.approx(alone["meta_val_map"]) and both[1]["meta_val_loss"] > 0
    with pytest.raises(ValueError, match="reward must be one of"):
        proxy.score(short[0.95], reward="accuracy")
    with pytest.raises(ValueError, match="reward must be one of"):
        ProxyConfig(reward="ap")


TINY_RUN = ["--size", "64", "--backbone", TINY_BACKBONE, "--channels", "8", "--backbone-steps", "6",
            "--retrain-steps", "3", "--proxy-steps", "3", "--proxy-batch-size", "4", "--batch-size", "4", "--round-size", "2",
            "--top-k", "2", "--min-archs", "6", "--budget-minutes", "0.01", "--seed-steps", "3", "--crop-size", "16",
            "--macs-limit", "3", "--quiet"]


def test_end_to_end_search_survives_sigkill(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasx", "search", "nas-fcos", "--data", str(tiny_data), "--out", str(out), *TINY_RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    before, records = killed_then_resumed(cmd, out, env, tmp_path / "stderr.txt")  # baseline + 2 searched
    results = out / "results.jsonl"
    report = json.loads((out / "report.json").read_text())
    # the 0.6-second budget is long spent: the baseline and the best are retrained, top2 left out
    assert report["searched"] >= 6 and report["kendall_tau_n"] == 2 and report["left_out_for_budget"] == ["top2"]
    for key in ("arch", "map", "macs", "params", "latency_ms"):
        assert key in report["baseline"] and key in report["best"]
    assert report["baseline"]["arch"] == NasFcosArch.parse("baseline").to_string()
    assert report["proxy_speedup"] > 0
    assert (out / "pareto.png").stat().st_size > 0 and (out / "best.pt").is_file()
    best = json.loads((out / "best.json").read_text())
    NasFcosArch.parse(best["arch"])
    # TensorBoard curves of every stage, and the run as `nasx runs list` sees it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (out / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/backbone/loss", "search/reward", "search/GMACs", "round/best", "round/entropy",
            "train/retrain-classifier/baseline/lr", "retrain/mAP"} <= tags
    listed = subprocess.run([sys.executable, "-m", "nasx", "runs", "list", str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "nas-fcos  done" in listed.stdout, listed.stdout + listed.stderr
    page = (out / "report.html").read_text()                   # one row per results.jsonl line, plots inlined
    archs = page[page.index('id="archs"'):].split("</table>")[0]
    assert archs.count("<tr") == len(records) + 1 and "data:image/png;base64," in page
    assert [s.stem for s in sorted((out / "stages").glob("*.json"))] == ["backbone", "cache", "report",
                                                                        "retrain-classifier", "search", "seed"]
    # the MACs limit: the baseline's reward is unpenalised, every candidate's loss reward kept beside its reward
    assert all("loss_reward" in r and r["reward"] == pytest.approx(r["loss_reward"] - r["cost_penalty"])
               for r in records if r.get("status") == "ok")
    assert report["macs_limit"]["macs"] == pytest.approx(3 * report["baseline"]["macs"])
    assert report["best"] is None or report["best"]["macs"] <= report["macs_limit"]["macs"] * (1 + 1e-9)
    assert report["final_init"] == "classifier" and report["seed"]["steps"] == 3
    # the best checkpoint says how to rebuild its detector: `nasx eval` scores it as it is
    assert report["best"] is not None, "the tiny search found nothing within 3x the baseline's MACs"
    scored = subprocess.run([sys.executable, "-m", "nasx", "eval", "--data", str(tiny_data), "--checkpoint",
                             str(out / "best.pt"), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads(scored.stdout)["AP"] == pytest.approx(report["best"]["map"], abs=1e-6)

    # resumed with a larger budget after the search ended: the candidates stay final
    more = [c if c != "0.01" else "5" for c in cmd]
    again = subprocess.run(more, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert results.read_text().splitlines() == [json.dumps(r, separators=(",", ":")) for r in records]

    # the same search retrained the other way (weight inheritance): its own log, both modes in the report
    assert subprocess.run(more + ["--final-init", "inherit"], env=env, capture_output=True, text=True,
                          timeout=600).returncode == 0
    report = json.loads((out / "report.json").read_text())
    assert report["final_init"] == "inherit" and set(report["modes"]) == {"classifier", "inherit"}
    # with 5 minutes the resumed runs had time for top2 too, in both modes
    assert all(m["n"] == 3 for m in report["modes"].values()) and (out / "retrained.jsonl").is_file()
    assert results.read_text().splitlines() == [json.dumps(r, separators=(",", ":")) for r in records]

    # the proxy study on this run's three retrained decoders: the run's own setting reproduces its tau
    study_dir = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "nasx", "runs", "proxy-study", str(out), "--steps", "2,3", "--lr",
                           "2e-3", "--polyak", "0.95", "--val-images", "1,0", "--seeds", "0,1", "--workers", "1",
                           "--out", str(study_dir)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = json.loads((study_dir / "study.json").read_text())
    own = study["rows"][0]
    assert own["label"] == "the run's settings" and own["setting"]["steps"] == 3
    assert own["taus"][0] == pytest.approx(report["modes"]["classifier"]["kendall_tau"], nan_ok=True)
    labels = [r["setting"] for r in study["rows"]]
    assert labels[1]["steps"] == 2 and any(r["seeds"] == 2 for r in labels)
    assert any(r["reward"] == "map" for r in labels) and (study_dir / "study.png").stat().st_size > 0
    assert "| the run's settings |" in (study_dir / "study.md").read_text()
    assert study["ceiling"] is None and study["truth"]["seeds"] == []
    # the same three decoders retrained from another seed: the truth becomes the mean of both retrainings
    # and the tau between them is the ceiling
    again = subprocess.run([sys.executable, "-m", "nasx", "runs", "proxy-study", str(out), "--steps", "3", "--lr",
                            "2e-3", "--polyak", "0.95", "--val-images", "0", "--reward", "loss", "--seeds", "0",
                            "--workers", "1", "--retrain-seeds", "1", "--out", str(study_dir / "again")], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    study = json.loads((study_dir / "again" / "study.json").read_text())
    seed1 = [json.loads(line) for line in (study_dir / "again" / "run" / "retrain-classifier-seed1-steps3" /
                                           "retrained-classifier.jsonl").read_text().splitlines()]
    own = [json.loads(line) for line in (out / "retrained-classifier.jsonl").read_text().splitlines()]
    truth = study["runs"][0]["decoders"]
    assert [d["maps"] for d in truth] == [[a["map"], b["map"]] for a, b in zip(own, seed1)]
    assert [d["map"] for d in truth] == pytest.approx([(a["map"] + b["map"]) / 2 for a, b in zip(own, seed1)])
    got, want = study["ceiling"]["taus"][0], kendall_tau([a["map"] for a in own], [b["map"] for b in seed1])
    assert study["ceiling"]["setting"] is None
    assert (got is None and math.isnan(want)) or got == pytest.approx(want)     # JSON writes NaN as null
    assert study["truth"]["retrainings"] == [2] and "Truth: the mean mAP of 2 retrainings" in \
        (study_dir / "again" / "study.md").read_text()
    refused = subprocess.run([sys.executable, "-m", "nasx", "runs", "proxy-study", str(tmp_path)], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "not a run directory" in refused.stderr


def test_search_cli_refuses_a_run_with_other_settings(tiny_data, tmp_path):
    from nasx.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"channels": 64}))
    assert main(["search", "nas-fcos", "--data", str(tiny_data), "--out", str(out), *TINY_RUN]) == 1
    assert main(["search", "nas-fcos", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"),
                 *TINY_RUN]) == 1


def test_a_moved_run_resumes_and_a_changed_setting_is_named(tmp_path):
    from nasx.pipelines.nas_fcos import RESUMABLE, NasFcosConfig
    from nasx.pipelines.rundir import RunDir

    def run_dir(name, **kw):
        return RunDir(tmp_path / name, pipeline="nas-fcos", config=NasFcosConfig(data="d", out=str(tmp_path / name), **kw),
                      resumable=RESUMABLE)

    run_dir("a").freeze_config()
    (tmp_path / "a").rename(tmp_path / "b")
    run_dir("b", workers=2, budget_minutes=30).freeze_config()       # moved, more workers and time: resumes
    with pytest.raises(ValueError, match=r"other settings \(channels: 32 -> 64\)"):
        run_dir("b", channels=64).freeze_config()
    with pytest.raises(ValueError, match=r"other settings \(proxy: .*'steps': 30.*'steps': 31"):
        run_dir("b", proxy=ProxyConfig(steps=31)).freeze_config()
    # a run started before a setting existed: missing (top level or nested) = that setting's default
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    del saved["proxy"]["latency_runtime"], saved["channels"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(saved))
    run_dir("b").freeze_config()
    (tmp_path / "b" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"other settings \(proxy: .*'latency_runtime': 'onnxruntime'"):
        run_dir("b", proxy=ProxyConfig(steps=30, latency_runtime="onnxruntime")).freeze_config()
    other = RunDir(tmp_path / "b", pipeline="sm-nas", config=NasFcosConfig(data="d", out="b"))
    with pytest.raises(ValueError, match="holds a nas-fcos run, not sm-nas"):
        other.freeze_config()


def test_run_config_takes_the_optimizers_defaults():
    from nasx.pipelines.nas_fcos import NasFcosConfig

    assert (NasFcosConfig(data="d", out="o").lr, NasFcosConfig(data="d", out="o").weight_decay) == (2e-3, 0.05)
    sgd = NasFcosConfig(data="d", out="o", optimizer="sgd")
    assert (sgd.lr, sgd.weight_decay) == (0.02, 1e-4)
    assert NasFcosConfig(data="d", out="o", optimizer="sgd", lr=0.01).lr == 0.01
    with pytest.raises(ValueError, match="optimizer must be one of"):
        NasFcosConfig(data="d", out="o", optimizer="lion")


def test_every_setting_has_a_flag():
    """The CLI is generated from the config: each field (nested proxy fields too) is a flag with help."""
    import dataclasses

    from nasx.cli import build_parser
    from nasx.pipelines.nas_fcos import NasFcosConfig

    parser = build_parser()
    search = next(a for a in parser._actions if a.dest == "command").choices["search"]
    nas_fcos = next(a for a in search._actions if a.dest == "pipeline").choices["nas-fcos"]
    flags = {o for a in nas_fcos._actions for o in a.option_strings}
    for f in dataclasses.fields(NasFcosConfig):
        if dataclasses.is_dataclass(f.type) or f.name == "proxy":
            for g in dataclasses.fields(ProxyConfig):
                name = g.name.replace("_", "-")
                assert (f"--no-proxy-{name}" if g.type in (bool, "bool") else f"--proxy-{name}") in flags
        else:
            default = "--" + ("no-" if f.default is True else "") + f.name.replace("_", "-")
            assert f.metadata.get("flag", default) in flags, f.name
    assert {"--backbone-norm", "--weight-decay", "--backend", "--ray-address", "--strategy", "--no-tensorboard"} <= flags
    args = parser.parse_args(["search", "nas-fcos", "--data", "d", "--out", "o", "--weight-decay", "0.01",
                              "--proxy-lr", "0.005", "--quiet", "--meta-val", "0.2"])
    from nasx.pipelines.config_flags import config_from_args

    cfg = config_from_args(NasFcosConfig, args)
    assert (cfg.weight_decay, cfg.proxy.lr, cfg.progress, cfg.meta_val_fraction) == (0.01, 0.005, False, 0.2)
    assert cfg.proxy.steps == 30 and cfg.backbone_norm == "gn"          # defaults come from the dataclass


TIMINGS = {"seconds", "s_per_step", "latency_ms"}


def _comparable(records):
    """Records by encoding without what depends on the clock or the run directory's path."""
    return {r["encoding"]: {k: (os.path.basename(v) if k == "weights" else v) for k, v in r.items() if k not in TIMINGS}
            for r in records}


def test_ray_backend_survives_sigkill_and_matches_the_process_backend(tiny_data, tmp_path):
    """`--backend ray --workers 2` on a local Ray cluster: SIGKILLed mid-search and resumed, nothing
    is lost or repeated, and the records are those of the process backend with the same seed."""
    pytest.importorskip("ray")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "nasx", "search", "nas-fcos", "--data", str(tiny_data), *TINY_RUN, "--workers", "2"]
    ray_out = tmp_path / "ray"
    _, on_ray = killed_then_resumed([*base, "--out", str(ray_out), "--backend", "ray"], ray_out, env,
                                     tmp_path / "stderr.txt")
    assert json.loads((ray_out / "report.json").read_text())["config"]["backend"] == "ray"
    proc_out = tmp_path / "process"
    done = subprocess.run([*base, "--out", str(proc_out), "--backend", "process"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    on_processes = [json.loads(line) for line in (proc_out / "results.jsonl").read_text().splitlines()]
    assert _comparable(on_ray) == _comparable(on_processes)
    compared = subprocess.run([sys.executable, "-m", "nasx", "runs", "compare", str(ray_out), str(proc_out), "--out",
                               str(tmp_path / "cmp.png")], env=env, capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    assert "settings that differ (1):\n  backend: 'ray' -> 'process'" in compared.stdout
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_a_missing_ray_is_named_before_any_work(tiny_data, tmp_path, monkeypatch, capsys):
    from nasx.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "run"
    assert main(["search", "nas-fcos", "--data", str(tiny_data), "--out", str(out), *TINY_RUN, "--backend", "ray"]) == 1
    assert "pip install 'nasx[ray]'" in capsys.readouterr().err and not out.exists()


def test_retraining_is_planned_from_the_candidates_proxy_step_times(tmp_path):
    """A decoder twice as slow as the baseline on the proxy makes its share of an image step
    twice as slow; the search stops early enough for the retraining of the best so far."""
    from nasx.pipelines.nas_fcos import NasFcosConfig, _NasFcos
    from nasx.search import ResultsLog

    cfg = NasFcosConfig(data="d", out=str(tmp_path), top_k=2, min_archs=2, retrain_steps=10, batch_size=16,
                        budget_minutes=1.0, proxy=ProxyConfig(batch_size=16))
    run = _NasFcos(cfg)
    results = ResultsLog(tmp_path / "results.jsonl")
    results.append({"encoding": run.space.canonical("baseline"), "source": "baseline", "status": "ok", "reward": -1.0,
                    "s_per_step": 0.1})
    # stage 1: 0.2 s per image step, the baseline decoder 0.1 of it
    assert run.retrain_seconds(results, 0.2) == pytest.approx(3 * (10 * 0.2 + 10))  # nothing searched yet
    results.append({"encoding": "a", "source": "search", "status": "ok", "reward": -0.5, "s_per_step": 0.3})
    results.append({"encoding": "b", "source": "search", "status": "ok", "reward": -0.7, "s_per_step": 0.05})
    results.append({"encoding": "c", "source": "search", "status": "ok", "reward": -2.0, "s_per_step": 9.0})  # not top-2
    # a: 1 + 0.5 * (3 - 1) = 2x the baseline's step; b (cheaper): 1x
    assert run.retrain_seconds(results, 0.2) == pytest.approx(10 * 0.2 * (1 + 2 + 1) + 30)
    assert run.retrain_seconds(results, float("nan")) == pytest.approx(60 / 4)  # stage 1 speed unknown


def test_one_process_per_run_directory_and_its_status(tmp_path):
    from nasx.pipelines.nas_fcos import RESUMABLE, NasFcosConfig
    from nasx.pipelines.rundir import RunDir
    from nasx.pipelines.runs import run_status

    def run_dir():
        return RunDir(tmp_path / "r", pipeline="nas-fcos", config=NasFcosConfig(data="d", out=str(tmp_path / "r")),
                      resumable=RESUMABLE)

    first = run_dir()
    first.freeze_config()
    assert run_status(tmp_path / "r") == "running"
    with pytest.raises(ValueError, match=rf"in use by another nasx process \(pid {os.getpid()}\)"):
        run_dir().freeze_config()
    del first                                                  # the process "ends": the lock goes with it
    assert run_status(tmp_path / "r") == "interrupted"
    run_dir().freeze_config()


def test_without_tensorboard_the_run_says_so_once_and_goes_on(tmp_path, monkeypatch, caplog):
    from nasx.pipelines.tensorboard import RunLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level("WARNING", logger="nasx"):
        runlog = RunLog(tmp_path / "tb")
    assert caplog.text.count("TensorBoard is not installed") == 1
    runlog.candidate({"status": "ok", "reward": -1.0, "macs": 1e9})
    runlog.training("backbone")(10, {"loss": 1.0})
    runlog.close()
    assert not (tmp_path / "tb").exists()


def _row(name, mAP, gmacs, tmp_path, **extra):
    ckpt = tmp_path / f"{name}.pt"
    ckpt.write_bytes(b"checkpoint")
    return {"name": name, "encoding": name, "map": mAP, "metrics": {"AP50": 2 * mAP}, "macs": gmacs * 1e9,
            "params": 1e6, "latency_ms": 10.0, "reward": -1.0, "loss_reward": -1.0, "train_s_per_step": 0.2,
            "proxy_s_per_step": 0.1, "checkpoint": ckpt.name, **extra}


def test_report_best_is_within_the_limit_and_the_baseline_dominance_is_named(tmp_path):
    """The best is the best retrained decoder within the MACs limit (not the best overall); the
    searched decoders the baseline dominates are named; the plot draws them and the limit."""
    from nasx.pipelines.nas_fcos import NasFcosConfig, _NasFcos, format_summary
    from nasx.search import ResultsLog

    run = _NasFcos(NasFcosConfig(data="d", out=str(tmp_path), macs_limit=1.0, top_k=3, min_archs=3))
    results = ResultsLog(tmp_path / "results.jsonl")
    results.append({"encoding": run.space.canonical("baseline"), "source": "baseline", "status": "ok",
                    "reward": -1.0, "macs": 0.05e9, "s_per_step": 0.1})
    rows = [_row("baseline", 0.20, 0.05, tmp_path), _row("top1", 0.30, 0.08, tmp_path),   # better, dearer
            _row("top2", 0.22, 0.045, tmp_path), _row("top3", 0.15, 0.06, tmp_path)]     # top3: dominated
    report = run.stage_report(results, {"rounds": 1, "stopped": "budget"}, rows, ["top4"])
    assert report["best"]["arch"] == "top2" and report["best_beats_baseline"] is True
    assert report["macs_limit"]["macs"] == pytest.approx(0.05e9)
    assert report["dominated_by_baseline"] == ["top3"] and report["left_out_for_budget"] == ["top4"]
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "best.json").is_file()
    text = format_summary(report)
    assert "best within limit" in text and "dominated by the baseline: top3" in text and "top4" in text
    # nothing within the limit: no best, said so
    report = run.stage_report(results, {"rounds": 1, "stopped": "budget"}, rows[:2], [])
    assert report["best"] is None and "no retrained decoder is within the MACs limit" in format_summary(report)


def test_retraining_leaves_out_what_would_overrun_the_budget(tmp_path):
    """Predicted from the baseline's measured retraining step, the candidate's proxy step factor and
    how far the factor missed for those retrained so far."""
    from nasx.pipelines.nas_fcos import NasFcosConfig, _NasFcos
    from nasx.pipelines.retrain import Candidate

    run = _NasFcos(NasFcosConfig(data="d", out=str(tmp_path), retrain_steps=100, budget_minutes=1.0))
    rows = [{"train_s_per_step": 0.1, "step_factor": 1.0},      # baseline: 0.1 s per step
            {"train_s_per_step": 0.4, "step_factor": 2.0}]      # top1 ran 2x slower than its factor said
    cheap, dear = (Candidate(n, n, {}, {"step_factor": f}) for n, f in (("a", 1.0), ("b", 2.5)))
    # nothing spent: a needs 100 * 0.1 * 1 * 2 + 10 = 30 s, b 100 * 0.1 * 2.5 * 2 + 10 = 60 s of 63 allowed
    assert run.fits(cheap, rows) and run.fits(dear, rows)
    run.run.clock.before = 20.0                                 # 20 s spent
    assert run.fits(cheap, rows) and not run.fits(dear, rows)


def test_proxy_study_choice_is_scored_on_the_run_left_out():
    """The honest row of the study: each run's setting is chosen on the other runs only."""
    from nasx.pipelines.proxy_study import _held_out

    a = {"setting": {"steps": 30}, "taus": [0.9, -0.2, 0.1], "s_per_decoder": 5.0}   # great on run 0 only
    b = {"setting": {"steps": 60}, "taus": [0.1, 0.6, 0.5], "s_per_decoder": 9.0}
    row = _held_out([a, b], 3)
    # run 0 left out: b is best on runs 1-2 (0.55 vs -0.05); run 1: a (0.5 vs 0.3); run 2: a (0.35 vs 0.35, cheaper)
    assert row["chosen"] == [{"steps": 60}, {"steps": 30}, {"steps": 30}]
    assert row["taus"] == [0.1, -0.2, 0.1] and row["tau"] == pytest.approx(0.0)
