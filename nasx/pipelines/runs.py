"""Run directories seen from outside: what ``nasx runs list`` and ``nasx runs compare`` show.

Status: ``running`` while a process holds the directory's lock (see :meth:`RunDir.lock`; the
kernel drops it when that process ends, however it ends), ``done`` once ``report.json`` is
written (the last thing a run does), ``interrupted`` otherwise — run the same command again to resume it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from nasx.atomic import read_json
from nasx.pipelines.rundir import retrained_path
from nasx.search.results import read_records

__all__ = ["find_runs", "run_status", "run_summary", "settings_diff", "compare_plot"]


def find_runs(root) -> list[Path]:
    """``root`` if it is a run directory, else the run directories one or two levels below it."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    if (root / "config.json").is_file():
        return [root]
    return sorted({p.parent for pattern in ("*/config.json", "*/*/config.json") for p in root.glob(pattern)})


def run_status(run) -> str:
    import fcntl

    run = Path(run)
    lock = run / ".lock"
    if lock.exists():
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return "running"
    return "done" if (run / "report.json").exists() else "interrupted"


def run_summary(run) -> dict:
    """``{"run", "pipeline", "status", "archs", "best", "minutes"}``; ``best`` is the report's best
    mAP when there is a report, else the best reward so far."""
    run = Path(run)
    config = read_json(run / "config.json")
    records = read_records(run / "results.jsonl")
    best: Optional[str] = None
    if (run / "report.json").exists():
        best = f"mAP {read_json(run / 'report.json')['best']['map']:.3f}"
    else:
        rewards = [r["reward"] for r in records if r.get("status") == "ok" and r.get("reward") is not None]
        best = f"reward {max(rewards):.3f}" if rewards else None
    clock = run / "clock.json"
    minutes = read_json(clock)["seconds"] / 60 if clock.exists() else 0.0
    return {"run": str(run), "pipeline": config.get("pipeline", "?"), "status": run_status(run),
            "archs": sum(1 for r in records if r.get("source") == "search"), "best": best, "minutes": minutes}


def settings_diff(a, b) -> dict:
    """``{setting: (value in a, value in b)}`` for the settings that differ (``out`` excluded)."""
    ca, cb = read_json(Path(a) / "config.json"), read_json(Path(b) / "config.json")
    return {k: (ca.get(k), cb.get(k)) for k in sorted(set(ca) | set(cb)) if k != "out" and ca.get(k) != cb.get(k)}


def _points(run: Path, metric: str) -> list[tuple[str, float, float]]:
    """(name, GMACs, metric) of a run's retrained detectors (``map``) or evaluated candidates (``reward``)."""
    if metric == "map":
        return [(r.get("name", ""), r["macs"] / 1e9, r["map"]) for r in read_records(retrained_path(run))]
    return [(r.get("source", ""), r["macs"] / 1e9, r["reward"]) for r in read_records(run / "results.jsonl")
            if r.get("status") == "ok" and r.get("reward") is not None and r.get("macs") is not None]


def compare_plot(a, b, out) -> Path:
    """Both runs' Pareto fronts (GMACs vs mAP of the retrained detectors, or vs the search reward
    when either run has retrained nothing yet) on one plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nasx.search.archive import ParetoArchive

    runs = [Path(a), Path(b)]
    metric = "map" if all(retrained_path(r).exists() for r in runs) else "reward"
    label = {"map": "mAP of the retrained detectors", "reward": "search reward"}[metric]
    fig, ax = plt.subplots(figsize=(6.0, 4.2), constrained_layout=True)
    for k, run in enumerate(runs):
        points = _points(run, metric)
        if not points:
            continue
        archive = ParetoArchive(objectives=("y", "GMACs"), maximize=("y",))
        for name, gmacs, y in points:
            archive.add(name, {"y": y, "GMACs": gmacs})
        front = sorted(archive.front_indices(), key=lambda i: points[i][1])
        color = f"C{k}"
        ax.scatter([p[1] for p in points], [p[2] for p in points], s=12, color=color, alpha=0.35, edgecolors="none")
        ax.plot([points[i][1] for i in front], [points[i][2] for i in front], drawstyle="steps-post", color=color,
                marker="o", markersize=4, label=f"{run.name} ({len(points)}, front {len(front)})")
    ax.set_xlabel("GMACs (lower is better)")
    ax.set_ylabel(f"{label} (higher is better)")
    ax.set_title(f"{runs[0].name} vs {runs[1].name}")
    ax.grid(True, color="0.92")
    ax.legend(frameon=False, fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out
