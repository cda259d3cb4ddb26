"""A small progress bar for long work (training, searches, caching) on stderr.

On a terminal it redraws one line; in a log file (CI, nohup) it prints a line every
``log_every`` seconds instead, so logs stay readable.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress"]


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``Progress(total, desc)``; ``update(n=1, **stats)`` after each unit of work; ``close()``.

    Shows done/total, percent, rate (``unit``/s), elapsed and remaining time, and the latest
    ``stats`` (floats printed with 4 significant digits). ``enabled=False`` makes it silent.
    """

    def __init__(self, total: Optional[int], desc: str = "", *, unit: str = "it", initial: int = 0,
                 enabled: bool = True, stream: Optional[TextIO] = None, log_every: float = 10.0):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self._start_done = initial
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self.stats: dict = {}
        self._t0 = self._last = time.perf_counter()
        self._last_print = -1e9
        self._printed_done: Optional[int] = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1, **stats) -> None:
        self.done += n
        self.stats.update(stats)
        now = time.perf_counter()
        interval = 0.2 if self.tty else self.log_every
        if now - self._last_print >= interval or (self.total is not None and self.done >= self.total):
            self._print(now)

    def line(self, now: Optional[float] = None) -> str:
        now = time.perf_counter() if now is None else now
        elapsed = now - self._t0
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        parts = [self.desc] if self.desc else []
        if self.total:
            pct = 100.0 * self.done / self.total
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            parts.append(f"{self.done}/{self.total} ({pct:3.0f}%)")
            eta = _fmt_time(left) if left == left else "?"
            parts.append(f"[{_fmt_time(elapsed)}<{eta}, {rate:.3g} {self.unit}/s]")
        else:
            parts.append(f"{self.done} [{_fmt_time(elapsed)}, {rate:.3g} {self.unit}/s]")
        parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.stats.items()]
        return " ".join(parts)

    def _print(self, now: float) -> None:
        if not self.enabled:
            return
        self._last_print, self._printed_done = now, self.done
        if self.tty:
            self.stream.write("\r\033[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            if self.tty or self._printed_done != self.done:  # a log file already has the final line
                self._print(time.perf_counter())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()
        self.enabled = False
