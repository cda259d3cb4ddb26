"""``nasx runs proxy-study RUN [RUN ...]``: how well NAS-FCOS proxy settings rank decoders the way
their final training does.

The truth is what a finished search already measured: the retrained mAP of its baseline and top-k
decoders (``retrained-<mode>.jsonl``). Each of those decoders is trained again by the run's own
:class:`~nasx.evaluate.proxy.DecoderProxy` (same cache, meta-train / meta-val split, batch,
warm-up, weight decay) under other settings, and every setting gets Kendall tau of its reward
against retrained mAP, per run. Cheap by construction: the proxy's schedule is warm-up then
constant, so one training of ``max(steps)`` is scored at every shorter length too, with one
Polyak average per decay kept side by side and each meta-val size a prefix of one shuffled
meta-val; only the learning rate and the seed need trainings of their own (every learning rate
with the first seed, the run's learning rate with every seed).

Settings reported: the run's own (the base), each factor changed alone, the mean reward of
several seeds, the best combination of the whole grid — chosen on the same decoders, so an
optimistic figure, labelled so — and, with two runs or more, that choice made honestly: the best
combination on all runs but one, scored on the one left out, for each run in turn.

The truth has noise of its own. With ``retrain_seeds`` the same decoders are retrained again, the
same way but from other seeds and, with ``retrain_steps``, for longer (:func:`repeat_retraining`):
the truth becomes the mean mAP of every retraining at those steps (the run's own counts when the
steps are its own), and the mean tau between two single retrainings is the ceiling no proxy can be
expected to pass. Each run also says which searched decoders beat its baseline (more truth mAP at
no more MACs) under that truth.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["StudyGrid", "proxy_study", "repeat_retraining", "format_study", "study_plot"]


@dataclass(frozen=True)
class StudyGrid:
    """The values tried per factor. ``val_images``: meta-val prefixes (0: the run's whole meta-val)."""

    steps: tuple = (30, 60, 120)
    lrs: tuple = (1e-3, 2e-3, 4e-3)
    polyaks: tuple = (0.0, 0.95, 0.99)
    val_images: tuple = (50, 100, 0)
    rewards: tuple = ("loss", "map")
    seeds: tuple = (0, 1)

    def __post_init__(self):
        from nasx.evaluate.proxy import PROXY_REWARDS

        for name, values in asdict(self).items():
            if not values:
                raise ValueError(f"proxy study: {name} needs at least one value")
        if min(self.steps) < 1 or min(self.lrs) <= 0 or not all(0 <= d < 1 for d in self.polyaks) \
                or min(self.val_images) < 0 or not set(self.rewards) <= set(PROXY_REWARDS):
            raise ValueError(f"proxy study: steps >= 1, lr > 0, polyak in [0, 1), val images >= 0 (0: all) and "
                             f"rewards in {PROXY_REWARDS} expected, got {self}")


def _decoders(run: Path, mode: str) -> list[dict]:
    from nasx.pipelines.rundir import retrained_log_name
    from nasx.search.results import read_records

    path = run / retrained_log_name(mode)
    rows = read_records(path) if path.exists() else []
    rows = [r for r in rows if r.get("map") is not None and math.isfinite(r["map"])]
    if len(rows) < 3:
        raise ValueError(f"{run}: {len(rows)} decoders retrained in {path.name}; the study needs at least 3 "
                         f"(a finished NAS-FCOS run with --final-init {mode})")
    return rows


_PROXIES: dict = {}


def run_proxy(run) -> "DecoderProxy":  # noqa: F821 - imported lazily
    """The run's own proxy (cache, split, backbone, settings), latency off; one per process."""
    from nasx.atomic import read_json
    from nasx.evaluate.proxy import DecoderProxy, ProxyConfig
    from nasx.spaces.nas_fcos import NasFcosSpace
    from nasx.train.checkpoint import load_checkpoint

    run = Path(run)
    if run not in _PROXIES:
        cfg, split = read_json(run / "config.json"), read_json(run / "split.json")
        if cfg.get("pipeline") != "nas-fcos":
            raise ValueError(f"{run}: a {cfg.get('pipeline')!r} run; the proxy study reads NAS-FCOS runs")
        build = load_checkpoint(run / "backbone" / "last.pt")["meta"]["build"]
        config = ProxyConfig(**{**cfg["proxy"], "latency": False})
        space = NasFcosSpace(channels=cfg["channels"], box_activation=cfg.get("box_activation", "relu"))
        _PROXIES[run] = DecoderProxy(run / "cache", split["meta_train"], split["meta_val"], space=space,
                                     num_classes=build["num_classes"], detector_kwargs={},
                                     backbone={"encoding": cfg["backbone"], "norm": cfg["backbone_norm"]},
                                     config=config)
    return _PROXIES[run]


class _Job:
    """One training of one decoder, scored at every (steps, polyak, meta-val size, reward)."""

    def __init__(self, grid: StudyGrid):
        self.grid = grid

    def __call__(self, item) -> dict:
        run, encoding, lr, seed = item
        proxy, g = run_proxy(run), self.grid
        order = np.random.default_rng(0).permutation(proxy.val_indices)   # meta-val sizes: random prefixes
        sizes = [n if n and n <= len(order) else len(order) for n in g.val_images]
        scores, train_s, score_s = [], {}, {}
        for step, _, avgs, seconds in proxy.train(encoding, steps=max(g.steps), lr=lr, seed=seed, polyaks=g.polyaks,
                                                  at=g.steps):
            train_s[step] = seconds
            for decay, model in avgs.items():
                t0 = time.perf_counter()
                rows = proxy.score_prefixes(model, order, sorted(set(sizes)), reward="map" if "map" in g.rewards
                                            else "loss")
                by_size = dict(zip(sorted(set(sizes)), rows))
                score_s[step] = time.perf_counter() - t0
                for asked, n in zip(g.val_images, sizes):
                    row = by_size[n]
                    for reward in g.rewards:
                        value = row["meta_val_map"] if reward == "map" else -row["meta_val_loss"]
                        scores.append([step, decay, asked, reward, value])
        return {"status": "ok", "scores": scores, "train_seconds": train_s, "score_seconds": score_s,
                "val_images": len(order)}


def repeat_retraining(run, out, *, mode: str = "classifier", seed: int = 1, steps: Optional[int] = None) -> list[dict]:
    """Retrains the decoders ``run`` retrained in ``mode`` (``classifier`` or ``scratch``) once more,
    from ``seed``, for ``steps`` (default: the run's retraining steps), into ``out``
    (``retrained-<mode>.jsonl``, resumable); returns the lines in the run's order. Everything else —
    recipe, data, the crop classifier's backbone — is the run's."""
    from nasx.atomic import read_json
    from nasx.pipelines.nas_fcos import NasFcosConfig, _NasFcos
    from nasx.pipelines.retrain import Candidate, retrain_and_score
    from nasx.pipelines.rundir import RunDir

    if mode not in ("classifier", "scratch"):
        raise ValueError(f"repeat_retraining: mode must be classifier or scratch (inherit starts from the proxy's "
                         f"weights, which a seed does not change), got {mode!r}")
    run, out = Path(run), Path(out)
    saved = {k: v for k, v in read_json(run / "config.json").items() if k != "pipeline"}
    steps = saved["retrain_steps"] if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"repeat_retraining: steps must be >= 1, got {steps}")
    if saved.get("seed") == seed and steps == saved["retrain_steps"]:
        raise ValueError(f"repeat_retraining: seed {seed} at {steps} steps is {run}'s own retraining; it is "
                         f"deterministic and would repeat exactly — choose another seed or other steps")
    cfg = NasFcosConfig(**{**saved, "seed": seed, "retrain_steps": steps, "final_init": mode, "progress": False,
                           "tensorboard": False})
    nas = _NasFcos(cfg)                      # reads the run's data split and crop classifier; writes nothing there
    nas.open_data()
    nas.stage_seed()
    lines = _decoders(run, mode)
    study = RunDir(out, pipeline="nas-fcos-retrain-repeat", config=cfg)
    return retrain_and_score(study, [Candidate(r.get("name", f"d{i}"), r["encoding"], nas.build(r["encoding"]))
                                     for i, r in enumerate(lines)],
                             train_set=nas.train_aug, val_set=nas.val, steps=steps, recipe=nas.recipe,
                             input_size=nas.input_size, meta=nas.meta(),
                             prepare=nas.start_from_seed if mode == "classifier" else None,
                             log_name=f"retrained-{mode}.jsonl", stage=f"retrain-{mode}",
                             timing={"runtime": cfg.proxy.latency_runtime})


class _Retrain:
    """One repeated retraining (run, seed, steps) in a worker, into ``out/<run name>/``: see
    :func:`repeat_retraining`."""

    def __init__(self, out: Path, mode: str):
        self.out, self.mode = out, mode

    def __call__(self, item) -> dict:
        run, seed, steps = item
        where = Path(self.out) / Path(run).name / f"retrain-{self.mode}-seed{seed}-steps{steps}"
        return {"status": "ok", "lines": repeat_retraining(run, where, mode=self.mode, seed=seed, steps=steps)}


def _truth(runs: list, decoders: dict, *, mode: str, seeds: Sequence[int], steps: Optional[int], out,
           workers: int, backend: str, progress: bool) -> Optional[dict]:
    """Retrains every run's decoders from each of ``seeds`` (at ``steps``), replaces each decoder's
    ``map`` by the mean over the retrainings at those steps, and returns the ceiling row (None when
    there is one retraining per run)."""
    from nasx.atomic import read_json
    from nasx.evaluate.rank import kendall_tau
    from nasx.progress import Progress
    from nasx.search.workers import make_workers

    if not seeds:
        return None
    if out is None:
        raise ValueError("proxy study: retrain_seeds needs out (where the repeated retrainings go)")
    own_steps = {run: read_json(run / "config.json")["retrain_steps"] for run in runs}
    at = {run: own_steps[run] if steps is None else steps for run in runs}
    items = [(str(run), seed, at[run]) for run in runs for seed in seeds]
    again: dict = {}
    bar = Progress(len(items), "retraining again", unit="run x seed", enabled=progress)
    with make_workers(min(workers, len(items)), backend=backend) as pool:
        for i, res in pool.map_unordered(_Retrain(Path(out), mode), items):
            if res.get("status") != "ok":
                raise RuntimeError(f"proxy study: retraining {items[i][0]} from seed {items[i][1]} failed: "
                                   f"{res.get('error')}")
            again[items[i][:2]] = res["lines"]
            bar.update(1)
    bar.close()
    taus, seconds = [], []
    for run in runs:
        maps = [[r["map"] for r in again[(str(run), s)]] for s in seeds]
        seconds += [r["train_s_per_step"] * at[run] for s in seeds for r in again[(str(run), s)]]
        if at[run] == own_steps[run]:
            maps.insert(0, [d["map"] for d in decoders[run]])
        pairs = [kendall_tau(a, b) for a, b in itertools.combinations(maps, 2)]
        taus.append(float(np.nanmean(pairs)) if pairs and np.isfinite(pairs).any() else math.nan)
        for d, m in zip(decoders[run], zip(*maps)):
            d["maps"], d["map"] = [float(v) for v in m], float(np.mean(m))
    if all(len(d["maps"]) < 2 for run in runs for d in decoders[run]):
        return None
    finite = [t for t in taus if math.isfinite(t)]
    where = f"{steps} steps" if steps else "the run's steps"
    return {"label": f"one retraining against another ({where}, seeds "
                     f"{', '.join(map(str, seeds))}; the truth's own tau)",
            "setting": None, "taus": taus, "tau": float(np.mean(finite)) if finite else math.nan,
            "s_per_decoder": float(np.mean(seconds))}


def _beats_baseline(decoders: list[dict]) -> list[str]:
    """The searched decoders with more (truth) mAP than the baseline at no more MACs."""
    base = next((d for d in decoders if d.get("name") == "baseline"), None)
    if base is None:
        return []
    return [d["name"] for d in decoders if d is not base and d["map"] > base["map"] and d["macs"] <= base["macs"]]


def _setting(steps, lr, polyak, val_images, reward, seeds) -> dict:
    return {"steps": steps, "lr": lr, "polyak": polyak, "val_images": val_images, "reward": reward, "seeds": seeds}


def proxy_study(runs: Sequence, *, mode: str = "classifier", grid: StudyGrid = StudyGrid(), workers: int = 2,
                backend: str = "auto", progress: bool = True, retrain_seeds: Sequence[int] = (),
                retrain_steps: Optional[int] = None, out=None) -> dict:
    """Scores every setting of ``grid`` on every run's retrained decoders; see the module docstring.
    ``retrain_seeds`` / ``retrain_steps``: retrain them again from those seeds, for that many steps
    (default: the run's), into ``out/<run name>/``; the truth becomes the mean of the retrainings.

    Returns ``{"runs": [{run, decoders: [{name, map, maps, macs}], beats_baseline}], "truth",
    "base": setting, "rows": [{label, setting, taus (per run), tau (mean), s_per_decoder}], "best":
    row, "ceiling": row or None}``.
    """
    from nasx.atomic import read_json
    from nasx.evaluate.rank import kendall_tau
    from nasx.progress import Progress
    from nasx.search.workers import make_workers

    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("proxy study: name at least one NAS-FCOS run directory")
    decoders = {run: _decoders(run, mode) for run in runs}
    ceiling = _truth(runs, decoders, mode=mode, seeds=tuple(retrain_seeds), steps=retrain_steps, out=out,
                     workers=workers, backend=backend, progress=progress)
    base_cfg = read_json(runs[0] / "config.json")["proxy"]     # the first run's proxy is the base setting
    base = _setting(base_cfg["steps"], base_cfg["lr"], base_cfg["polyak"], 0, base_cfg.get("reward", "loss"), 1)
    grid = StudyGrid(**{k: tuple(dict.fromkeys(v)) for k, v in {
        "steps": (*grid.steps, base["steps"]), "lrs": (*grid.lrs, base["lr"]),
        "polyaks": (*grid.polyaks, base["polyak"]), "val_images": (*grid.val_images, 0),
        "rewards": (*grid.rewards, base["reward"]), "seeds": (base_cfg.get("seed", 0), *grid.seeds)}.items()})
    trainings = sorted({(lr, grid.seeds[0]) for lr in grid.lrs} | {(base["lr"], s) for s in grid.seeds})
    items = [(str(run), d["encoding"], lr, seed) for run in runs for d in decoders[run] for lr, seed in trainings]

    # (run, encoding, lr, seed) -> {(steps, polyak, val, reward): value}
    table, train_s, score_s = {}, {}, {}
    bar = Progress(len(items), "proxy study", unit="training", enabled=progress)
    with make_workers(workers, backend=backend) as pool:
        for i, res in pool.map_unordered(_Job(grid), items):
            if res.get("status") != "ok":
                raise RuntimeError(f"proxy study: {items[i][1]} on {items[i][0]} failed: {res.get('error')}")
            table[items[i]] = {tuple(s[:4]): s[4] for s in res["scores"]}
            for step, s in res["train_seconds"].items():
                train_s.setdefault(int(step), []).append(s)
            for step, s in res["score_seconds"].items():
                score_s.setdefault(int(step), []).append(s)
            bar.update(1)
    bar.close()
    t_train = {k: float(np.median(v)) for k, v in train_s.items()}
    t_score = float(np.median([s for v in score_s.values() for s in v]))

    def evaluate(setting: dict) -> dict:
        seeds = grid.seeds[:setting["seeds"]]
        taus = []
        for run in runs:
            rewards = [float(np.mean([table[(str(run), d["encoding"], setting["lr"], s)][
                (setting["steps"], setting["polyak"], setting["val_images"], setting["reward"])] for s in seeds]))
                for d in decoders[run]]
            taus.append(kendall_tau(rewards, [d["map"] for d in decoders[run]]))
        finite = [t for t in taus if math.isfinite(t)]
        seconds = setting["seeds"] * (t_train[setting["steps"]] + t_score)
        return {"setting": setting, "taus": taus, "tau": float(np.mean(finite)) if finite else math.nan,
                "s_per_decoder": seconds}

    rows = [{"label": "the run's settings", **evaluate(base)}]
    for key, values in (("steps", grid.steps), ("lr", grid.lrs), ("polyak", grid.polyaks),
                        ("val_images", grid.val_images), ("reward", grid.rewards),
                        ("seeds", range(2, len(grid.seeds) + 1))):
        for v in values:
            if v != base[key]:
                rows.append({"label": "one factor", **evaluate({**base, key: v})})
    combos = [_setting(st, lr, d, n, r, k) for st, lr, d, n, r, k in itertools.product(
        grid.steps, grid.lrs, grid.polyaks, grid.val_images, grid.rewards, range(1, len(grid.seeds) + 1))
        if k == 1 or lr == base["lr"]]
    scored = [evaluate(c) for c in combos]
    best = max(scored, key=lambda r: (r["tau"] if math.isfinite(r["tau"]) else -2, -r["s_per_decoder"]))
    rows.append({"label": f"best of {len(combos)} combinations (in-sample)", **best})
    if len(runs) >= 2:
        rows.append(_held_out(scored, len(runs)))
    if ceiling is not None:
        rows.append(ceiling)
    truth = {"mode": mode, "steps": retrain_steps, "seeds": list(retrain_seeds),
             "retrainings": [len(decoders[run][0].get("maps", [0])) for run in runs]}
    return {"runs": [{"run": str(run), "mode": mode, "beats_baseline": _beats_baseline(decoders[run]),
                      "decoders": [{"name": d.get("name"), "map": d["map"], "maps": d.get("maps", [d["map"]]),
                                    "macs": d.get("macs")} for d in decoders[run]]} for run in runs],
            "truth": truth, "base": base, "grid": asdict(grid), "rows": rows, "best": best, "ceiling": ceiling,
            "s_per_step": t_train, "s_per_score": t_score, "combinations": scored}


def _held_out(scored: list[dict], n_runs: int) -> dict:
    """Leave one run out: the combination best on the other runs (ties: the cheaper), scored on the
    run left out — what choosing from the grid is worth on a search it did not see."""
    taus, chosen, seconds = [], [], []
    for held in range(n_runs):
        def fit(r):
            others = [t for i, t in enumerate(r["taus"]) if i != held and math.isfinite(t)]
            return (float(np.mean(others)) if others else -2.0, -r["s_per_decoder"])
        pick = max(scored, key=fit)
        taus.append(pick["taus"][held])
        chosen.append(pick["setting"])
        seconds.append(pick["s_per_decoder"])
    finite = [t for t in taus if math.isfinite(t)]
    return {"label": "best on the other runs, scored on the one left out", "setting": None, "chosen": chosen,
            "taus": taus, "tau": float(np.mean(finite)) if finite else math.nan, "s_per_decoder": float(np.mean(seconds))}


def _describe(setting: Optional[dict], base: dict, chosen: Optional[list] = None) -> str:
    if chosen:
        return "; ".join(_describe(c, base) for c in chosen)
    if setting is None:
        return "(not a proxy)"
    if setting == base:
        return "-"
    return ", ".join(f"{k} {v if k != 'val_images' or v else 'all'}" for k, v in setting.items() if v != base[k])


def format_study(study: dict) -> str:
    """The study as a Markdown table (a README-ready one)."""
    runs = [Path(r["run"]).name for r in study["runs"]]
    n = [len(r["decoders"]) for r in study["runs"]]
    head = (f"| setting | changed from the run's | Kendall tau, mean | per run ({', '.join(runs)}; "
            f"{'/'.join(map(str, n))} decoders) | s per decoder |\n|---|---|---|---|---|\n")
    lines = []
    for row in study["rows"]:
        taus = ", ".join("nan" if not math.isfinite(t) else f"{t:+.2f}" for t in row["taus"])
        lines.append(f"| {row['label']} | {_describe(row['setting'], study['base'], row.get('chosen'))} | "
                     f"{row['tau']:+.2f} | {taus} | "
                     f"{row['s_per_decoder']:.1f} |")
    truth = study.get("truth") or {}
    if truth.get("seeds"):
        steps = truth.get("steps") or "the run's"
        own = ", and the run's own" if max(truth["retrainings"]) > len(truth["seeds"]) else ""
        said = (f"the mean mAP of {'/'.join(map(str, truth['retrainings']))} retrainings per run at {steps} steps "
                f"(seeds {', '.join(map(str, truth['seeds']))}{own})")
    else:
        said = "each run's retrained mAP"
    beats = "; ".join(f"{name}: {', '.join(r.get('beats_baseline') or []) or 'none'}"
                      for name, r in zip(runs, study["runs"]))
    return (head + "\n".join(lines) + f"\n\nTruth: {said}. Searched decoders with more of it than the baseline "
            f"at no more MACs — {beats}.\n")


def study_plot(study: dict, path) -> Path:
    """Kendall tau per setting: the mean as a bar, each run as a dot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = study["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    colours = ["tab:purple" if r.get("chosen") else "tab:green" if r["setting"] is None else
               "tab:orange" if r["label"].startswith("best of") else
               "tab:gray" if i == 0 else "tab:blue" for i, r in enumerate(rows)]
    ax.barh(y, [r["tau"] for r in rows], color=colours, alpha=0.6)
    for yi, r in zip(y, rows):
        ax.plot(r["taus"], [yi] * len(r["taus"]), "k.", ms=5)
    ax.axvline(0.5, color="tab:red", lw=0.8, ls="--")
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("Kendall tau of the proxy reward vs retrained mAP (dots: runs)")
    ax.set_xlim(-1, 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
