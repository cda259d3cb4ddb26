"""``nasx search <pipeline>``: a search end to end (see ``nasx.pipelines``). Every flag comes
from the pipeline's config dataclass, so each default and help text is written once, there.

Run it again with the same arguments after an interruption and it continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import sys

__all__ = ["register"]


def _run(args) -> int:
    from nasx.pipelines.config_flags import config_from_args
    from nasx.pipelines import pipeline

    config_cls, run, summary = pipeline(args.pipeline)
    cfg = config_from_args(config_cls, args)
    _log_to_stderr(cfg.progress)
    report = run(cfg)
    print(json.dumps(report) if args.json else summary(report))
    return 0


def _log_to_stderr(enabled: bool) -> None:
    """The pipelines report their stages through ``logging`` (library code never prints)."""
    logger = logging.getLogger("nasx")
    if enabled and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if enabled else logging.WARNING)


def register(subparsers) -> None:
    from nasx.pipelines.config_flags import add_config_arguments
    from nasx.pipelines import PIPELINES, pipeline

    p = subparsers.add_parser("search", help=f"architecture searches ({', '.join(PIPELINES)})")
    sub = p.add_subparsers(dest="pipeline", metavar="PIPELINE", required=True)
    for name, info in PIPELINES.items():
        s = sub.add_parser(name, help=info.help, description=info.help)
        add_config_arguments(s, pipeline(name)[0])
        s.add_argument("--json", action="store_true", help="print the report as JSON at the end")
        s.set_defaults(func=_run)
