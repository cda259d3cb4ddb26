"""A reproducible, multi-process DataLoader for detection datasets.

The main process decides everything random: the sample order *and* one seed per sample,
drawn from ``(seed, epoch)``. Each sample is then read with torch's, numpy's and Python's
global RNGs seeded from its own seed (and restored afterwards), so random transforms give
the same batches with 0, 2 or 8 workers, and an epoch can be replayed with ``set_epoch``.
"""
from __future__ import annotations

import random
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from nasx.data.collate import Collate

__all__ = ["build_loader", "SeededSampler", "SeededDataset"]


class SeededSampler(Sampler):
    """Yields ``(index, sample_seed)`` for one epoch; the epoch advances on every pass
    unless :meth:`set_epoch` fixes it (to resume a run, also in the middle of an epoch)."""

    def __init__(self, length: int, shuffle: bool, seed: int = 0):
        self.length, self.shuffle, self.seed = length, shuffle, int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next pass is epoch ``epoch`` from its ``start``-th sample on (same order and
        sample seeds as an uninterrupted pass)."""
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
        self.epoch += 1
        order = torch.randperm(self.length, generator=g) if self.shuffle else torch.arange(self.length)
        seeds = torch.randint(0, 2**62, (self.length,), generator=g)
        start, self.start = self.start, 0
        return iter(zip(order.tolist()[start:], seeds.tolist()[start:]))


class SeededDataset(Dataset):
    """Reads ``dataset[index]`` with the global RNGs seeded from the sample's seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: no lazy CUDA seeding per sample
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


def _worker_init(_worker_id: int) -> None:
    # Workers each run one sample at a time; intra-op threads would only oversubscribe the CPU.
    torch.set_num_threads(1)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    size_divisible: int = 32,
    pin_memory: bool = False,
    persistent_workers: Optional[bool] = None,
    prefetch_factor: Optional[int] = None,
    collate_fn: Optional[Callable] = None,
) -> DataLoader:
    """A DataLoader yielding :class:`~nasx.data.collate.DetectionBatch` es.

    Args:
        dataset: any dataset of ``(image, target)`` samples (its transforms should draw from
            torch's RNG, or numpy's / Python's global one).
        batch_size: samples per batch.
        shuffle: a new order every epoch (from ``seed`` and the epoch number).
        workers: loader processes; 0 reads in the main process. Same batches either way.
        seed: the seed of the order and of every sample's transforms.
        drop_last: drop the last, incomplete batch.
        size_divisible: batches are padded to a multiple of this.
        pin_memory: page-locked batches, for faster copies to a GPU.
        persistent_workers: keep workers between epochs (default: whenever workers > 0).
        prefetch_factor: batches each worker reads ahead (DataLoader's default when None).
        collate_fn: how samples become a batch (default: padded detection batches; torch's
            ``default_collate`` for a classification dataset).

    ``loader.sampler.set_epoch(e)`` replays epoch ``e`` (e.g. after resuming).
    """
    if batch_size < 1:
        raise ValueError(f"build_loader: expected batch_size >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"build_loader: expected workers >= 0, got {workers}")
    extra = {}
    if workers > 0:
        extra["persistent_workers"] = True if persistent_workers is None else persistent_workers
        extra["worker_init_fn"] = _worker_init
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=SeededSampler(len(dataset), shuffle, seed),
        num_workers=workers,
        collate_fn=Collate(size_divisible) if collate_fn is None else collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(int(seed)),  # worker base seeds; leaves the global RNG alone
        **extra,
    )
