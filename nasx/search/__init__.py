"""Search strategies behind one ask/tell interface, the one loop they run on, and what a search
keeps: results.jsonl, the Pareto archive, the budget clock, the workers that evaluate.

Layering: this package uses ``nasx.ops`` (Pareto kernels), ``nasx.atomic`` and
``nasx.train.checkpoint``; it imports nothing of ``nasx.evaluate``, ``nasx.models`` or
``nasx.data`` — spaces, evaluators and pipelines are handed in.
"""
from nasx.search.archive import ArchiveEntry, ParetoArchive
from nasx.search.clock import BudgetClock
from nasx.search.controller import LSTMController
from nasx.search.controller_strategy import ControllerStrategy
from nasx.search.evolution import ParetoEvolution
from nasx.search.loop import best_records, run_search, trained
from nasx.search.ppo import PPO
from nasx.search.random_search import RandomSearch
from nasx.search.ray_workers import RayWorkers  # Ray itself is imported only when one is made
from nasx.search.results import ResultsLog
from nasx.search.strategy import Strategy, scored
from nasx.search.workers import BACKENDS, InlineWorkers, ProcessWorkers, Workers, make_workers

__all__ = ["BACKENDS", "ArchiveEntry", "BudgetClock", "ControllerStrategy", "InlineWorkers", "LSTMController", "PPO",
           "ParetoArchive", "ParetoEvolution", "ProcessWorkers", "RandomSearch", "RayWorkers", "ResultsLog", "Strategy",
           "Workers", "best_records", "make_workers", "run_search", "scored", "trained"]
