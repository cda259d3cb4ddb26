"""The settings every search pipeline has: where the data and the run directory are, the budget,
and how candidates run. A pipeline's config dataclass inherits :class:`RunSettings` and adds what
it computes; :data:`RESUMABLE` are the settings a resumed run may change (how to run, not what to
compute)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from nasx.search.workers import BACKENDS

__all__ = ["RESUMABLE", "RunSettings", "opt"]

RESUMABLE = frozenset({"budget_minutes", "device", "workers", "backend", "ray_address", "progress", "tensorboard",
                       "data"})


def opt(help: str, **more) -> dict:
    """A config field's metadata: its help text and flag settings (see :mod:`.config_flags`)."""
    return {"help": help, **more}


def final_sweeps_field():
    """The ``final_sweeps`` setting of the searches that compare retrained detectors' latencies
    (:func:`nasx.pipelines.retrain.time_together`)."""
    return field(default=30, metadata=opt(
        "sweeps timing the retrained detectors against each other (the latencies the report compares)"))


@dataclass
class RunSettings:
    data: str = field(metadata=opt("dataset root in COCO layout (nasx data synth writes one)", metavar="DIR"))
    out: str = field(metadata=opt("run directory; an existing one is resumed", metavar="RUN"))
    budget_minutes: float = field(default=15.0, metadata=opt("wall-clock budget of the whole run", metavar="M"))
    device: str = field(default="cpu", metadata=opt("torch device of every stage (cpu, cuda, cuda:1)"))
    workers: int = field(default=1, metadata=opt("candidates evaluated at once", metavar="W"))
    backend: str = field(default="auto", metadata=opt("where candidates run: auto = inline for one worker, "
                                                      "processes otherwise", choices=BACKENDS))
    ray_address: Optional[str] = field(default=None, metadata=opt(
        "with --backend ray: the cluster to join (host:port or auto); none starts a local one", metavar="ADDR"))
    progress: bool = field(default=True, metadata=opt("no progress output", flag="--quiet", negate=True))
    tensorboard: bool = field(default=True, metadata=opt("write TensorBoard event files to RUN/tb "
                                                         "(tensorboard --logdir RUN)"))

    def __post_init__(self):
        if self.budget_minutes <= 0:
            raise ValueError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
