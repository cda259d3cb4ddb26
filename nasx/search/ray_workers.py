"""Candidate evaluations as Ray tasks: one machine or a whole cluster (``--backend ray``).

:class:`RayWorkers` is the :class:`~nasx.search.workers.Workers` interface on Ray: each item is
one task (``num_cpus=threads``, ``threads`` intra-op torch threads), at most ``workers`` are in
flight, and ``(index, result)`` pairs come back in completion order. The semantics are those of
:class:`~nasx.search.workers.ProcessWorkers`: an evaluator that raises gives a failure record;
a task whose worker process dies (killed, out of memory) runs once more, alone, after the others,
and only if it dies again is it recorded as failed, so one bad candidate does not take the items
next to it down.

Ray is optional (``pip install 'nasx[ray]'``) and imported only when a ``RayWorkers`` is made.
The evaluator and its items travel by pickle, and whatever they name by path (run directory,
dataset, feature cache) must be readable at that path on every machine of the cluster.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from typing import Callable, Iterable, Iterator, Optional

from nasx.search.workers import Workers, _call, _failure

__all__ = ["RayWorkers"]

_MISSING = "the ray backend needs Ray: pip install 'nasx[ray]' (or pip install ray)"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(_MISSING) from None
    return ray


def _evaluate(evaluator: Callable, item, threads: int, cwd: str) -> dict:
    """The body of one Ray task (module-level, so workers import it instead of unpickling code).

    It runs in the driver's working directory where that exists (Ray starts workers where
    ``ray start`` ran), so relative paths mean what they mean to the driver, as with processes.
    """
    import torch

    torch.set_num_threads(max(1, threads))
    if cwd != os.getcwd() and os.path.isdir(cwd):
        os.chdir(cwd)
    return _call(evaluator, item)


class RayWorkers(Workers):
    """Runs the evaluations as Ray tasks, at most ``workers`` at a time.

    Args:
        workers: tasks in flight at once.
        threads: CPUs each task reserves and the torch intra-op threads it uses.
        address: ``None`` starts a local Ray instance (shut down again by :meth:`close`); an
            address (``"auto"``, ``"host:6379"``) joins a running cluster (:meth:`close` only
            disconnects). If Ray is already initialised in this process, that connection is used
            as it is and left open.
    """

    def __init__(self, workers: int, *, threads: int = 1, address: Optional[str] = None):
        if workers < 1:
            raise ValueError(f"RayWorkers: expected workers >= 1, got {workers}")
        if threads < 1:
            raise ValueError(f"RayWorkers: expected threads >= 1, got {threads}")
        ray = _import_ray()
        self.workers, self.threads, self.address = int(workers), int(threads), address
        self._ray = ray
        self._connected = False  # whether this object called ray.init (and so calls ray.shutdown)
        logging.getLogger("ray").setLevel(logging.WARNING)
        if not ray.is_initialized():
            if address is None:  # a local instance on this machine's cores, gone again at close()
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            else:  # join a running cluster; close() only disconnects from it
                try:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                except ConnectionError as exc:
                    raise ConnectionError(
                        f"could not join the Ray cluster at {address!r} ({exc}): is `ray start --head` running "
                        "there? If the cluster uses token authentication, set RAY_AUTH_MODE=token here and give "
                        "this machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)") from exc
            self._connected = True
        most = max((node.get("Resources", {}).get("CPU", 0) for node in ray.nodes() if node.get("Alive")),
                   default=0)
        if self.threads > most:
            self.close()
            raise ValueError(f"RayWorkers: each task asks for {self.threads} CPUs, but no machine of the "
                             f"Ray cluster has more than {most:g}; use fewer threads per worker")
        self._task = ray.remote(num_cpus=self.threads, max_retries=0)(_evaluate)

    def _submit(self, evaluator_ref, item):
        return self._task.remote(evaluator_ref, item, self.threads, os.getcwd())

    def _outcome(self, ref):
        """``(result, None)``, or ``(None, error)`` if the task's worker process died (or Ray lost it)."""
        ray = self._ray
        try:
            return ray.get(ref), None
        except ray.exceptions.RayTaskError as exc:  # raised in the task itself, beyond what _call catches
            return _failure(exc.cause if isinstance(exc.cause, BaseException) else exc), None
        except ray.exceptions.RayError as exc:
            return None, exc

    def map_unordered(self, evaluator: Callable, items: Iterable) -> Iterator[tuple[int, dict]]:
        ray = self._ray
        items = list(items)
        if not items:
            return
        evaluator_ref = ray.put(evaluator)  # once, not pickled again for every task
        queue = deque(range(len(items)))
        in_flight: dict = {}  # ObjectRef -> item index
        died: list[int] = []
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    i = queue.popleft()
                    in_flight[self._submit(evaluator_ref, items[i])] = i
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    i = in_flight.pop(ref)
                    result, _ = self._outcome(ref)
                    if result is None:
                        died.append(i)  # maybe the item, maybe its neighbours: run it again alone
                    else:
                        yield i, result
            # Nothing else in flight now: an item whose worker dies again is the culprit.
            for i in sorted(died):
                ref = self._submit(evaluator_ref, items[i])
                in_flight[ref] = i
                result, error = self._outcome(ref)
                del in_flight[ref]
                if result is None:
                    first_line = (str(error).strip().splitlines() or [""])[0]
                    result = _failure(RuntimeError(f"the worker process died while evaluating this item "
                                                   f"({type(error).__name__}: {first_line})"))
                yield i, result
        finally:
            for ref in in_flight:  # the caller stopped early: do not leave tasks running
                try:
                    ray.cancel(ref)
                except Exception:
                    pass

    def close(self) -> None:
        """Stops the local Ray instance this object started, or disconnects from the cluster it
        joined; a Ray connection that existed before it is left alone."""
        if self._connected:
            self._ray.shutdown()
            self._connected = False
