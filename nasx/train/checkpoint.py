"""Checkpoints written atomically (through :mod:`nasx.atomic`): a run killed while saving keeps
its previous checkpoint intact."""
from __future__ import annotations

from pathlib import Path

import torch

from nasx.atomic import save_torch

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the path and the reason."""


def save_checkpoint(state: dict, path) -> Path:
    return save_torch(state, path)


def load_checkpoint(path, *, map_location="cpu", required_keys=("model",)) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file: say which, not a pickle traceback
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or any(k not in state for k in required_keys):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path}: expected keys {list(required_keys)}, found {have}")
    return state
