"""The search-space interface every pipeline's space implements, and the one every strategy uses.

An architecture is a flat mapping ``{label: choice}`` over the space's :class:`Decision` s, in
their order (as NNI's and DARTS' genotypes are): a strategy never needs to know what a label
means. Each space also has a canonical text form — the ``encoding`` that ``results.jsonl``
keys on, that a person reads and that a builder turns into modules — with
``encode(arch) -> str`` and ``decode(str) -> arch`` inverse to each other.

What a subclass writes: :meth:`Space.decisions` (static: the same list every call) and the text
form, :meth:`Space.to_text` / :meth:`Space.from_text`. Everything else here is generic:
validation, index vectors (what a controller samples), uniform sampling, one-decision
mutation. A space may also give :meth:`Space.descriptor` — integers that grow with depth and
width — for partial-order pruning.

Letters: D decisions.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from nasx.spaces.errors import EncodingError

__all__ = ["Decision", "Space", "arch_key", "as_rng"]


def arch_key(encoding) -> str:
    """A short file-name-safe key of an architecture's encoding (for per-architecture files)."""
    return hashlib.sha1(str(encoding).encode()).hexdigest()[:16]


def as_rng(rng):
    """``random.Random``, ``numpy.random.Generator`` or an int seed (None: a fresh unseeded one)."""
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return random.Random(rng)
    return rng


def _randbelow(rng, n: int) -> int:
    if hasattr(rng, "integers"):         # numpy.random.Generator
        return int(rng.integers(n))
    return rng.randrange(n)              # random.Random


@dataclass(frozen=True)
class Decision:
    """One labelled choice: ``options`` are the values it may take (choice i is ``options[i]``).

    ``size`` is how many outputs a controller gives it (at least ``len(options)``; more when
    the same position takes more options elsewhere — NAS-FCOS's pool ids — so that a
    controller's output layers stay one size per kind). ``kind`` groups decisions for a reader.
    """

    label: str
    options: tuple
    size: int = 0
    kind: str = ""

    def __post_init__(self):
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError(f"Decision {self.label!r}: expected at least one option")
        if self.size == 0:
            object.__setattr__(self, "size", len(self.options))
        if self.size < len(self.options):
            raise ValueError(f"Decision {self.label!r}: size {self.size} < {len(self.options)} options")

    @property
    def valid(self) -> int:
        """How many choices are allowed: ``0 .. valid - 1``."""
        return len(self.options)

    # The names the controller code and the NAS-FCOS tests use.
    @property
    def name(self) -> str:
        return self.label

    @property
    def choices(self) -> int:
        return self.size


class Space:
    """Base class of search spaces; see the module docstring for the contract."""

    # -- what a subclass defines ---------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        raise NotImplementedError

    def to_text(self, arch: dict) -> str:
        """A valid architecture mapping -> its canonical text."""
        raise NotImplementedError

    def from_text(self, text: str) -> dict:
        """Text (canonical or not, or a name the space knows) -> the architecture mapping;
        :class:`EncodingError` says what is wrong."""
        raise NotImplementedError

    def as_mapping(self, arch) -> Mapping:
        """Hook: a space with a typed architecture object converts it to the mapping here."""
        return arch

    def descriptor(self, arch: Mapping) -> Optional[list[int]]:
        """Integers that do not decrease when the architecture gets deeper or wider (partial-order
        pruning); None when the space has no such order."""
        return None

    # -- generic -------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [d.label for d in self.decisions()]

    @property
    def decision_sizes(self) -> list[int]:
        """Each decision's controller outputs."""
        return [d.size for d in self.decisions()]

    @property
    def valid_counts(self) -> list[int]:
        """Each decision's allowed choices (``0 .. valid - 1``)."""
        return [d.valid for d in self.decisions()]

    def __len__(self) -> int:
        return len(self.decisions())

    def check(self, arch: Mapping) -> dict:
        """``arch`` as a plain dict in decision order, or :class:`EncodingError` naming the label."""
        arch = self.as_mapping(arch)
        if not isinstance(arch, Mapping):
            raise EncodingError(f"{type(self).__name__}: an architecture is a {{label: choice}} mapping, "
                                f"got {type(arch).__name__}")
        labels = self.labels
        missing, unknown = [lb for lb in labels if lb not in arch], [k for k in arch if k not in set(labels)]
        if missing or unknown:
            raise EncodingError(f"{type(self).__name__}: missing labels {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                f"unknown labels {unknown[:5]}")
        for d in self.decisions():
            if arch[d.label] not in d.options:
                raise EncodingError(f"{type(self).__name__}: {d.label} is {arch[d.label]!r}; expected one of {d.options}")
        return {lb: arch[lb] for lb in labels}

    def encode(self, arch: Mapping) -> str:
        """The canonical text of ``arch`` (checked first)."""
        return self.to_text(self.check(arch))

    def decode(self, text: str) -> dict:
        """The architecture mapping of ``text``; ``encode(decode(t))`` is ``t``'s canonical form."""
        return self.check(self.from_text(text))

    def canonical(self, text: str) -> str:
        return self.encode(self.decode(text))

    def to_indices(self, arch: Mapping) -> list[int]:
        """The choice index of every decision (what a controller samples)."""
        arch = self.check(arch)
        return [d.options.index(arch[d.label]) for d in self.decisions()]

    def from_indices(self, indices: Sequence[int]) -> dict:
        """One choice index per decision -> the architecture mapping."""
        values = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        ds = self.decisions()
        if len(values) != len(ds):
            raise EncodingError(f"{type(self).__name__}: expected {len(ds)} choices, got {len(values)}")
        for step, (v, d) in enumerate(zip(values, ds)):
            if not 0 <= v < d.valid:
                raise EncodingError(f"{type(self).__name__}: choice {step} ({d.label}) is {v}, expected 0..{d.valid - 1}")
        return {d.label: d.options[v] for v, d in zip(values, ds)}

    def sample(self, rng=None) -> dict:
        """Every decision uniformly among its options. ``rng``: see :func:`as_rng`."""
        rng = as_rng(rng)
        return self.from_indices([_randbelow(rng, d.valid) for d in self.decisions()])

    def mutate(self, arch: Mapping, rng=None) -> dict:
        """``arch`` with one decision, chosen uniformly among those with a choice, changed to
        another of its options, chosen uniformly."""
        rng = as_rng(rng)
        indices = self.to_indices(arch)
        ds = self.decisions()
        movable = [i for i, d in enumerate(ds) if d.valid > 1]
        if not movable:
            raise EncodingError(f"{type(self).__name__}: no decision has more than one option; nothing to mutate")
        step = movable[_randbelow(rng, len(movable))]
        new = _randbelow(rng, ds[step].valid - 1)
        indices[step] = new + (new >= indices[step])
        return self.from_indices(indices)
