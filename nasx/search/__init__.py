"""Search strategies and their state. The search layer builds on ``nasx.ops``;
``nasx.ops`` never imports it."""
from nasx.search.archive import ArchiveEntry, ParetoArchive

__all__ = ["ArchiveEntry", "ParetoArchive"]
