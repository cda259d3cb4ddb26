"""The end of every pipeline: ``report.json``, the Pareto plot, ``best.json`` / ``best.pt``, and
the table a command prints.

Rows are retrain-and-score lines (:mod:`nasx.pipelines.retrain`): ``map``, ``macs``,
``params``, ``latency_ms``, ``metrics``, ``checkpoint`` (relative to the run directory).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from nasx.atomic import write_bytes, write_json
from nasx.pipelines.rundir import RunDir
from nasx.search.archive import ParetoArchive

__all__ = ["COSTS", "row_summary", "write_report", "publish_best", "pareto_plot", "format_table"]


def row_summary(row: Mapping, extra: Sequence[str] = ()) -> dict:
    """A retrained detector as the report shows it."""
    out = {"arch": row["encoding"], "map": row["map"], "ap50": row["metrics"]["AP50"], "macs": row["macs"],
           "params": row["params"], "latency_ms": row["latency_ms"]}
    out.update({k: row.get(k) for k in extra})
    return out


def write_report(run: RunDir, report: dict) -> dict:
    """``report.json`` with the settings and the run's total minutes added."""
    report = dict(report, seconds=run.clock.spent(), config=run.settings())
    write_json(run.path("report.json"), report)
    run.clock.save()
    return report


def publish_best(run: RunDir, row: Mapping, **fields) -> None:
    """``best.pt`` (a copy of its checkpoint: ``nasx eval --checkpoint RUN/best.pt`` scores it)
    and ``best.json`` (its summary plus ``fields``)."""
    write_bytes(run.path("best.pt"), run.path(row["checkpoint"]).read_bytes())
    write_json(run.path("best.json"), {"arch": row["encoding"], "map": row["map"], "macs": row["macs"],
                                       "params": row["params"], "checkpoint": "best.pt", **fields})


# The cost axes a Pareto plot can have: row field -> (axis name, multiplier).
COSTS = {"macs": ("GMACs", 1e-9), "latency_ms": ("latency ms", 1.0)}


def pareto_plot(run: RunDir, rows: Sequence[Mapping], *, marked: Optional[Mapping[str, Mapping]] = None,
                title: str = "", name: str = "pareto.png", archive_name: str = "archive.json",
                cost: str = "macs", rings: Optional[Mapping[str, Sequence[Mapping]]] = None,
                limit: Optional[tuple[str, float]] = None) -> ParetoArchive:
    """``cost`` (GMACs or latency, see :data:`COSTS`) vs mAP of ``rows`` with their front
    (``archive_name`` keeps them), the ``marked`` rows drawn as named points, the ``rings`` groups
    of rows circled, and ``limit`` (label, cost in the rows' units) as a vertical line."""
    if cost not in COSTS:
        raise ValueError(f"pareto_plot: cost must be one of {sorted(COSTS)}, got {cost!r}")
    axis, scale = COSTS[cost]
    archive = ParetoArchive(objectives=("mAP", axis), maximize=("mAP",))
    for r in rows:
        archive.add(r["encoding"], {"mAP": r["map"], axis: r[cost] * scale}, {"name": r.get("name")})
    archive.save(run.path(archive_name))
    archive.plot(run.path(name), title=title,
                 baselines={label: (r[cost] * scale, r["map"]) for label, r in (marked or {}).items()},
                 rings={label: [(r[cost] * scale, r["map"]) for r in group] for label, group in (rings or {}).items()},
                 vlines=None if limit is None else {limit[0]: limit[1] * scale})
    return archive


def format_table(rows: Mapping[str, Mapping], *, first: str = "model", extra: Sequence[tuple[str, str]] = ()) -> str:
    """One line per named summary (:func:`row_summary`): mAP, AP50, GMACs, params, latency, and
    ``extra`` columns given as (header, key)."""
    width = max([10, len(first), *(len(name) for name in rows)])
    head = f"{first:<{width}} {'mAP':>6} {'AP50':>6} {'GMACs':>7} {'params':>8} {'latency ms':>10}"
    lines = [head + "".join(f" {h:>{max(len(h), 8)}}" for h, _ in extra)]
    for name, r in rows.items():
        line = (f"{name:<{width}} {r['map']:>6.3f} {r['ap50']:>6.3f} {r['macs'] / 1e9:>7.3f} {r['params'] / 1e6:>7.3f}M "
                f"{r['latency_ms']:>10.2f}")
        lines.append(line + "".join(f" {r[k]:>{max(len(h), 8)}.3f}" for h, k in extra))
    return "\n".join(lines)
