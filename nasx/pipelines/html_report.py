"""``report.html``: one self-contained static page per run directory, for a person to read.

It works offline: the plots are inlined as base64 data URIs, the CSS and the small script that
sorts tables are inline, and nothing is fetched. It is built from the run directory's files
only, for any pipeline, showing what is there and skipping what is not (a running search with
only ``config.json`` and ``results.jsonl`` renders too):

- the title: pipeline and run directory name;
- headline numbers (``report.json``: searched, failed, strategy, rounds, Kendall tau, proxy
  speed-up, minutes; without it, counts from ``results.jsonl``);
- baseline vs best (``report.json``'s ``baseline`` and ``best``);
- every ``*.png`` at the top of the run directory (``pareto.png``, ...);
- every evaluated architecture (``results.jsonl``, table ``id="archs"``, one row per line,
  failed ones marked with their error), sortable by clicking a header;
- the retrained detectors (``retrained.jsonl``, or the current mode's ``retrained-<mode>.jsonl``, else
  ``report.json``'s ``retrained``);
- the minutes per stage (differences of the ``stages/*.json`` markers' ``finished_at_seconds``);
- the settings (``config.json``) and the commands that reproduce the run (with the pipeline's
  own flags when ``nasx search`` knows it, else ``--field-name`` per scalar setting).
"""
from __future__ import annotations

import base64
import html
import json
import shlex
from pathlib import Path
from typing import Iterable, Optional, Sequence

from nasx.atomic import write_text
from nasx.pipelines.rundir import retrained_path
from nasx.search.results import read_records

__all__ = ["write_html_report"]

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eef2f7;white-space:nowrap}th.sort{cursor:pointer}th.sort:after{content:" \\2195";color:#999}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.mono,pre{font:12px/1.3 ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}
td.mono{max-width:640px}tr.failed{background:#fde8e8}.err{color:#b00020;font-weight:bold}
.kv td:first-child{font-weight:bold}img{max-width:min(100%,820px);border:1px solid #ddd}
pre{background:#f5f5f5;padding:8px;border:1px solid #ddd}
"""

_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, i) {
    th.classList.add("sort");
    th.addEventListener("click", function () {
      var body = t.tBodies[0], rows = Array.from(body.rows), asc = th.dataset.dir !== "asc";
      var key = function (r) { var c = r.cells[i], v = c.dataset.v, s = c.textContent.trim();
        return v !== undefined && v !== "" && !isNaN(v) ? parseFloat(v) : (s === "" ? null : s); };
      rows.sort(function (a, b) { var x = key(a), y = key(b);  // empty cells last either way
        if (x === null || y === null) return (x === null) - (y === null);
        var d = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y), undefined, {numeric: true});
        return asc ? d : -d; });
      th.dataset.dir = asc ? "asc" : "desc";
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

_e = html.escape


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(v, scale: float = 1.0, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None else str(v)
    return f"{v / scale:.{digits}f}" if scale != 1.0 or isinstance(v, float) else str(v)


def _cell(v, scale: float = 1.0, digits: int = 3) -> str:
    """A table cell; a number is right-aligned and carries its value for sorting."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num" data-v="{v / scale!r}">{_e(_fmt(v, scale, digits))}</td>'
    return f"<td>{_e(_fmt(v))}</td>"


def _table(head: Sequence[str], rows: Iterable[str], *, id: str = "", sortable: bool = False, cls: str = "") -> str:
    classes = " ".join(c for c in (cls, "sortable" if sortable else "") if c)
    attrs = (f' id="{_e(id)}"' if id else "") + (f' class="{classes}"' if classes else "")
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table{attrs}><thead><tr>{th}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _kv_table(items: dict, head: Sequence[str] = ("setting", "value")) -> str:
    def value(v) -> str:
        return f'<td class="mono">{_e(json.dumps(v))}</td>' if isinstance(v, (dict, list)) else _cell(v)

    rows = (f"<tr><td>{_e(str(k))}</td>{value(v)}</tr>" for k, v in items.items())
    return _table(head, rows, cls="kv")


def _headline(report: Optional[dict], results: list[dict]) -> dict:
    if report is None:
        return {"status": "running (no report.json yet)", "evaluated": len(results),
                "failed": sum(1 for r in results if r.get("status") != "ok")}
    out = {k: report[k] for k in ("searched", "failed", "strategy", "rounds", "stopped") if k in report}
    if report.get("kendall_tau") is not None:
        n = report.get("kendall_tau_n", "?")
        out["Kendall tau (proxy reward vs mAP)"] = f"{report['kendall_tau']:.3f} over {n}"
    if report.get("proxy_speedup") is not None:
        out["proxy speed-up"] = f"{report['proxy_speedup']:.1f}x"
    if report.get("seconds") is not None:
        out["minutes"] = f"{report['seconds'] / 60:.1f}"
    return out


def _compare(report: dict) -> str:
    base, best = report["baseline"], report["best"]
    metrics = [("mAP", "map", 1, 4), ("AP50", "ap50", 1, 4), ("GMACs", "macs", 1e9, 3),
               ("params (M)", "params", 1e6, 3), ("latency ms", "latency_ms", 1, 2),
               ("proxy reward", "proxy_reward", 1, 4)]
    rows = [f"<tr><td>{_e(h)}</td>{_cell(base.get(k), s, d)}{_cell(best.get(k), s, d)}</tr>" for h, k, s, d in metrics]
    rows.append(f'<tr><td>architecture</td><td class="mono">{_e(str(base.get("arch", "")))}</td>'
                f'<td class="mono">{_e(str(best.get("arch", "")))}</td></tr>')
    return _table(("", "baseline", "best"), rows, cls="kv")


def _archs(results: list[dict]) -> str:
    rows = []
    for i, r in enumerate(results, 1):
        failed = r.get("status") != "ok"
        err = f'<div class="err">{_e(str(r.get("error") or "failed"))}</div>' if failed else ""
        mark = ' class="failed"' if failed else ""
        rows.append(f'<tr{mark}>{_cell(i)}{_cell(r.get("source"))}{_cell(r.get("round"))}'
                    f'{_cell(r.get("status"))}{_cell(r.get("reward"), digits=4)}{_cell(r.get("params"), 1e6)}'
                    f'{_cell(r.get("macs"), 1e9)}{_cell(r.get("latency_ms"), digits=2)}'
                    f'{_cell(r.get("seconds"), digits=1)}'
                    f'<td class="mono">{_e(str(r.get("encoding", "")))}{err}</td></tr>')
    head = ("#", "source", "round", "status", "reward", "params (M)", "GMACs", "latency ms", "seconds", "encoding")
    return _table(head, rows, id="archs", sortable=True)


def _retrained(rows: list[dict]) -> str:
    body = [f'<tr>{_cell(r.get("name"))}{_cell(r.get("map"), digits=4)}'
            f'{_cell((r.get("metrics") or {}).get("AP50", r.get("ap50")), digits=4)}{_cell(r.get("macs"), 1e9)}'
            f'{_cell(r.get("params"), 1e6)}{_cell(r.get("latency_ms"), digits=2)}'
            f'{_cell(r.get("reward", r.get("proxy_reward")), digits=4)}</tr>' for r in rows]
    head = ("name", "mAP", "AP50", "GMACs", "params (M)", "latency ms", "proxy reward")
    return _table(head, body, id="retrained", sortable=True)


def _stages(root: Path) -> str:
    marks = []
    for p in (root / "stages").glob("*.json"):
        at = (_read_json(p) or {}).get("finished_at_seconds")
        if isinstance(at, (int, float)):
            marks.append((at, p.stem))
    rows, before = [], 0.0
    for at, name in sorted(marks):
        rows.append(f"<tr>{_cell(name)}{_cell((at - before) / 60, digits=2)}{_cell(at / 60, digits=2)}</tr>")
        before = at
    return _table(("stage", "minutes", "finished at (minutes)"), rows) if rows else ""


def _flatten(settings: dict, prefix: str = "") -> dict:
    """``{"proxy": {"steps": 30}}`` -> ``{"proxy__steps": 30}`` (argparse dests of nested settings)."""
    out = {}
    for k, v in settings.items():
        out.update(_flatten(v, f"{prefix}{k}__") if isinstance(v, dict) else {prefix + k: v})
    return out


def _pipeline_actions(pipeline: str) -> dict:
    """dest -> argparse action of ``nasx search <pipeline>``'s flags; {} for an unknown pipeline."""
    import argparse

    from nasx.pipelines.config_flags import add_config_arguments
    from nasx.pipelines import PIPELINES, pipeline as load

    if pipeline not in PIPELINES:
        return {}
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, load(pipeline)[0])
    return {a.dest: a for a in parser._actions if a.option_strings}


def _flag(dest: str, value, actions: dict) -> list[str]:
    """The flag(s) that set ``dest`` to ``value``: the pipeline's own flag when known (bools as
    switches, lists as several values), else ``--field-name`` for a scalar (nested
    ``proxy__steps``: ``--proxy-steps``), ``--quiet`` for ``progress: false``, nothing for other bools."""
    action = actions.get(dest)
    if action is not None:
        if isinstance(action.const, bool) and isinstance(action.default, bool):  # store_true / store_false
            return [action.option_strings[0]] if value == action.const else []
        values = value if isinstance(value, list) else [value]
        return [action.option_strings[0], *map(str, values)] if value is not None else []
    if dest == "progress":
        return ["--quiet"] if value is False else []
    if value is None or isinstance(value, (bool, list)):
        return []
    return ["--" + dest.replace("__", "-").replace("_", "-"), str(value)]


def _reproduce(root: Path, config: dict) -> str:
    """``nasx search <pipeline>`` with --data, --out, --budget-minutes, then every other setting of
    ``config.json`` (see :func:`_flag`), and ``nasx eval`` of ``best.pt`` when there is one."""
    pipeline = str(config.get("pipeline", "PIPELINE"))
    try:
        actions = _pipeline_actions(pipeline)
    except Exception:  # a pipeline that cannot be imported here: fall back to the field names
        actions = {}
    data, out = str(config.get("data", "DATA")), str(config.get("out", root))
    cmd = ["nasx", "search", pipeline, "--data", data, "--out", out]
    for dest, value in _flatten({k: v for k, v in config.items() if k not in ("pipeline", "data", "out")}).items():
        cmd += _flag(dest, value, actions)
    lines = [shlex.join(cmd)]
    if (root / "best.pt").exists():
        lines.append(shlex.join(["nasx", "eval", "--data", data, "--checkpoint", f"{out}/best.pt"]))
    return "<pre>" + _e("\n".join(lines)) + "</pre>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = _e(path.name)
    return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>'


def write_html_report(run_dir) -> Path:
    """Write ``run_dir/report.html`` (atomically) from the run directory's files; returns its path."""
    root = Path(run_dir)
    config = _read_json(root / "config.json") or {}
    report = _read_json(root / "report.json")
    report = report if isinstance(report, dict) else None
    results = read_records(root / "results.jsonl")
    retrained = read_records(retrained_path(root)) or list((report or {}).get("retrained") or [])
    pipeline = str(config.get("pipeline", "search"))
    title = f"{pipeline}: {root.resolve().name}"
    parts = [f"<h1>{_e(title)}</h1>", "<h2>Summary</h2>", _kv_table(_headline(report, results), ("", "value"))]
    if report and isinstance(report.get("baseline"), dict) and isinstance(report.get("best"), dict):
        parts += ["<h2>Baseline vs best</h2>", _compare(report)]
    images = sorted(root.glob("*.png"))
    if images:
        parts += ["<h2>Pareto plots</h2>"] + [_image(p) for p in images]
    parts += [f"<h2>Evaluated architectures ({len(results)})</h2><p>Click a header to sort.</p>", _archs(results)]
    if retrained:
        tau = (f" &mdash; Kendall tau {report['kendall_tau']:.3f} over {_e(str(report.get('kendall_tau_n', '?')))}"
               if report and report.get("kendall_tau") is not None else "")
        parts += [f"<h2>Retrained on images{tau}</h2>", _retrained(retrained)]
    stages = _stages(root)
    if stages:
        parts += ["<h2>Time per stage</h2>", stages]
    if config:
        settings = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
        parts += ["<h2>Settings</h2>", _kv_table(settings), "<h2>Reproduce</h2>", _reproduce(root, config)]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + f"\n<script>{_JS}</script>\n</body></html>\n")
    return write_text(root / "report.html", page)
