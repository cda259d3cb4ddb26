"""The ``nasx`` command line: ``nasx data | train | eval | info | search | runs | export ...``.

Each subcommand lives in a module of ``nasx.commands`` with a ``register(subparsers)``
function that adds its parser and sets ``func``; adding a command means adding its module
to ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = ("nasx.commands.data", "nasx.commands.info", "nasx.commands.train",
            "nasx.commands.search", "nasx.commands.runs", "nasx.commands.export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasx", description="Neural architecture search for object detection.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    # Bad input or a missing optional dependency: a message, not a traceback (NASX_DEBUG=1 shows it).
    except (OSError, ValueError, ImportError) as e:
        if os.environ.get("NASX_DEBUG"):
            raise
        print(f"nasx {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nasx {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
