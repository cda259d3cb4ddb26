"""results.jsonl (durable lines, a kill mid-write) and the local workers backends."""
import json
import os

import pytest

from nasx.search.results import ResultsLog
from nasx.search.workers import InlineWorkers, ProcessWorkers, make_workers


def test_results_log_round_trip(tmp_path):
    log = ResultsLog(tmp_path / "r.jsonl")
    log.append({"encoding": "a", "reward": -1.5})
    log.append({"encoding": "b", "reward": float("nan"), "status": "failed"})
    again = ResultsLog(tmp_path / "r.jsonl")
    assert len(again) == 2 and "a" in again and again.get("a")["reward"] == -1.5
    assert again.get("b")["reward"] is None  # NaN is written as null: every line stays standard JSON
    for line in (tmp_path / "r.jsonl").read_text().splitlines():
        json.loads(line)


def test_results_log_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "r.jsonl"
    log = ResultsLog(path)
    log.append({"encoding": "a", "reward": 1.0})
    with open(path, "ab") as f:  # what a SIGKILL in the middle of a write leaves
        f.write(b'{"encoding": "b", "rew')
    with pytest.warns(UserWarning, match="line 2 is incomplete"):
        log = ResultsLog(path)
    assert [r["encoding"] for r in log] == ["a"]
    log.append({"encoding": "c", "reward": 2.0})  # starts on a fresh line
    assert [r["encoding"] for r in ResultsLog(path)] == ["a", "c"]


def test_results_log_names_a_corrupt_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"encoding": "a"}\nnot json\n{"encoding": "c"}\n')
    with pytest.raises(ValueError, match=r"r.jsonl: line 2 is not a valid record"):
        ResultsLog(path)
    path.write_text('{"no_key": 1}\n{"encoding": "c"}\n')
    with pytest.raises(ValueError, match="line 1 .*'encoding'"):
        ResultsLog(path)
    with pytest.raises(ValueError, match="no 'encoding' field"):
        ResultsLog(tmp_path / "other.jsonl").append({"reward": 1})


def _square(x):
    if x == 3:
        raise RuntimeError("three is bad")
    return {"value": x * x, "pid": os.getpid()}


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_run_everything_and_record_failures(workers):
    with make_workers(workers) as pool:
        assert isinstance(pool, InlineWorkers if workers == 1 else ProcessWorkers)
        out = dict(pool.map_unordered(_square, [0, 1, 2, 3, 4]))
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert out[3]["status"] == "failed" and "RuntimeError: three is bad" in out[3]["error"]
    assert [out[i]["value"] for i in (0, 1, 2, 4)] == [0, 1, 4, 16]
    if workers == 2:
        assert all(out[i]["pid"] != os.getpid() for i in (0, 1, 2, 4))


def _die(x):
    if x == 1:
        os._exit(1)  # a worker killed mid-evaluation
    return {"value": x}


def test_process_workers_survive_a_dead_worker():
    with ProcessWorkers(2) as pool:
        out = dict(pool.map_unordered(_die, [0, 1, 2, 3]))
    assert out[1]["status"] == "failed" and "died" in out[1]["error"]
    assert [out[i]["value"] for i in (0, 2, 3)] == [0, 2, 3]  # only the item that killed its worker fails
