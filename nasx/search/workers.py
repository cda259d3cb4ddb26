"""Where candidate evaluations run: inline, in local processes, or on a Ray cluster.

A strategy hands a :class:`Workers` an evaluator (a plain picklable callable ``item -> dict``)
and a list of items and gets ``(index, result)`` pairs back as they finish. That is the whole
interface, so a distributed engine plugs in as one more subclass with ``map_unordered`` and the
strategies do not change: :class:`~nasx.search.ray_workers.RayWorkers` (``backend="ray"``, the
optional ``nasx[ray]`` extra; Ray is imported only when one is made) runs them as Ray tasks on
this machine or across a cluster. :func:`make_workers` picks one by name (:data:`BACKENDS`).

An evaluator that raises does not stop the others: the pair carries ``{"status": "failed",
"error": "<type>: <message>"}`` instead of a result.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import traceback
from typing import Callable, Iterable, Iterator

__all__ = ["BACKENDS", "Workers", "InlineWorkers", "ProcessWorkers", "check_backend", "make_workers"]

#: The names :func:`make_workers` accepts ("auto": inline for one worker, else processes).
BACKENDS = ("auto", "inline", "process", "ray")


def _failure(exc: BaseException) -> dict:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-2000:]}


def _call(evaluator: Callable, item):
    try:
        return evaluator(item)
    except Exception as exc:  # recorded as a failed candidate; the search goes on
        return _failure(exc)


class Workers:
    """Runs ``evaluator(item)`` for each item; yields ``(index, result)`` in completion order."""

    workers: int = 1

    def map_unordered(self, evaluator: Callable, items: Iterable) -> Iterator[tuple[int, dict]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InlineWorkers(Workers):
    """In this process, one item after another (debuggable; what ``--workers 1`` uses)."""

    def map_unordered(self, evaluator, items):
        for i, item in enumerate(items):
            yield i, _call(evaluator, item)


class ProcessWorkers(Workers):
    """A pool of ``workers`` local processes (spawned: no inherited threads or CUDA state).

    Each process is given ``threads`` intra-op threads, so W workers do not oversubscribe the
    cores. If a worker dies (killed, out of memory), the unfinished items run again one at a
    time in fresh processes, so only the item that kills its process is recorded as failed.
    """

    def __init__(self, workers: int, *, threads: int = 1):
        if workers < 1:
            raise ValueError(f"ProcessWorkers: expected workers >= 1, got {workers}")
        self.workers, self.threads = int(workers), int(threads)
        self._pool = None

    def _ensure(self):
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker, initargs=(self.threads,))
        return self._pool

    def map_unordered(self, evaluator, items):
        items = list(items)
        pending = {self._ensure().submit(_call, evaluator, item): i for i, item in enumerate(items)}
        broken = False
        while pending and not broken:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    broken = True  # a worker died; which item killed it is unknown
                    break
                yield pending.pop(fut), result
        if broken:
            # Run every unfinished item alone in a fresh one-process pool: a crash then names its item.
            self.close()
            for i in sorted(pending.values()):
                with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(self.threads,)) as solo:
                    try:
                        yield i, solo.submit(_call, evaluator, items[i]).result()
                    except cf.process.BrokenProcessPool as exc:
                        yield i, _failure(RuntimeError(f"the worker process died while evaluating this item ({exc})"))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def check_backend(backend: str) -> None:
    """Fail now, not hours into a run, if ``backend`` is unknown or its engine is not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "ray":
        from nasx.search.ray_workers import _import_ray

        _import_ray()


def make_workers(workers: int, *, backend: str = "auto", threads_per_worker: int | None = None,
                 ray_address: str | None = None) -> Workers:
    """The :class:`Workers` for ``backend`` (one of :data:`BACKENDS`) with ``workers`` at a time.

    ``"auto"``: :class:`InlineWorkers` for ``workers <= 1``, else a :class:`ProcessWorkers` pool;
    ``"inline"``, ``"process"``, ``"ray"`` (:class:`~nasx.search.ray_workers.RayWorkers`, which
    joins the cluster at ``ray_address``, or starts a local one when it is ``None``) explicitly.
    Each process or Ray task gets ``threads_per_worker`` torch threads (default: this machine's
    cores divided by ``workers``).
    """
    check_backend(backend)
    if backend == "auto":
        backend = "inline" if workers <= 1 else "process"
    if backend == "inline":
        return InlineWorkers()
    import os

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, workers))
    if backend == "process":
        return ProcessWorkers(workers, threads=threads)
    from nasx.search.ray_workers import RayWorkers

    return RayWorkers(workers, threads=threads, address=ray_address)
