"""The search kit on its own: the Space interface, PPO and random search on the one loop
(`run_search`), resume after an interruption mid-round, failures, stopping rules, the budget
clock and atomic files."""
import json
import math
import random
import re

import pytest
import torch

from nasx.atomic import read_json, save_torch, write_json
from nasx.search import BudgetClock, ControllerStrategy, RandomSearch, ResultsLog, best_records, run_search
from nasx.search.workers import InlineWorkers
from nasx.spaces.errors import EncodingError
from nasx.spaces.nas_fcos import NasFcosArch, NasFcosSpace
from nasx.spaces.space import Decision, Space


class Toy(Space):
    """depth x width x op: 12 architectures, text ``d2-w16-b``."""

    def decisions(self):
        return [Decision("depth", (1, 2, 3)), Decision("width", (8, 16)), Decision("op", ("a", "b"))]

    def to_text(self, arch):
        return f"d{arch['depth']}-w{arch['width']}-{arch['op']}"

    def from_text(self, text):
        m = re.fullmatch(r"d(\d+)-w(\d+)-(\w+)", text)
        if m is None:
            raise EncodingError(f"not a toy architecture: {text!r}")
        return {"depth": int(m.group(1)), "width": int(m.group(2)), "op": m.group(3)}

    def descriptor(self, arch):
        return [arch["depth"], arch["width"]]


def toy_reward(encoding: str) -> dict:
    arch = Toy().decode(encoding)
    return {"status": "ok", "reward": arch["depth"] + arch["width"] / 8 + (arch["op"] == "b")}


def nas_fcos_reward(encoding: str) -> dict:
    arch = NasFcosArch.parse(encoding)
    if arch.head_op == "deform3x3" and arch.share_from == 6:
        raise FloatingPointError("diverged")
    return {"status": "ok", "reward": float(sum(b.op1 == "sep3x3" for b in arch.fpn) - 0.1 * arch.share_from)}


STRATEGIES = {"ppo": lambda space, seed: ControllerStrategy(space, seed=seed),
              "random": lambda space, seed: RandomSearch(space, seed=seed)}


# ------------------------------------------------------------------------------------ the Space interface
def test_space_interface_round_trips_and_explains():
    space = Toy()
    arch = space.sample(random.Random(0))
    assert set(arch) == {"depth", "width", "op"} and space.decode(space.encode(arch)) == arch
    assert space.from_indices(space.to_indices(arch)) == arch
    assert space.decision_sizes == space.valid_counts == [3, 2, 2] and len(space) == 3
    child = space.mutate(arch, random.Random(1))
    assert sum(child[k] != arch[k] for k in arch) == 1
    assert space.descriptor(arch) == [arch["depth"], arch["width"]]
    with pytest.raises(EncodingError, match=r"depth is 4; expected one of \(1, 2, 3\)"):
        space.encode({"depth": 4, "width": 8, "op": "a"})
    with pytest.raises(EncodingError, match=r"missing labels \['op'\]"):
        space.encode({"depth": 1, "width": 8})
    with pytest.raises(EncodingError, match="not a toy architecture"):
        space.decode("deep")
    with pytest.raises(EncodingError, match=r"choice 1 \(width\) is 2, expected 0..1"):
        space.from_indices([0, 2, 0])


# ------------------------------------------------------------------------------------ the loop
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_both_strategies_run_on_the_loop(name, tmp_path):
    space = NasFcosSpace(channels=8)
    results = ResultsLog(tmp_path / "results.jsonl")
    strategy = STRATEGIES[name](space, 3)
    out = run_search(strategy, nas_fcos_reward, results, state_path=tmp_path / "state.pt", round_size=3,
                     max_evaluations=9, progress=False)
    assert out["stopped"] == "max_evaluations" and out["evaluated"] == len(results) >= 9
    encodings = [r["encoding"] for r in results]
    assert len(set(encodings)) == len(encodings)
    assert all(r["source"] == "search" and 0 <= r["round"] < out["rounds"] for r in results)
    assert [h["round"] for h in out["history"]] == list(range(1, out["rounds"] + 1))
    assert all(math.isfinite(h["reward_max"]) for h in out["history"])
    if name == "ppo":
        assert all(h["entropy"] > 0 for h in out["history"])
    best = best_records(results, 2)
    assert best[0]["reward"] >= best[1]["reward"] == max(r["reward"] for r in results if r is not best[0]
                                                         and r["status"] == "ok")


class _Interrupt(BaseException):
    pass


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_an_interrupted_search_resumes_without_repeating_or_losing(name, tmp_path):
    space = NasFcosSpace(channels=8)

    def search(out, evaluator):
        results = ResultsLog(out / "results.jsonl")
        run_search(STRATEGIES[name](space, 5), evaluator, results, state_path=out / "state.pt", round_size=3,
                   max_evaluations=14, progress=False)
        return results

    full = search(tmp_path / "full", nas_fcos_reward)
    calls = []

    def dying(encoding):
        calls.append(encoding)
        if len(calls) == 8:  # killed in the middle of the third round
            raise _Interrupt
        return nas_fcos_reward(encoding)

    with pytest.raises(_Interrupt):
        search(tmp_path / "cut", dying)
    assert len(ResultsLog(tmp_path / "cut" / "results.jsonl")) == 7
    again = []

    def counting(encoding):
        again.append(encoding)
        return nas_fcos_reward(encoding)

    resumed = search(tmp_path / "cut", counting)
    assert not set(again) & set(calls[:7])                                      # nothing evaluated twice
    # the same search as without the interruption
    assert {r["encoding"]: r["reward"] for r in resumed} == {r["encoding"]: r["reward"] for r in full}


def test_failed_candidates_are_recorded_and_penalised(tmp_path):
    space = NasFcosSpace(channels=8)
    calls = {"n": 0}

    def flaky(encoding):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("out of memory")
        return {"status": "ok", "reward": -1.0}

    results = ResultsLog(tmp_path / "r.jsonl")
    strategy = ControllerStrategy(space, seed=0)
    out = run_search(strategy, flaky, results, state_path=tmp_path / "s.pt", round_size=3, workers=InlineWorkers(),
                     max_evaluations=6, progress=False)
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 2 and all("RuntimeError: out of memory" in r["error"] for r in failed)
    assert sum(h["failed"] for h in out["history"]) == 2
    # a failed candidate is told as the worst reward so far minus the penalty
    strategy.ask(2)
    stats = strategy.tell([failed[0], {"status": "ok", "reward": -1.0}])
    assert stats["reward_max"] == -1.0 and stats["failed"] == 1


def test_stopping_rules(tmp_path):
    space = Toy()
    # the space has 12 architectures: random search runs out of new ones and stops by itself
    results = ResultsLog(tmp_path / "a.jsonl")
    out = run_search(RandomSearch(space, seed=0), toy_reward, results, state_path=tmp_path / "a.pt", round_size=4,
                     min_evaluations=100, max_stale_rounds=20, progress=False)
    assert out["stopped"] == "stale" and out["evaluated"] == len(results) == 12
    # out of time: only the minimum is evaluated (whole rounds)
    results = ResultsLog(tmp_path / "b.jsonl")
    out = run_search(RandomSearch(space, seed=0), toy_reward, results, state_path=tmp_path / "b.pt", round_size=2,
                     time_left=lambda: -1.0, min_evaluations=3, progress=False)
    assert out["stopped"] == "budget" and 3 <= out["evaluated"] <= 4
    # only the counted records (e.g. the trained ones) make up the minimum; the others are still logged
    results = ResultsLog(tmp_path / "c.jsonl")
    out = run_search(RandomSearch(space, seed=0), toy_reward, results, state_path=tmp_path / "c.pt", round_size=2,
                     time_left=lambda: -1.0, min_evaluations=3, progress=False,
                     counted=lambda r: r["reward"] > 0.5)
    assert out["stopped"] == "budget" and 3 <= out["evaluated"] == sum(r["reward"] > 0.5 for r in results)
    # past the budget, rounds that add nothing counted (every candidate over a limit) end the search
    results = ResultsLog(tmp_path / "d.jsonl")
    out = run_search(RandomSearch(space, seed=0), toy_reward, results, state_path=tmp_path / "d.pt", round_size=1,
                     time_left=lambda: -1.0, min_evaluations=3, max_stale_rounds=2, progress=False,
                     counted=lambda r: False)
    assert out["stopped"] == "stale" and out["evaluated"] == 0 and out["rounds"] == len(results) == 2


def test_resuming_with_another_strategy_or_round_size_is_refused(tmp_path):
    space = Toy()
    results = ResultsLog(tmp_path / "r.jsonl")
    run_search(RandomSearch(space), toy_reward, results, state_path=tmp_path / "s.pt", round_size=2,
               max_evaluations=2, progress=False)
    with pytest.raises(ValueError, match=r"saved search is 'random' with round_size 2, this one 'ppo' with 2"):
        run_search(ControllerStrategy(space), toy_reward, results, state_path=tmp_path / "s.pt", round_size=2,
                   max_evaluations=4, progress=False)
    with pytest.raises(ValueError, match="round_size 2, this one 'random' with 3"):
        run_search(RandomSearch(space), toy_reward, results, state_path=tmp_path / "s.pt", round_size=3,
                   max_evaluations=4, progress=False)


def test_strategy_state_restores_the_next_ask():
    space = NasFcosSpace(channels=8)
    for make in STRATEGIES.values():
        a = make(space, 7)
        a.ask(3)
        state = a.state_dict()
        first = a.ask(3)
        b = make(space, 99)
        b.load_state_dict(state)
        assert b.ask(3) == first
    # the controller's initial weights come from its seed, not from the global generator
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ControllerStrategy(space, seed=3)
    assert torch.rand(1) == before


# ------------------------------------------------------------------------------------ clock and files
def test_budget_clock_survives_a_resume(tmp_path):
    clock = BudgetClock(tmp_path / "clock.json", budget_seconds=60)
    clock.before = 10.0                       # as if 10 s had been spent by an earlier run
    clock.save()
    again = BudgetClock(tmp_path / "clock.json", budget_seconds=60)
    assert 10.0 <= again.spent() < 11.0 and 49.0 < again.left() <= 50.0


def test_atomic_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.5, float("inf")]})
    assert read_json(tmp_path / "a.json") == {"x": None, "y": [1.5, None]}      # standard JSON
    assert json.loads((tmp_path / "a.json").read_text())["y"][0] == 1.5
    save_torch({"t": torch.arange(3)}, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt")["t"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "s.pt"]     # no temporary files left
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
