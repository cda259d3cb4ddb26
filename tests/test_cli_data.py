"""``nasx data synth`` / ``nasx data preview`` end to end, and the command entry points."""
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nasx.cli import build_parser, main
from nasx.data import synth_dataset


def test_synth_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["data", "synth", "--out", str(out), "--train", "5", "--val", "3", "--size", "96",
                 "--seed", "2", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "seed 2, 96x96" in printed
    assert "train      5 images" in printed and "instances_val.json" in printed
    ds = synth_dataset(out, "val")
    assert len(ds) == 3 and ds[0][0].shape == (3, 96, 96)
    info = json.loads((out / "annotations" / "instances_train.json").read_text())["info"]
    assert info["seed"] == 2 and info["config"]["size"] == 96


def test_synth_refuses_non_empty_dir_unless_forced(tmp_path, capsys):
    (tmp_path / "x").write_text("")
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "1", "--workers", "0"]) == 1
    assert f"nasx data: error: write_synth_dataset: {tmp_path} is not empty" in capsys.readouterr().err
    assert not (tmp_path / "annotations").exists()
    assert main(["data", "synth", "--out", str(tmp_path), "--train", "2", "--val", "1", "--workers", "0",
                 "--force", "--format", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["000001.png", "000002.png"]


def test_preview_draws_a_sheet(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path), "--train", "0", "--val", "5", "--workers", "0"])
    assert main(["data", "preview", "--data", str(tmp_path), "--count", "5", "--cols", "3", "--scale", "2"]) == 0
    sheet = Image.open(tmp_path / "preview_val.png")
    assert sheet.size == (3 * (256 + 4), 2 * (256 + 4))
    assert "drew 5 images" in capsys.readouterr().out


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["data", "synth"])
    assert info.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "synth", "--out", "x", "--train", "many"])


def test_python_dash_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["nasx", "data", "synth", "--help"])
    sys.modules.pop("nasx.__main__", None)
    with pytest.raises(SystemExit) as info:
        runpy.run_module("nasx", run_name="__main__")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--train N" in out and "--seed K" in out


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "nasx"
    if not script.exists():
        pytest.skip("the nasx console script is installed by pip install; not in this environment")
    run = subprocess.run([str(script), "data", "synth", "--out", str(tmp_path), "--train", "1", "--val", "1",
                          "--workers", "0"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "wrote the nasx synthetic dataset" in run.stdout
    assert (tmp_path / "annotations" / "instances_train.json").exists()
