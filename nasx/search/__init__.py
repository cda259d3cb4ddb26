"""Search strategies and their state. The search layer builds on ``nasx.ops``;
``nasx.ops`` never imports it."""
from nasx.search.archive import ArchiveEntry, ParetoArchive
from nasx.search.controller import LSTMController
from nasx.search.ppo import PPO

__all__ = ["ArchiveEntry", "LSTMController", "PPO", "ParetoArchive"]
