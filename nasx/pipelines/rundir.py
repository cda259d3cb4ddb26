"""The run directory every pipeline works in: frozen settings, stage markers, the budget clock.

Layout (shared by all pipelines; each adds its own files)::

    config.json        {"pipeline": name, **settings}: written once, compared on every resume
    .lock              held (flock) by the process running the search: one at a time per directory
    clock.json         seconds spent by every run of this directory (see BudgetClock)
    stages/<name>.json a finished stage, what it measured and the clock when it finished; present =
                       skipped on resume
    results.jsonl      one line per evaluated architecture (nasx.search.results)
    retrained.jsonl    one line per retrained detector; retrained-<mode>.jsonl when a pipeline can
                       retrain the same search in several modes (NAS-FCOS's --final-init)
    report.json        the pipeline's report, written last

Settings are a pipeline's config dataclass. Resuming with different settings is an error that
names what changed, except for the settings the pipeline declares resumable (budget, device,
workers, ...: how to run, not what to compute); ``out`` is always resumable, so a moved run
directory, or another spelling of its path, resumes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

from nasx.atomic import read_json, write_json
from nasx.search.clock import BudgetClock

__all__ = ["RunDir", "retrained_log_name", "retrained_path"]

log = logging.getLogger(__name__)


def retrained_log_name(mode: Optional[str] = None) -> str:
    """The retrained log of a final-training mode (None or ``"inherit"``: ``retrained.jsonl``)."""
    return "retrained.jsonl" if mode in (None, "inherit") else f"retrained-{mode}.jsonl"


def retrained_path(root) -> Path:
    """The retrained log of a run directory's current mode (its ``config.json``'s ``final_init``)."""
    root = Path(root)
    config = root / "config.json"
    mode = read_json(config).get("final_init") if config.exists() else None
    return root / retrained_log_name(mode)


def _plain(value):
    return json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value))


def _defaults(config) -> dict:
    """The default of every setting of ``config`` that has one, as plain JSON (nested configs whole)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


def _filled(saved: dict, defaults: dict) -> dict:
    """``saved`` with the settings it lacks taken from ``defaults``, nested dictionaries included."""
    out = dict(saved)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict) and isinstance(out[k], dict):
            out[k] = _filled(out[k], v)
    return out


class RunDir:
    """Args:
        out: the directory (created if missing).
        pipeline: the pipeline's name, recorded so that another pipeline cannot resume the run.
        config: the pipeline's config dataclass; a ``budget_minutes`` field sets the clock's budget.
        resumable: names of settings that may differ on resume.
    """

    def __init__(self, out, *, pipeline: str, config, resumable: Iterable[str] = ()):
        self.root = Path(out)
        self.pipeline, self.config = pipeline, config
        self.resumable = set(resumable) | {"out"}
        self._lock = None  # the open .lock file while this process holds it
        budget = getattr(config, "budget_minutes", None)
        self.clock = BudgetClock(self.root / "clock.json", budget_seconds=60.0 * budget if budget else float("inf"))

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    def settings(self) -> dict:
        """``config.json``'s content: the pipeline's name and its settings as plain JSON."""
        return {"pipeline": self.pipeline, **json.loads(json.dumps(dataclasses.asdict(self.config)))}

    def lock(self) -> None:
        """Hold ``.lock`` while this process runs here (released when it ends, even by SIGKILL);
        a second process on the same directory is a ``ValueError``."""
        import fcntl
        import os

        if self._lock is not None:
            return
        f = open(self.path(".lock"), "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise ValueError(f"{self.root} is in use by another nasx process (pid {holder}); wait for it to end "
                             f"or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    def freeze_config(self) -> None:
        """Take the directory's lock, then write ``config.json`` or check the settings against it
        (a ``ValueError`` naming the changed settings). Call before anything else writes here."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock()
        path = self.path("config.json")
        now = self.settings()
        if path.exists():
            # A setting added to nasx after the run started is missing there: its default is what that
            # run computed with (a new setting's default keeps the old behaviour), so it is no change.
            before = _filled(read_json(path), _defaults(self.config))
            if before.get("pipeline", self.pipeline) != self.pipeline:
                raise ValueError(f"{self.root} holds a {before['pipeline']} run, not {self.pipeline}; choose another --out")
            changed = sorted(k for k in set(now) | set(before)
                             if k not in self.resumable and now.get(k) != before.get(k))
            if changed:
                detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
                raise ValueError(f"{self.root} holds a run started with other settings ({detail}); resume it with "
                                 f"the same settings or choose another --out")
            log.info("resuming %s (%.1f of %.1f minutes spent)", self.root, self.clock.spent() / 60,
                     self.clock.budget_seconds / 60)
        write_json(path, now)

    # -- stages ----------------------------------------------------------------------------------
    def _marker(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def done(self, stage: str) -> Optional[dict]:
        """What a finished stage recorded, or None if it has not finished."""
        marker = self._marker(stage)
        return read_json(marker) if marker.exists() else None

    def mark_done(self, stage: str, info: Optional[dict] = None) -> dict:
        """Record ``stage`` as finished (atomically, with the clock), so a resumed run skips it.
        ``finished_at_seconds``: the run's clock when it finished (stage times for reports)."""
        info = dict(info or {}, finished_at_seconds=self.clock.spent())
        write_json(self._marker(stage), info)
        self.clock.save()
        return info

    def reached(self, stage: str, info: Optional[dict] = None) -> dict:
        """Mark ``stage`` finished unless it already is (a resumed run keeps the first time)."""
        return self.done(stage) or self.mark_done(stage, info)

    def relative(self, path) -> str:
        """``path`` relative to the run directory (stored in files, so a moved run still finds it)."""
        return str(Path(path).relative_to(self.root))
