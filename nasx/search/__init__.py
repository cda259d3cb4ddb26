"""Search strategies and their state. The search layer builds on ``nasx.ops``;
``nasx.ops`` never imports it."""
from nasx.search.archive import ArchiveEntry, ParetoArchive
from nasx.search.controller import LSTMController
from nasx.search.controller_search import ControllerSearch
from nasx.search.ppo import PPO
from nasx.search.results import ResultsLog
from nasx.search.workers import InlineWorkers, ProcessWorkers, Workers, make_workers

__all__ = ["ArchiveEntry", "ControllerSearch", "InlineWorkers", "LSTMController", "PPO", "ParetoArchive",
           "ProcessWorkers", "ResultsLog", "Workers", "make_workers"]
