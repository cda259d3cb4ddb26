"""SM-NAS's search strategy: evolution on the Pareto front with partial-order pruning (POP).

SM-NAS (Yao et al. 2020) "first generate[s] some initial models with a random combination of
modules", then an evolutionary algorithm "mutate[s] the best architecture on the Pareto front",
and in stage two prunes candidates with POP (Li et al. 2019, "deeper and wider models are
better"). The paper leaves the rest open; nasx's choices, after vega's BackboneNas / AutoLane:

- random architectures until ``min_random`` are evaluated OK, then each child is a fresh sample
  with probability ``random_ratio``, else ``space.mutate(parent)``;
- the parent comes from the front (rank 0 of all OK records, :class:`ParetoArchive`) by a binary
  tournament on NSGA-II crowding distance: two members drawn uniformly, the less crowded wins
  (ties: the first drawn). A front of one or two is thus drawn uniformly, a large one leans to its
  extremes and its gaps;
- nothing told (OK or failed) or already in the batch is proposed again (keys:
  ``arch_key(space.encode(arch))``); after ``max_tries`` draws per asked architecture ``ask``
  returns fewer (an exhausted space: the loop then counts the round as stale);
- POP (round2-spec §1.4): a candidate is dropped, and a replacement drawn, when
  :func:`nasx.ops.partial_order_prune` says it cannot reach the front, from ``space.descriptor``
  and ``cost(arch)`` of the candidates against the evaluated architectures' descriptors,
  ``record[cost_objective]`` and ``record[accuracy]``. POP assumes an order it cannot check, so
  with ``audit_every = k`` every k-th pruned candidate is proposed anyway; once told, those that
  land on the front are POP's errors (:meth:`ParetoEvolution.audit_report`).

The whole state (generator, population, pruned, audit) is a dict of plain values (JSON- and
torch.save-safe); restored, the next ``ask`` returns what it returned when the state was taken.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Optional, Sequence

import torch

from nasx import ops
from nasx.search.archive import ParetoArchive
from nasx.search.strategy import Strategy, scored
from nasx.spaces.space import arch_key

__all__ = ["ParetoEvolution"]


def _finite(x) -> Optional[float]:
    """``x`` as a float (numpy and 0-dim torch values too), or None when missing, NaN or infinite."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if x is not None and not isinstance(x, (bool, str)) and math.isfinite(v) else None


class ParetoEvolution(Strategy):
    """Args:
        space: a :class:`nasx.spaces.space.Space` (``sample``, ``mutate``, ``descriptor`` for POP).
        objectives: the record fields of the front, e.g. ``("mAP", "latency_ms")``.
        maximize: those of ``objectives`` that are better larger; the others are minimised.
        seed: the one generator (``random.Random``) behind every draw.
        min_random: architectures drawn at random until this many are evaluated OK.
        random_ratio: afterwards, the share of children that are fresh random samples.
        cost: ``arch -> float``, the cost of an untrained architecture (e.g. GMACs on the meta
            device), in the units of ``record[cost_objective]``; POP is off without it.
        accuracy: the maximised objective POP bounds (default: the first of ``maximize``).
        cost_objective: the record field that is a trained architecture's cost (default: the
            first minimised objective).
        prune: POP on or off.
        audit_every: every k-th pruned candidate is proposed anyway, to measure POP's error
            (0: none).
        max_tries: draws per asked architecture before ``ask`` gives up on finding new ones.
        hv_reference: the hypervolume's reference point in natural units, one value per
            objective. Without it each round's reference is the worst value seen plus 10 % of the
            seen range (of |worst|, or 1, when the range is 0) — so values of different rounds
            are then not comparable.

    Round statistics (``tell``): ``front_size``, ``hypervolume``, ``evaluated`` (OK so far),
    ``failed`` (this round), and from the round's ``ask``: ``proposed`` (distinct new candidates
    drawn and checked), ``pruned``, ``audited``.
    """

    name = "evolution"

    def __init__(self, space, *, objectives: Sequence[str], maximize: Sequence[str] = (), seed: int = 0,
                 min_random: int = 10, random_ratio: float = 0.2, cost: Optional[Callable[[Mapping], float]] = None,
                 accuracy: Optional[str] = None, cost_objective: Optional[str] = None, prune: bool = True,
                 audit_every: int = 0, max_tries: int = 50, hv_reference: Optional[Mapping[str, float]] = None):
        names = tuple(objectives) if not isinstance(objectives, str) else (objectives,)
        if not names or len(set(names)) != len(names) or not all(isinstance(o, str) for o in names):
            raise ValueError(f"ParetoEvolution: objectives must be one or more distinct field names, "
                             f"got {objectives!r}")
        maximize = (maximize,) if isinstance(maximize, str) else tuple(maximize)
        if not set(maximize) <= set(names):
            raise ValueError(f"ParetoEvolution: maximize {sorted(set(maximize) - set(names))} are not objectives "
                             f"{list(names)}")
        minimised = [o for o in names if o not in maximize]
        accuracy = accuracy if accuracy is not None else (maximize[0] if maximize else None)
        cost_objective = cost_objective if cost_objective is not None else (minimised[0] if minimised else None)
        if accuracy is not None and accuracy not in maximize:
            raise ValueError(f"ParetoEvolution: accuracy must be one of maximize {list(maximize)}, got {accuracy!r}")
        if cost is not None and not callable(cost):
            raise ValueError(f"ParetoEvolution: cost must be a callable arch -> float, got {type(cost).__name__}")
        if prune and cost is not None and (accuracy is None or cost_objective is None):
            raise ValueError(f"ParetoEvolution: POP needs accuracy (a maximised objective) and cost_objective (a "
                             f"record field), got accuracy={accuracy!r}, cost_objective={cost_objective!r}")
        checks = [("min_random", min_random, min_random >= 1, ">= 1"), ("max_tries", max_tries, max_tries >= 1, ">= 1"),
                  ("random_ratio", random_ratio, 0.0 <= random_ratio <= 1.0, "in [0, 1]"),
                  ("audit_every", audit_every, audit_every >= 0, ">= 0 (0: no audit)")]
        for arg, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"ParetoEvolution: {arg} must be {expected}, got {value!r}")
        if hv_reference is not None and set(hv_reference) != set(names):
            raise ValueError(f"ParetoEvolution: hv_reference must give exactly the objectives {list(names)}, "
                             f"got {sorted(hv_reference)}")
        super().__init__(space, objective=accuracy or names[0])
        self.objectives, self.maximize = names, maximize
        self.min_random, self.random_ratio = int(min_random), float(random_ratio)
        self.cost, self.accuracy, self.cost_objective = cost, accuracy, cost_objective
        self.prune, self.audit_every, self.max_tries = bool(prune), int(audit_every), int(max_tries)
        self.hv_reference = None if hv_reference is None else {k: float(v) for k, v in hv_reference.items()}
        self.rng = random.Random(int(seed))
        self.population: list[dict] = []    # OK records: encoding, values, acc, cost, descriptor
        self.pruned: list[dict] = []        # encoding, descriptor, cost, audited
        self._seen: dict[str, None] = {}    # keys of every architecture told (ordered set)
        self._audit = {"pending": [], "audited": 0, "evaluated": 0, "would_enter_front": 0}
        self._round = {"proposed": 0, "pruned": 0, "audited": 0}

    @property
    def pop_active(self) -> bool:
        return self.prune and self.cost is not None

    def archive(self) -> ParetoArchive:
        """The OK records so far as a :class:`ParetoArchive` (front, crowding, hypervolume, plot)."""
        archive = ParetoArchive(self.objectives, maximize=self.maximize)
        for entry in self.population:
            archive.add(entry["encoding"], entry["values"])
        return archive

    def front(self) -> list[dict]:
        """The population's Pareto front (entries of :attr:`population`), by the first objective."""
        return [self.population[i] for i in self.archive().front_indices()]

    def audit_report(self) -> dict:
        """POP's measured error: of the audited (pruned, evaluated anyway) architectures told OK,
        how many were on the front right after their round was told."""
        a = self._audit
        rate = a["would_enter_front"] / a["evaluated"] if a["evaluated"] else math.nan
        return {"audited": a["audited"], "evaluated": a["evaluated"], "pending": len(a["pending"]),
                "would_enter_front": a["would_enter_front"], "error_rate": rate}

    # ---- ask ------------------------------------------------------------------------------------
    def _draw(self, front: list[int], crowding: list[float]) -> dict:
        if len(self.population) < self.min_random or not front or self.rng.random() < self.random_ratio:
            return self.space.sample(self.rng)
        i, j = self.rng.choice(front), self.rng.choice(front)
        parent = i if crowding[i] >= crowding[j] else j
        return self.space.mutate(self.space.decode(self.population[parent]["encoding"]), self.rng)

    def _pop_mask(self, batch: list[tuple[str, dict, list, float]]) -> list[bool]:
        """POP over the batch: True where pruned. Candidates without a descriptor or a finite cost,
        and evaluated ones without a descriptor, cost or accuracy, take no part."""
        if not self.pop_active or not batch:
            return [False] * len(batch)
        ev = [e for e in self.population if e["descriptor"] is not None and e["cost"] is not None]
        idx = [k for k, (_, _, d, c) in enumerate(batch) if d is not None and c is not None]
        mask = [False] * len(batch)
        if not ev or not idx:
            return mask
        out = ops.partial_order_prune(
            torch.tensor([batch[k][2] for k in idx], dtype=torch.int64),
            torch.tensor([batch[k][3] for k in idx], dtype=torch.float64),
            torch.tensor([e["descriptor"] for e in ev], dtype=torch.int64),
            torch.tensor([e["cost"] for e in ev], dtype=torch.float64),
            torch.tensor([e["acc"] for e in ev], dtype=torch.float64))
        for k, p in zip(idx, out.tolist()):
            mask[k] = bool(p)
        return mask

    def ask(self, n: int) -> list[dict]:
        """``n`` new distinct architectures, POP-filtered; fewer when ``max_tries * n`` draws found
        no more (never a repeat)."""
        if n < 0:
            raise ValueError(f"ParetoEvolution.ask: n must be >= 0, got {n}")
        archive = self.archive()
        front = archive.front_indices()
        crowding = archive.crowding().tolist() if front else []
        rejected = {arch_key(p["encoding"]) for p in self.pruned}
        out, keys, budget = [], set(), self.max_tries * n
        self._round = {"proposed": 0, "pruned": 0, "audited": 0}
        while len(out) < n and budget > 0:
            batch = []
            while len(out) + len(batch) < n and budget > 0:
                budget -= 1
                arch = self._draw(front, crowding)
                encoding = self.space.encode(arch)
                key = arch_key(encoding)
                if key in self._seen or key in keys or key in rejected:
                    continue
                keys.add(key)
                pop = self.pop_active
                desc = self.space.descriptor(arch) if pop else None
                batch.append((encoding, arch, None if desc is None else [int(v) for v in desc],
                              _finite(self.cost(arch)) if pop else None))
            self._round["proposed"] += len(batch)
            for (encoding, arch, desc, cost), pruned in zip(batch, self._pop_mask(batch)):
                if pruned:
                    audited = self.audit_every > 0 and (len(self.pruned) + 1) % self.audit_every == 0
                    self.pruned.append({"encoding": encoding, "descriptor": desc, "cost": cost, "audited": audited})
                    rejected.add(arch_key(encoding))
                    self._round["pruned"] += 1
                    if not audited:
                        continue
                    self._round["audited"] += 1
                    self._audit["audited"] += 1
                    self._audit["pending"].append(arch_key(encoding))
                out.append(arch)
        return out

    # ---- tell -----------------------------------------------------------------------------------
    def tell(self, records: Sequence[Mapping]) -> dict:
        """Adds the OK records (every objective finite) to the population, remembers every encoding
        (failed ones too: never proposed again), settles the audit; returns the round's statistics."""
        failed, new = 0, []
        for r in records:
            if r is None or "encoding" not in r:
                raise ValueError(f"ParetoEvolution.tell: expected records with an 'encoding' field, got {r!r}")
            key = arch_key(r["encoding"])
            if key in self._seen:
                continue                                        # a repeat: counted once
            self._seen[key] = None
            if not all(scored(r, o) for o in self.objectives):
                failed += 1
                continue
            entry = {"encoding": r["encoding"], "values": [float(r[o]) for o in self.objectives],
                     "acc": _finite(r.get(self.accuracy)) if self.accuracy else None,
                     "cost": _finite(r.get(self.cost_objective)) if self.cost_objective else None, "descriptor": None}
            if self.pop_active and entry["acc"] is not None and entry["cost"] is not None:
                desc = self.space.descriptor(self.space.decode(r["encoding"]))
                entry["descriptor"] = None if desc is None else [int(v) for v in desc]
                if entry["descriptor"] is None:
                    entry["cost"] = None                        # no descriptor: not part of POP's set
            self.population.append(entry)
            new.append(key)
        archive = self.archive()
        on_front = {arch_key(self.population[i]["encoding"]) for i in archive.front_indices()}
        pending = self._audit["pending"]
        for key in [k for k in pending if k in self._seen]:
            pending.remove(key)
            if key in new:
                self._audit["evaluated"] += 1
                self._audit["would_enter_front"] += key in on_front
        stats = {"front_size": float(len(on_front)), "hypervolume": self._hypervolume(archive),
                 "evaluated": float(len(self.population)), "failed": float(failed),
                 **{k: float(v) for k, v in self._round.items()}}
        self._round = {"proposed": 0, "pruned": 0, "audited": 0}
        return stats

    def _hypervolume(self, archive: ParetoArchive) -> float:
        if not len(archive):
            return 0.0
        if self.hv_reference is not None:
            return archive.hypervolume(self.hv_reference)
        x = archive.objectives(minimised=True)
        worst, best = x.max(0).values, x.min(0).values
        span = torch.where(worst > best, worst - best, worst.abs())
        span = torch.where(span > 0, span, torch.ones_like(span))   # one point, worst 0: span 1
        signs = torch.tensor([-1.0 if o in self.maximize else 1.0 for o in self.objectives], dtype=torch.float64)
        return archive.hypervolume(((worst + 0.1 * span) * signs).tolist())

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "population": [dict(e) for e in self.population],
                "pruned": [dict(p) for p in self.pruned], "seen": list(self._seen),
                "audit": {**self._audit, "pending": list(self._audit["pending"])}, "round": dict(self._round)}

    def load_state_dict(self, state: dict) -> None:
        missing = {"rng", "population", "pruned", "seen", "audit"} - set(state)
        if missing:
            raise ValueError(f"ParetoEvolution.load_state_dict: missing {sorted(missing)}; got {sorted(state)}")
        rng = state["rng"]                  # a JSON round trip makes lists of the tuples
        self.rng.setstate((rng[0], tuple(rng[1]), rng[2]))
        self.population = [dict(e) for e in state["population"]]
        self.pruned = [dict(p) for p in state["pruned"]]
        self._seen = dict.fromkeys(state["seen"])
        self._audit = {**state["audit"], "pending": list(state["audit"]["pending"])}
        self._round = dict(state.get("round", {"proposed": 0, "pruned": 0, "audited": 0}))
