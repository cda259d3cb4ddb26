"""Files that decide what a resumed run does, written so that a kill or a power cut at any
moment leaves either the old file or the new one, never a torn one: write a temporary file
beside the target, flush it to disk (``fsync``), rename it over the target (atomic on POSIX),
then ``fsync`` the directory so the rename itself survives a power cut.

Every marker, setting, report and checkpoint nasx writes goes through this module.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["json_safe", "write_bytes", "write_text", "write_json", "save_torch", "read_json", "fsync_dir"]


def json_safe(value):
    """JSON has no NaN/inf: write them as null so every file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def fsync_dir(path) -> None:
    """Make a rename inside ``path`` durable (a directory's entries are data too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write leaves the previous file, and no temporary one
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path, data: bytes) -> Path:
    return _replace(path, lambda tmp: tmp.write_bytes(data))


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, data: Any, *, indent: int = 1) -> Path:
    """Standard JSON (NaN and inf become null), then a newline."""
    return write_text(path, json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")


def read_json(path) -> Any:
    """The JSON in ``path``; a file that is not JSON is an error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it was not written by nasx or was edited") from None


def save_torch(obj: Any, path) -> Path:
    """``torch.save`` through a temporary file (checkpoints, search states)."""
    import torch

    return _replace(path, lambda tmp: torch.save(obj, tmp))
