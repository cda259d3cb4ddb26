"""ParetoEvolution (SM-NAS's evolution on the Pareto front with partial-order pruning): it finds a
known front, runs on the one loop and resumes exactly, prunes what POP says and only that,
audits POP's error, never proposes an architecture twice, and refuses bad settings by name."""
import io
import itertools
import json
import random
import re

import pytest
import torch

from nasx.search import ParetoArchive, ParetoEvolution, ResultsLog, run_search
from nasx.spaces.errors import EncodingError
from nasx.spaces.space import Decision, Space


class Cube(Space):
    """Three integer choices 0..k-1, text ``a-b-c``; descriptor = the choices (bigger: "deeper")."""

    def __init__(self, k: int = 8):
        self.k = k

    def decisions(self):
        return [Decision(label, tuple(range(self.k))) for label in "abc"]

    def to_text(self, arch):
        return "-".join(str(arch[x]) for x in "abc")

    def from_text(self, text):
        if re.fullmatch(r"\d+-\d+-\d+", text) is None:
            raise EncodingError(f"not a cube point: {text!r}")
        return dict(zip("abc", map(int, text.split("-"))))

    def descriptor(self, arch):
        return [arch[x] for x in "abc"]


def squares(arch) -> float:
    return float(sum(v * v for v in arch.values()))


def cube_eval(encoding: str) -> dict:
    """acc = sum of choices (up), cost = sum of squares (down): the front is the balanced points."""
    arch = Cube().decode(encoding)
    return {"status": "ok", "acc": float(sum(arch.values())), "cost": squares(arch)}


def capped_eval(encoding: str) -> dict:
    """As ``cube_eval`` but choices above 4 add no accuracy: POP (valid here) has much to prune."""
    arch = Cube().decode(encoding)
    return {"status": "ok", "acc": float(sum(min(v, 4) for v in arch.values())), "cost": squares(arch)}


OBJ = dict(objectives=("acc", "cost"), maximize=("acc",))
REF = {"acc": -1.0, "cost": 200.0}


def fake(encoding, acc, cost):
    """A record with told values (not necessarily the toy's own)."""
    return {"encoding": encoding, "status": "ok", "acc": acc, "cost": cost}


def drive(strategy, rounds, size, evaluate=cube_eval):
    """ask -> evaluate -> tell, a plain loop; returns every record told."""
    told = []
    for _ in range(rounds):
        records = [{"encoding": strategy.space.encode(a), **evaluate(strategy.space.encode(a))}
                   for a in strategy.ask(size)]
        strategy.tell(records)
        told += records
    return told


def true_hypervolume(space):
    archive = ParetoArchive(("acc", "cost"), maximize=("acc",))
    for t in itertools.product(range(space.k), repeat=3):
        e = space.encode(dict(zip("abc", t)))
        archive.add(e, cube_eval(e))
    return archive.hypervolume(REF)


# ------------------------------------------------------------------------------------ search quality
def test_finds_the_known_front():
    space = Cube()
    strategy = ParetoEvolution(space, **OBJ, seed=0, min_random=10, hv_reference=REF, prune=False)
    told = drive(strategy, 25, 8)                       # 200 of 512 architectures
    assert len(told) == 200 and len({r["encoding"] for r in told}) == 200
    hv = strategy.archive().hypervolume(REF)
    assert hv >= 0.97 * true_hypervolume(space)
    assert strategy.tell([])["hypervolume"] == pytest.approx(hv)
    # the true front: for each sum s the least sum of squares (the balanced points); most are found
    least = {}
    for t in itertools.product(range(space.k), repeat=3):
        least[sum(t)] = min(least.get(sum(t), 1e9), sum(v * v for v in t))
    found = {tuple(e["values"]) for e in strategy.front()}
    assert len(found & {(float(s), float(c)) for s, c in least.items()}) >= 0.75 * len(least)


def test_round_statistics_and_automatic_reference():
    strategy = ParetoEvolution(Cube(), **OBJ, seed=1, min_random=4, prune=False)
    stats = strategy.tell([{"encoding": "1-1-1", **cube_eval("1-1-1")}])
    # one point: reference = worst + 10 % of |worst| (acc 3 -> 2.7, cost 3 -> 3.3): box 0.3 x 0.3
    assert stats["front_size"] == 1 and stats["hypervolume"] == pytest.approx(0.09)
    strategy.ask(4)
    stats = strategy.tell([{"encoding": "0-0-1", "status": "failed", "error": "boom"},
                           {"encoding": "2-2-2", **cube_eval("2-2-2")}])
    assert stats["failed"] == 1 and stats["evaluated"] == 2 and stats["proposed"] == 4 and stats["pruned"] == 0
    # ranges 3 (acc) and 9 (cost): reference (3 - 0.3, 12 + 0.9); the union of the two boxes
    assert stats["hypervolume"] == pytest.approx((6 - 2.7) * (12.9 - 12) + (3 - 2.7) * (12 - 3))
    assert "0-0-1" not in {Cube().encode(a) for a in strategy.ask(40)}       # failed: never proposed again


def test_children_mutate_the_front_after_min_random():
    strategy = ParetoEvolution(Cube(), **OBJ, seed=4, min_random=3, random_ratio=0.0)
    strategy.tell([fake("4-4-4", 100.0, 0.0), fake("1-2-3", 6.0, 14.0)])
    drawn = strategy.ask(8)                                                  # 2 < min_random: random draws
    assert len({Cube().encode(a) for a in drawn}) == 8 and any(sum(a[x] != 4 for x in "abc") > 1 for a in drawn)
    strategy.tell([fake("7-7-7", 21.0, 147.0)])
    children = strategy.ask(12)                                              # the front is 4-4-4 alone
    assert len(children) == 12 and all(sum(a[x] != 4 for x in "abc") == 1 for a in children)


# ------------------------------------------------------------------------------------ the loop and resume
class _Interrupt(BaseException):
    pass


def make(seed=3):
    return ParetoEvolution(Cube(), **OBJ, seed=seed, min_random=6, cost=squares, audit_every=2)


def search(out, evaluator, max_evaluations=40):
    results = ResultsLog(out / "results.jsonl")
    strategy = make()
    run = run_search(strategy, evaluator, results, state_path=out / "state.pt", round_size=4,
                     max_evaluations=max_evaluations, progress=False)
    return results, strategy, run


def test_runs_on_the_loop_and_resumes_exactly(tmp_path):
    full, full_strategy, run = search(tmp_path / "full", capped_eval)
    encodings = [r["encoding"] for r in full]
    assert run["stopped"] == "max_evaluations" and len(encodings) == len(set(encodings)) >= 40
    assert {"front_size", "hypervolume", "proposed", "pruned", "audited"} <= set(run["history"][-1])
    assert run["history"][-1]["best"] == max(r["acc"] for r in full)        # the loop's objective is acc
    assert sum(h["pruned"] for h in run["history"]) == len(full_strategy.pruned) > 0
    # every 2nd pruned one evaluated anyway; POP's assumption holds for capped_eval: no error
    report = full_strategy.audit_report()
    assert report["audited"] == report["evaluated"] == len(full_strategy.pruned) // 2 > 0
    assert report["would_enter_front"] == 0 == report["error_rate"]
    # stopped after a few rounds, then resumed with the full budget
    search(tmp_path / "two", capped_eval, max_evaluations=12)
    resumed, strategy, _ = search(tmp_path / "two", capped_eval)
    assert [(r["encoding"], r["round"]) for r in resumed] == [(r["encoding"], r["round"]) for r in full]
    assert strategy.state_dict() == full_strategy.state_dict()
    # killed mid-round: nothing evaluated twice, the same search
    calls = []

    def dying(encoding):
        calls.append(encoding)
        if len(calls) == 15:
            raise _Interrupt
        return capped_eval(encoding)

    with pytest.raises(_Interrupt):
        search(tmp_path / "cut", dying)
    again = []
    resumed, strategy, _ = search(tmp_path / "cut", lambda e: again.append(e) or capped_eval(e))
    assert not set(again) & set(calls[:14])
    assert {r["encoding"] for r in resumed} == set(encodings)
    assert strategy.audit_report() == full_strategy.audit_report()


# ------------------------------------------------------------------------------------ POP and the audit
def below(arch, top):
    return all(arch[x] <= t for x, t in zip("abc", top))


def test_pop_prunes_what_cannot_reach_the_front():
    # b = 5-5-5 bounds the accuracy of everything below it by 10; c = 0-0-1 reaches 10 at cost 1:
    # every candidate <= 5-5-5 costing >= 1 (all but 0-0-0) is pruned, nothing else
    strategy = ParetoEvolution(Cube(), **OBJ, seed=0, min_random=1, cost=squares)
    strategy.tell([fake("5-5-5", 10.0, 75.0), fake("0-0-1", 10.0, 1.0)])
    asked = [a for _ in range(10) for a in strategy.ask(6)]
    assert len(asked) == 60 and not any(below(a, (5, 5, 5)) and a != {"a": 0, "b": 0, "c": 0} for a in asked)
    assert strategy.pruned and all(below(Cube().decode(p["encoding"]), (5, 5, 5)) for p in strategy.pruned)
    assert all(p["cost"] == squares(Cube().decode(p["encoding"])) and not p["audited"] for p in strategy.pruned)
    assert len({p["encoding"] for p in strategy.pruned}) == len(strategy.pruned)   # never redrawn
    stats = strategy.tell([])
    assert stats["proposed"] == 6 + stats["pruned"] and stats["audited"] == 0
    # prune=False: the same draws are proposed
    free = ParetoEvolution(Cube(), **OBJ, seed=0, min_random=1, cost=squares, prune=False)
    free.tell([fake("5-5-5", 10.0, 75.0), fake("0-0-1", 10.0, 1.0)])
    asked = [a for _ in range(10) for a in free.ask(6)]
    assert not free.pruned and sum(below(a, (5, 5, 5)) for a in asked) > 10
    # no cost: POP is off
    assert not ParetoEvolution(Cube(), **OBJ, seed=0).pop_active


def test_audit_measures_pop_errors():
    # 5-5-5's told accuracy (10) breaks POP's assumption: 4-4-4 (true acc 12) is pruned wrongly
    strategy = ParetoEvolution(Cube(), **OBJ, seed=2, min_random=1, cost=squares, audit_every=3)
    strategy.tell([fake("5-5-5", 10.0, 75.0), fake("0-0-1", 10.0, 1.0)])
    audited = 0
    for _ in range(15):
        asked = strategy.ask(6)
        stats = strategy.tell([{"encoding": Cube().encode(a), **cube_eval(Cube().encode(a))} for a in asked])
        audited += stats["audited"]
    flagged = [p for p in strategy.pruned if p["audited"]]
    assert len(flagged) == len(strategy.pruned) // 3 == audited > 0
    report = strategy.audit_report()
    assert report["audited"] == report["evaluated"] == len(flagged) and report["pending"] == 0
    # recount by hand: an audited architecture counts when it was on the front right after its round
    wrong = [p for p in flagged if Cube().decode(p["encoding"])["a"] + Cube().decode(p["encoding"])["b"]
             + Cube().decode(p["encoding"])["c"] > 10]
    assert 0 < report["would_enter_front"] <= len(wrong)
    assert report["error_rate"] == pytest.approx(report["would_enter_front"] / report["evaluated"])


# ------------------------------------------------------------------------------------ dedupe and state
def test_never_proposes_twice_and_runs_out_cleanly():
    strategy = ParetoEvolution(Cube(4), **OBJ, seed=5, min_random=3, max_tries=100, prune=False)
    seen = []
    for _ in range(60):
        asked = [Cube(4).encode(a) for a in strategy.ask(8)]
        if not asked:
            break
        seen += asked
        strategy.tell([{"encoding": e, **cube_eval(e)} for e in asked])
    assert len(seen) == len(set(seen)) == 64 and strategy.ask(8) == []


@pytest.mark.parametrize("via", ["json", "torch"])
def test_state_round_trip_gives_the_same_next_ask(via):
    a = make(seed=11)
    drive(a, 5, 4)
    state = a.state_dict()
    first = [a.ask(4) for _ in range(2)]
    if via == "json":
        state = json.loads(json.dumps(state))
    else:
        buf = io.BytesIO()
        torch.save(state, buf)
        state = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    b = make(seed=99)
    b.load_state_dict(state)
    assert [b.ask(4) for _ in range(2)] == first and b.pruned == a.pruned
    with pytest.raises(ValueError, match=r"missing \['audit', 'population'"):
        b.load_state_dict({"rng": random.Random(0).getstate(), "pruned": [], "seen": []})


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(objectives=()), "objectives must be one or more distinct"),
    (dict(objectives=("acc", "acc")), "objectives must be one or more distinct"),
    (dict(objectives=("acc", "cost"), maximize=("map",)), r"maximize \['map'\] are not objectives"),
    (dict(**OBJ, accuracy="cost"), r"accuracy must be one of maximize \['acc'\], got 'cost'"),
    (dict(**OBJ, min_random=0), "min_random must be >= 1, got 0"),
    (dict(**OBJ, random_ratio=1.5), r"random_ratio must be in \[0, 1\], got 1.5"),
    (dict(**OBJ, max_tries=0), "max_tries must be >= 1"),
    (dict(**OBJ, audit_every=-1), "audit_every must be >= 0"),
    (dict(**OBJ, cost=3.0), "cost must be a callable"),
    (dict(objectives=("cost",), cost=squares), "POP needs accuracy"),
    (dict(**OBJ, hv_reference={"acc": 0.0}), r"hv_reference must give exactly the objectives"),
])
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParetoEvolution(Cube(), **kwargs)


def test_bad_calls_are_refused():
    strategy = ParetoEvolution(Cube(), **OBJ)
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        strategy.ask(-1)
    with pytest.raises(ValueError, match="expected records with an 'encoding' field"):
        strategy.tell([{"status": "ok", "acc": 1.0, "cost": 1.0}])
