"""ParetoArchive: every evaluated architecture of a multi-objective search, its
Pareto front, NSGA-II survival selection, crash-safe JSON and a publication plot.

Objectives are kept in their natural units and directions (mAP up, latency down);
the archive negates the maximised ones before calling the Pareto ops, which
minimise. Ranks, crowding and hypervolume come from :mod:`nasx.ops`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from nasx import ops
from nasx.atomic import write_json

__all__ = ["ArchiveEntry", "ParetoArchive"]

_FORMAT = "nasx.ParetoArchive/1"


@dataclass(frozen=True)
class ArchiveEntry:
    """One evaluated architecture: its encoding (any JSON value), objectives, metadata."""

    encoding: Any
    objectives: tuple[float, ...]
    metadata: dict = field(default_factory=dict)


class ParetoArchive:
    """Evaluated architectures and their Pareto front.

    Args:
        objectives: names of the objectives, e.g. ``("mAP", "latency_ms")``.
        maximize: the names (a subset of ``objectives``) that are better when larger.

    Example::

        archive = ParetoArchive(objectives=("mAP", "latency_ms"), maximize=("mAP",))
        archive.add("basicblock_54_1211-211-1111-12111", {"mAP": 36.2, "latency_ms": 31.0})
        archive.front()                      # the non-dominated entries
        survivors = archive.select(50)       # NSGA-II: by rank, then crowding
        archive.save("run/archive.json"); archive.plot("run/front.png", baselines={"RetinaNet": (45.0, 34.0)})
    """

    def __init__(self, objectives: Sequence[str], *, maximize: Sequence[str] = ()) -> None:
        names = tuple(str(o) for o in objectives)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"ParetoArchive: expected one or more distinct objective names, got {list(names)}")
        unknown = [m for m in maximize if m not in names]
        if unknown:
            raise ValueError(f"ParetoArchive: maximize names {unknown} are not objectives {list(names)}")
        self.objective_names = names
        self.maximize = tuple(n in set(maximize) for n in names)
        self._entries: list[ArchiveEntry] = []

    # ---- contents -----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> ArchiveEntry:
        return self._entries[i]

    @property
    def entries(self) -> list[ArchiveEntry]:
        return list(self._entries)

    def add(self, encoding: Any, objectives: Mapping[str, float] | Sequence[float], metadata: Mapping | None = None) -> int:
        """Adds one evaluated architecture; returns its index.

        ``objectives`` is a mapping by name or a sequence in ``self.objective_names``
        order. NaN objectives are rejected (the Pareto ops have no order for them);
        the encoding and metadata must be JSON-serialisable, so that ``save`` cannot
        fail halfway later.
        """
        if isinstance(objectives, Mapping):
            missing = [n for n in self.objective_names if n not in objectives]
            if missing:
                raise ValueError(f"ParetoArchive.add: objectives lack {missing}; expected {list(self.objective_names)}")
            values = tuple(float(objectives[n]) for n in self.objective_names)
        else:
            values = tuple(float(v) for v in objectives)
            if len(values) != len(self.objective_names):
                raise ValueError(
                    f"ParetoArchive.add: expected {len(self.objective_names)} objectives "
                    f"{list(self.objective_names)}, got {len(values)}"
                )
        if any(math.isnan(v) for v in values):
            raise ValueError(f"ParetoArchive.add: objectives contain NaN: {dict(zip(self.objective_names, values))}")
        meta = dict(metadata or {})
        try:
            json.dumps([encoding, meta], allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"ParetoArchive.add: encoding and metadata must be JSON-serialisable ({exc})") from exc
        self._entries.append(ArchiveEntry(encoding, values, meta))
        return len(self._entries) - 1

    def objectives(self, *, minimised: bool = False) -> torch.Tensor:
        """Tensor[N, M] float64 of all objectives; ``minimised=True`` negates the maximised ones."""
        x = torch.tensor([e.objectives for e in self._entries], dtype=torch.float64).reshape(-1, len(self.objective_names))
        if minimised:
            x = x * self._signs()
        return x

    def _signs(self) -> torch.Tensor:
        return torch.tensor([-1.0 if m else 1.0 for m in self.maximize], dtype=torch.float64)

    # ---- Pareto quantities ----------------------------------------------------

    def ranks(self) -> torch.Tensor:
        """Tensor[N] int64: Pareto rank of every entry (0 = on the front)."""
        return ops.non_dominated_sort(self.objectives(minimised=True))

    def front_indices(self) -> list[int]:
        """Indices of the non-dominated entries, by the first objective from best to worst."""
        ranks = self.ranks()
        idx = [i for i in range(len(self)) if int(ranks[i]) == 0]
        first = self.objectives(minimised=True)[:, 0]
        return sorted(idx, key=lambda i: (float(first[i]), i))

    def front(self) -> list[ArchiveEntry]:
        """The non-dominated entries (see :meth:`front_indices`)."""
        return [self._entries[i] for i in self.front_indices()]

    def crowding(self) -> torch.Tensor:
        """Tensor[N] float64: NSGA-II crowding distance of every entry within its front."""
        x = self.objectives(minimised=True)
        return ops.crowding_distance(x, ops.non_dominated_sort(x))

    def hypervolume(self, reference: Mapping[str, float] | Sequence[float]) -> float:
        """Hypervolume of the archive against ``reference`` (natural units: e.g. the worst
        acceptable mAP and latency). Entries not better than it in every objective add nothing."""
        if isinstance(reference, Mapping):
            ref = [float(reference[n]) for n in self.objective_names]
        else:
            ref = [float(v) for v in reference]
        if len(ref) != len(self.objective_names):
            raise ValueError(f"ParetoArchive.hypervolume: expected {len(self.objective_names)} reference values, got {len(ref)}")
        return ops.hypervolume(self.objectives(minimised=True), torch.tensor(ref, dtype=torch.float64) * self._signs())

    def select(self, k: int) -> list[int]:
        """NSGA-II survival: indices of ``k`` entries, whole fronts by rank, the last
        front cut by decreasing crowding distance (ties: lower index first)."""
        if k < 0:
            raise ValueError(f"ParetoArchive.select: expected k >= 0, got {k}")
        x = self.objectives(minimised=True)
        ranks = ops.non_dominated_sort(x)
        cd = ops.crowding_distance(x, ranks)
        order = sorted(range(len(self)), key=lambda i: (int(ranks[i]), -float(cd[i]), i))
        return order[:k]

    # ---- persistence ----------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT,
            "objectives": list(self.objective_names),
            "maximize": [n for n, m in zip(self.objective_names, self.maximize) if m],
            "entries": [{"encoding": e.encoding, "objectives": list(e.objectives), "metadata": e.metadata} for e in self._entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "ParetoArchive":
        if data.get("format") != _FORMAT:
            raise ValueError(f"ParetoArchive: expected format {_FORMAT!r}, got {data.get('format')!r}")
        archive = cls(data["objectives"], maximize=data.get("maximize", ()))
        for e in data["entries"]:
            archive.add(e["encoding"], e["objectives"], e.get("metadata"))
        return archive

    def save(self, path: str | os.PathLike) -> Path:
        """Writes JSON atomically (:mod:`nasx.atomic`): a crash mid-write leaves the previous file intact."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ParetoArchive":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- plot -----------------------------------------------------------------

    def plot(
        self,
        path: str | os.PathLike,
        *,
        x: str | None = None,
        y: str | None = None,
        baselines: Mapping[str, Sequence[float]] | None = None,
        title: str | None = None,
        annotate_front: bool = False,
        rings: Mapping[str, Sequence[Sequence[float]]] | None = None,
        vlines: Mapping[str, float] | None = None,
        dpi: int = 200,
    ) -> Path:
        """Saves a PNG of two objectives: every entry, the front of those two
        objectives highlighted and joined as the step line that bounds the dominated
        region, and optional named reference points (e.g. ``{"RetinaNet": (45.0, 34.0)}``
        in (x, y) order). ``rings``: named groups of (x, y) points circled in red (e.g.
        the entries a baseline dominates); ``vlines``: named x values drawn as dashed
        vertical lines (e.g. a cost limit). Defaults: x = the second objective, y = the first."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = self.objective_names
        if len(names) < 2:
            raise ValueError("ParetoArchive.plot: needs at least two objectives")
        x = x if x is not None else names[1]
        y = y if y is not None else names[0]
        for name in (x, y):
            if name not in names:
                raise ValueError(f"ParetoArchive.plot: {name!r} is not an objective {list(names)}")
        jx, jy = names.index(x), names.index(y)
        values = self.objectives()
        xs, ys = values[:, jx], values[:, jy]
        pair = self.objectives(minimised=True)[:, [jx, jy]]
        on_front = (ops.non_dominated_sort(pair) == 0) if len(self) else torch.zeros(0, dtype=torch.bool)
        front = sorted((i for i in range(len(self)) if on_front[i]), key=lambda i: (float(pair[i, 0]), float(pair[i, 1])))

        fig, ax = plt.subplots(figsize=(5.5, 4.0), constrained_layout=True)
        rest = ~on_front
        ax.scatter(xs[rest], ys[rest], s=14, color="0.72", edgecolors="none", label="evaluated", zorder=2)
        if front:
            fx, fy = xs[front].tolist(), ys[front].tolist()
            # The attained boundary: from each front point along x to the next, then to its y.
            ax.plot(fx, fy, drawstyle="steps-post", color="tab:blue", linewidth=1.6, zorder=3)
            ax.scatter(fx, fy, s=30, color="tab:blue", edgecolors="white", linewidths=0.6, zorder=4,
                       label=f"Pareto front ({len(front)})")
            if annotate_front:
                for i in front:
                    ax.annotate(str(i), (float(xs[i]), float(ys[i])), textcoords="offset points", xytext=(4, 4), fontsize=7)
        markers = ["*", "D", "s", "^", "P", "X"]
        for k, (label, point) in enumerate((baselines or {}).items()):
            ax.scatter([point[0]], [point[1]], marker=markers[k % len(markers)], s=90, color=f"C{(k + 1) % 10}",
                       edgecolors="black", linewidths=0.6, zorder=5, label=label)
        for label, points in (rings or {}).items():
            if len(points):
                px, py = zip(*((float(p[0]), float(p[1])) for p in points))
                ax.scatter(px, py, s=110, facecolors="none", edgecolors="tab:red", linewidths=1.2, zorder=6,
                           label=f"{label} ({len(points)})")
        for k, (label, value) in enumerate((vlines or {}).items()):
            ax.axvline(float(value), color="0.35", linestyle=("--", ":", "-.")[k % 3], linewidth=1.0, zorder=1,
                       label=label)
        arrow = {True: "higher is better", False: "lower is better"}
        ax.set_xlabel(f"{x} ({arrow[self.maximize[jx]]})")
        ax.set_ylabel(f"{y} ({arrow[self.maximize[jy]]})")
        if title:
            ax.set_title(title)
        ax.grid(True, color="0.92", linewidth=0.8, zorder=0)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(frameon=False, fontsize=8, loc="best")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return path
