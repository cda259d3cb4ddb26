"""Shared benchmark plumbing: timing against a peer in the same process, the machine
record, a printed table and a JSON result under benchmarks/results/.

Speed goals are ratios against the peer measured in the same run, never absolute
times: the machines are shared and noisy.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    info = {
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "os_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return info


def median_time(fn: Callable[[], object], device: str, warmup: int = 2, repeats: int = 7) -> float:
    """Median wall time of fn() in seconds, after warm-up; CUDA work is synchronised."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    op: str
    case: str
    nasx_ms: float
    peer: str
    peer_ms: float | None
    goal: float | None = None  # required speed-up over the peer, if any
    extra: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return None if self.peer_ms is None else self.peer_ms / self.nasx_ms

    @property
    def met(self) -> bool | None:
        return None if self.goal is None or self.speedup is None else self.speedup >= self.goal


def compare(op, case, nasx_fn, peer, peer_fn, device, goal=None, repeats=7, **extra) -> Row:
    nasx_s = median_time(nasx_fn, device, repeats=repeats)
    peer_s = median_time(peer_fn, device, repeats=repeats) if peer_fn is not None else None
    return Row(op, case, nasx_s * 1e3, peer, None if peer_s is None else peer_s * 1e3, goal, extra)


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = f"{'op':<22}{'case':<28}{'nasx ms':>10}{'peer':>20}{'peer ms':>10}{'speed-up':>10}  goal"
    print(header)
    print("-" * len(header))
    for r in rows:
        peer_ms = "-" if r.peer_ms is None else f"{r.peer_ms:.2f}"
        speed = "-" if r.speedup is None else f"{r.speedup:.1f}x"
        goal = "" if r.goal is None else f">= {r.goal:g}x {'met' if r.met else 'MISSED'}"
        print(f"{r.op:<22}{r.case:<28}{r.nasx_ms:>10.2f}{r.peer:>20}{peer_ms:>10}{speed:>10}  {goal}")


def write_results(name: str, device: str, rows: list[Row], out: Path | None = None) -> Path:
    out = out or RESULTS / f"{name}-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(device),
        "rows": [dict(asdict(r), speedup=r.speedup, met=r.met) for r in rows],
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out)
    return out


def run_benchmark(name: str, title: str, rows_for: Callable[[str, bool], list[Row]], doc: str | None,
                  argv=None, check: Callable[[list[Row]], list[Row]] | None = None) -> int:
    """The command line every bench_*.py shares: ``--quick``, ``--device cpu|cuda|all``,
    ``--no-write``. For each device, ``rows_for(device, quick)`` measures; the rows are
    printed as a table and written to ``results/<name>-<device>.json``; ``check(rows)``
    may print further goals and return the rows that missed them."""
    import argparse
    import sys

    import nasx

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/results/")
    args = p.parse_args(argv)
    missed: list[Row] = []
    for device in ["cpu", "cuda"] if args.device == "all" else [args.device]:
        if device == "cuda" and not (torch.cuda.is_available() and nasx.cuda_enabled()):
            if args.device == "cuda":
                sys.exit("no CUDA GPU (or nasx was built without CUDA kernels)")
            continue
        rows = rows_for(device, args.quick)
        print_table(f"{title} on {device} (torch {torch.__version__})", rows)
        if check is not None:
            missed += check(rows)
        if not args.no_write:
            print(f"results: {write_results(name + ('-quick' if args.quick else ''), device, rows)}")
        missed += [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} speed goal(s) missed on this run: " + ", ".join(f"{r.op} {r.case}" for r in missed))
    return 0
