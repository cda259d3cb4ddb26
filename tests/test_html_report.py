"""report.html: a self-contained page built from a run directory's files (nasx.pipelines.html_report)."""
import html
import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest
from PIL import Image

from nasx.pipelines.html_report import write_html_report

EVIL = "<script>alert(1)</script>"
N_RESULTS = 7


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _results():
    rows = []
    for i in range(N_RESULTS):
        row = {"encoding": f"[[[{i},1,sep3x3,skip,sum]],[skip],{i}]", "source": "baseline" if i == 0 else "search",
               "round": -1 if i == 0 else (i - 1) // 2, "status": "ok", "reward": -1.5 + 0.01 * i,
               "losses": {"cls": 0.3, "reg": 0.4, "ctr": 0.6}, "params": 750_000 + 10_000 * i,
               "macs": 47_000_000 + 5_000_000 * i, "latency_ms": 14.0 + i, "seconds": 3.0 + i}
        rows.append(row)
    rows[3] = {"encoding": f"[[[9,9,{EVIL},skip,sum]],[skip],3]", "source": "search", "round": 1,
               "status": "failed", "reward": None, "seconds": 0.4, "error": f"RuntimeError: shape {EVIL}"}
    return rows


def _retrained():
    return [{"name": name, "encoding": f"[[[{i},0,skip,skip,sum]],[skip],0]", "map": 0.06 + 0.005 * i,
             "metrics": {"AP": 0.06 + 0.005 * i, "AP50": 0.15 + 0.01 * i}, "params": 750_000 + i,
             "macs": 47_000_000 + i, "latency_ms": 13.9 + i, "reward": -1.56 + 0.02 * i}
            for i, name in enumerate(("baseline", "top1", "top2"))]


def _summary(r):
    return {"arch": r["encoding"], "map": r["map"], "ap50": r["metrics"]["AP50"], "macs": r["macs"],
            "params": r["params"], "latency_ms": r["latency_ms"], "proxy_reward": r["reward"]}


def _config(run):
    return {"pipeline": "nas-fcos", "data": "data/synth", "out": str(run), "budget_minutes": 14.0, "device": "cpu",
            "workers": 2, "ray_address": None, "meta_val_fraction": 0.1,
            "proxy": {"steps": 30, "lr": 0.002, "latency": True}, "strategy": "ppo", "progress": False}


def _png(path):
    img = Image.new("RGB", (160, 100), "white")
    for x in range(20, 140):  # a coloured diagonal band and a box: a few distinct colours
        for dy in range(-3, 4):
            img.putpixel((x, max(0, min(99, 90 - x // 2 + dy))), (31, 119, 180))
    for x in range(60, 90):
        for y in range(10, 30):
            img.putpixel((x, y), (255, 127, 14))
    img.save(path)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "demo-run"
    (run / "stages").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(_config(run)))
    _write_jsonl(run / "results.jsonl", _results())
    retrained = _retrained()
    _write_jsonl(run / "retrained.jsonl", retrained)
    report = {"baseline": _summary(retrained[0]), "best": _summary(retrained[2]), "searched": N_RESULTS - 1,
              "failed": 1, "strategy": "ppo", "rounds": 3, "stopped": "budget",
              "retrained": [dict(_summary(r), name=r["name"]) for r in retrained], "proxy_speedup": 1.7,
              "kendall_tau": 0.333, "kendall_tau_n": 3, "seconds": 780.0, "config": _config(run)}
    (run / "report.json").write_text(json.dumps(report))
    for name, at in (("backbone", 300.0), ("cache", 330.0), ("search", 600.0), ("retrain", 770.0), ("report", 780.0)):
        (run / "stages" / f"{name}.json").write_text(json.dumps({"finished_at_seconds": at}))
    _png(run / "pareto.png")
    (run / "best.pt").write_bytes(b"checkpoint")
    return run


def _table(page, id):
    m = re.search(rf'<table[^>]*id="{id}".*?</table>', page, re.S)
    assert m, f"no table id={id}"
    return m.group(0)


def test_page_is_self_contained_escaped_and_complete(run_dir):
    path = write_html_report(run_dir)
    assert path == run_dir / "report.html" and path.exists()
    assert not (run_dir / "report.html.tmp").exists()
    page = path.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 1
    archs = _table(page, "archs")
    assert archs.count("<tr") == N_RESULTS + 1  # one per results.jsonl line plus the header
    assert archs.count('<tr class="failed"') == 1
    assert "RuntimeError: shape" in archs
    assert EVIL not in page and html.escape(EVIL) in page
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert "nas-fcos" in page and "demo-run" in page
    assert _table(page, "retrained").count("<tr") == 3 + 1
    for text in ("Baseline vs best", "0.333 over 3", "1.7x", "13.0", "Time per stage", "4.50"):  # search: 270 s
        assert text in page, text
    assert "nasx search nas-fcos --data data/synth --out " in page
    assert "--budget-minutes 14.0" in page and "--workers 2" in page and "--proxy-steps 30" in page
    assert "--meta-val 0.1" in page  # the pipeline's own flag name, not --meta-val-fraction
    assert "--quiet" in page and "--ray-address" not in page and "--proxy-latency" not in page
    assert "nasx eval --data data/synth --checkpoint " in page and "best.pt" in page


def test_running_search_renders(tmp_path):
    run = tmp_path / "running"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"pipeline": "nas-fcos", "data": "d", "out": str(run)}))
    rows = _results()[:4]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"encoding": "cut sh')
    page = write_html_report(run).read_text()
    assert _table(page, "archs").count("<tr") == 4 + 1
    assert "running" in page and "Baseline vs best" not in page and "data:image" not in page
    assert "best.pt" not in page


def test_reproduce_command_parses_back_to_the_settings(tmp_path):
    """The page's ``nasx search`` line, given to the real flag parser, gives config.json again."""
    import argparse
    import dataclasses

    from nasx.pipelines.config_flags import add_config_arguments, config_from_args
    from nasx.pipelines.nas_fcos import NasFcosConfig

    run = tmp_path / "my run"
    cfg = NasFcosConfig(data="data/my synth", out=str(run), budget_minutes=3.5, workers=2, meta_val_fraction=0.2,
                        strategy="random", max_archs=12, proxy={"steps": 7, "latency": False}, progress=False)
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"pipeline": "nas-fcos", **dataclasses.asdict(cfg)}))
    page = write_html_report(run).read_text()
    line = next(ln for ln in html.unescape(re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)).splitlines()
                if ln.startswith("nasx search"))
    argv = shlex.split(line)
    assert argv[:3] == ["nasx", "search", "nas-fcos"]
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, NasFcosConfig)
    assert dataclasses.asdict(config_from_args(NasFcosConfig, parser.parse_args(argv[3:]))) == dataclasses.asdict(cfg)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium / chromium-browser / google-chrome on PATH: cannot check how report.html renders")


def test_chromium_renders_page(run_dir, tmp_path):
    browser = _chromium()
    url = write_html_report(run_dir).resolve().as_uri()
    shot = tmp_path / "report_html.png"
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400",
              f"--user-data-dir={tmp_path / 'profile'}"]
    start = time.monotonic()
    subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    print(f"chromium: {time.monotonic() - start:.1f} s for the screenshot and the DOM")
    assert shot.exists()
    with Image.open(shot) as img:
        assert img.size == (1280, 2400)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20, "the screenshot is blank"
    if os.environ.get("NASX_TEST_ARTIFACTS"):
        out = os.environ["NASX_TEST_ARTIFACTS"]
        os.makedirs(out, exist_ok=True)
        shutil.copy(shot, out)
    archs = _table(dom, "archs")
    assert archs.count("<tr") == N_RESULTS + 1
    assert "<img" in dom and "data:image/png;base64," in dom
    assert 'class="sort"' in archs  # the sorting script ran and marked the headers

    # a click on "reward" twice: descending by value, the failed row (no reward) last
    clicked = tmp_path / "clicked.html"
    clicked.write_text(write_html_report(run_dir).read_text().replace(
        "</body>", "<script>var h = document.querySelectorAll('#archs th')[4]; h.click(); h.click();</script></body>"))
    dom = subprocess.run(common + ["--dump-dom", clicked.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    rewards = [float(v) if v else None for v in re.findall(
        r"<tr[^>]*>(?:<td[^>]*>[^<]*</td>){4}<td[^>]*>([^<]*)</td>", _table(dom, "archs"))]
    ok = [r for r in rewards if r is not None]
    assert len(rewards) == N_RESULTS and rewards[-1] is None and ok == sorted(ok, reverse=True), rewards
