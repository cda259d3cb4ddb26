"""ParetoArchive: front, ranks, crowding, hypervolume, NSGA-II selection, JSON, plot."""
import json
import math

import pytest
import torch

from nasx.ops import _reference as ref
from nasx.search import ParetoArchive


def _archive(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    archive = ParetoArchive(objectives=("mAP", "latency_ms"), maximize=("mAP",))
    lat = torch.rand(n, generator=g, dtype=torch.float64) * 60 + 10
    m_ap = 20 + 15 * (1 - torch.exp(-lat / 25)) + torch.rand(n, generator=g, dtype=torch.float64) * 4
    for i in range(n):
        archive.add(f"arch_{i}", {"mAP": float(m_ap[i]), "latency_ms": float(lat[i])}, {"epochs": 12})
    return archive


def test_front_ranks_crowding_follow_the_ops_with_maximised_objective():
    archive = _archive()
    x = archive.objectives(minimised=True)
    assert torch.equal(x[:, 0], -archive.objectives()[:, 0])
    ranks = ref.non_dominated_sort(x)
    assert torch.equal(archive.ranks(), ranks)
    assert torch.equal(archive.crowding(), ref.crowding_distance(x, ranks))
    front = archive.front_indices()
    assert sorted(front) == [i for i in range(len(archive)) if ranks[i] == 0]
    m_ap = [archive[i].objectives[0] for i in front]
    assert m_ap == sorted(m_ap, reverse=True)  # best mAP first
    # No front entry is beaten in both objectives by any entry.
    for i in front:
        a = archive[i].objectives
        assert not any(b[0] >= a[0] and b[1] <= a[1] and b != a for b in (e.objectives for e in archive.entries))


def test_hypervolume_in_natural_units():
    archive = ParetoArchive(objectives=("mAP", "latency_ms"), maximize=("mAP",))
    archive.add("a", (30.0, 20.0))
    archive.add("b", (35.0, 40.0))
    archive.add("c", (28.0, 50.0))  # dominated by a
    # Reference: mAP 20, latency 60: boxes (30-20)x(60-20) and (35-20)x(60-40), overlap (30-20)x(60-40).
    assert archive.hypervolume({"mAP": 20.0, "latency_ms": 60.0}) == 10 * 40 + 15 * 20 - 10 * 20
    assert ParetoArchive(("a", "b")).hypervolume([1.0, 1.0]) == 0.0


def test_select_is_nsga2_survival():
    archive = _archive(60, seed=3)
    x = archive.objectives(minimised=True)
    ranks, cd = ref.non_dominated_sort(x), ref.crowding_distance(x, ref.non_dominated_sort(x))
    chosen = archive.select(25)
    assert len(chosen) == len(set(chosen)) == 25
    worst = max(int(ranks[i]) for i in chosen)
    # Every better front is taken whole; the cut front keeps its most isolated members.
    assert all(i in chosen for i in range(len(archive)) if ranks[i] < worst)
    kept = [float(cd[i]) for i in chosen if ranks[i] == worst]
    dropped = [float(cd[i]) for i in range(len(archive)) if ranks[i] == worst and i not in chosen]
    assert not dropped or min(kept) >= max(dropped)
    assert archive.select(0) == [] and sorted(archive.select(1000)) == list(range(len(archive)))


def test_save_load_roundtrip_and_atomic(tmp_path):
    archive = _archive(10)
    path = archive.save(tmp_path / "run" / "archive.json")
    loaded = ParetoArchive.load(path)
    assert loaded.entries == archive.entries and loaded.maximize == archive.maximize
    assert loaded.objective_names == archive.objective_names
    # A failed write (here: the disk write raises) leaves the previous file as it was, and no temp file.
    before = path.read_text()
    archive.add("bad", (1.0, 2.0))

    class Boom(Exception):
        pass

    import os

    real_fsync = os.fsync
    os.fsync = lambda fd: (_ for _ in ()).throw(Boom())
    try:
        with pytest.raises(Boom):
            archive.save(path)
    finally:
        os.fsync = real_fsync
    assert path.read_text() == before and sorted(p.name for p in path.parent.iterdir()) == ["archive.json"]
    assert json.loads(before)["format"] == "nasx.ParetoArchive/1"


def test_bad_input_is_rejected_and_leaves_archive_unchanged():
    archive = ParetoArchive(objectives=("mAP", "latency_ms"), maximize=("mAP",))
    with pytest.raises(ValueError, match="objectives contain NaN"):
        archive.add("x", (math.nan, 1.0))
    with pytest.raises(ValueError, match="expected 2 objectives"):
        archive.add("x", (1.0,))
    with pytest.raises(ValueError, match=r"objectives lack \['latency_ms'\]"):
        archive.add("x", {"mAP": 1.0})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        archive.add(object(), (1.0, 2.0))
    with pytest.raises(ValueError, match="are not objectives"):
        ParetoArchive(("a", "b"), maximize=("c",))
    assert len(archive) == 0 and archive.front() == [] and archive.select(3) == []


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    archive = _archive(80, seed=5)
    out = archive.plot(tmp_path / "front.png", baselines={"baseline": (45.0, 30.0)}, title="SM-NAS stage 2")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ValueError, match="not an objective"):
        archive.plot(tmp_path / "x.png", x="flops")
