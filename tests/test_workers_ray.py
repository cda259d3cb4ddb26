"""The Ray backend of nasx.search.workers: same contract and same results as the process pool."""
import os
import subprocess
import sys

import pytest
import torch

from nasx.search.workers import BACKENDS, make_workers

MISSING = "the ray backend needs Ray: pip install 'nasx[ray]' (or pip install ray)"


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch):
    from nasx.search.ray_workers import RayWorkers

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    for make in (lambda: RayWorkers(2), lambda: make_workers(2, backend="ray")):
        with pytest.raises(ImportError) as info:
            make()
        assert str(info.value) == MISSING  # one line, nothing else


def test_importing_nasx_search_does_not_import_ray():
    code = "import sys, nasx.search; assert 'ray' not in sys.modules, 'nasx.search imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_backend_names_the_choices():
    assert BACKENDS == ("auto", "inline", "process", "ray")
    with pytest.raises(ValueError, match="'bogus'.*auto, inline, process, ray"):
        make_workers(2, backend="bogus")


# Evaluators live at module level, picklable for the process pool (its spawned children get this
# process's sys.path, so they import this module). Ray workers get only the driver's working
# directory on sys.path, not tests/, so the fixture has Ray pickle this module's functions by value.
def _square(x):
    if x == 3:
        raise RuntimeError("three is bad")
    return {"value": x * x, "pid": os.getpid(), "threads": torch.get_num_threads()}


def _die(x):
    if x == 1:
        os._exit(1)  # a worker killed mid-evaluation
    return {"value": x}


def _cwd(_):
    return {"cwd": os.getcwd()}


def _train(seed):
    """A few seeded SGD steps of a tiny MLP: the same float wherever it runs with the same threads."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    x, y = torch.randn(256, 16), torch.randn(256, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return {"loss": loss.item(), "threads": torch.get_num_threads()}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_ray_runs_everything_and_records_failures(ray_cluster):
    from nasx.search.ray_workers import RayWorkers

    with make_workers(2, backend="ray", threads_per_worker=1) as pool:
        assert isinstance(pool, RayWorkers) and (pool.workers, pool.threads) == (2, 1)
        out = list(pool.map_unordered(_square, [0, 1, 2, 3, 4, 5]))
        assert list(pool.map_unordered(_square, [])) == []
    assert ray_cluster.is_initialized()  # a cluster it did not start is left running
    assert sorted(i for i, _ in out) == [0, 1, 2, 3, 4, 5]  # each item once
    out = dict(out)
    assert out[3]["status"] == "failed" and out[3]["error"] == "RuntimeError: three is bad"
    assert "three is bad" in out[3]["traceback"]
    assert [out[i]["value"] for i in (0, 1, 2, 4, 5)] == [0, 1, 4, 16, 25]
    assert all(out[i]["pid"] != os.getpid() and out[i]["threads"] == 1 for i in (0, 1, 2, 4, 5))
    with pytest.raises(ValueError, match="asks for 3 CPUs.*more than 2"):  # would never be scheduled
        make_workers(1, backend="ray", threads_per_worker=3)


def test_ray_tasks_run_in_the_drivers_working_directory(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths (--data, --out) must mean the same in the tasks
    with make_workers(2, backend="ray", threads_per_worker=1) as pool:
        out = dict(pool.map_unordered(_cwd, [0, 1]))
    assert {r["cwd"] for r in out.values()} == {str(tmp_path)}


def test_ray_retries_a_dead_worker_alone_and_records_only_it(ray_cluster):
    with make_workers(2, backend="ray", threads_per_worker=1) as pool:
        out = dict(pool.map_unordered(_die, [0, 1, 2, 3]))
    assert sorted(out) == [0, 1, 2, 3]
    assert out[1]["status"] == "failed"
    assert out[1]["error"].startswith("RuntimeError: the worker process died while evaluating this item (")
    assert [out[i]["value"] for i in (0, 2, 3)] == [0, 2, 3]  # only the item that killed its worker fails


def test_ray_and_process_backends_give_the_same_results(ray_cluster):
    seeds = [0, 1, 2]
    results = {}
    for backend in ("process", "ray"):
        with make_workers(2, backend=backend, threads_per_worker=1) as pool:
            results[backend] = dict(pool.map_unordered(_train, seeds))
    assert all(results["ray"][i]["threads"] == 1 for i in range(len(seeds)))
    assert results["ray"] == results["process"]
