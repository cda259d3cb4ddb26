"""``results.jsonl``: one JSON line per evaluated architecture, the ground truth a search resumes from.

A line is written whole with one ``write`` and flushed to disk (``fsync``) before the search goes
on, so a search killed at any moment — SIGKILL included — loses at most the evaluation that was
running. A last line cut short by the kill is not valid JSON; :meth:`ResultsLog.open` drops it
(with a warning naming the file and the line) and truncates the file back to the last complete
record, so the next append starts on a fresh line. A bad line anywhere else is corruption, not a
kill, and raises an error that names the file and the line.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterator, Optional

from nasx.atomic import json_safe

__all__ = ["ResultsLog", "read_records"]


def read_records(path) -> list[dict]:
    """The records of a JSON-lines file, read only (a run may be writing it): a line that is not a
    record — the last one cut short by a kill — is skipped. A missing file has none."""
    path = Path(path)
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


class ResultsLog:
    """An append-only JSON-lines file of evaluation records, indexed by a key field.

    Args:
        path: the file (created with its directory if missing).
        key: the field that identifies a record (the architecture's encoding); a key seen again
            is served from the log instead of being evaluated twice.
    """

    def __init__(self, path, key: str = "encoding"):
        self.path = Path(path)
        self.key = key
        self.records: list[dict] = []
        self._by_key: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        good_bytes = 0
        for i, raw in enumerate(lines):
            last = i == len(lines) - 1
            if not raw.strip():
                good_bytes += len(raw) + (0 if last else 1)
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict) or self.key not in record:
                    raise ValueError(f"expected an object with a {self.key!r} field")
            except ValueError as e:
                if last:  # a write cut short by a kill: drop it, keep everything before
                    warnings.warn(f"{self.path}: line {i + 1} is incomplete ({e}); dropping it "
                                  "(the search was interrupted while writing it)")
                    break
                raise ValueError(f"{self.path}: line {i + 1} is not a valid record ({e}); "
                                 "the file is corrupt — fix or remove that line") from None
            self._add(record)
            good_bytes += len(raw) + (0 if last else 1)
        if good_bytes < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_bytes)
        elif data and not data.endswith(b"\n"):
            with open(self.path, "ab") as f:  # a complete last line without its newline
                f.write(b"\n")

    def _add(self, record: dict) -> None:
        self.records.append(record)
        self._by_key[str(record[self.key])] = record

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __contains__(self, key) -> bool:
        return str(key) in self._by_key

    def get(self, key) -> Optional[dict]:
        return self._by_key.get(str(key))

    def append(self, record: dict) -> dict:
        """Write ``record`` as one line and make it durable before returning it."""
        if self.key not in record:
            raise ValueError(f"ResultsLog.append: the record has no {self.key!r} field: {sorted(record)}")
        record = json_safe(dict(record))
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._add(record)
        return record
