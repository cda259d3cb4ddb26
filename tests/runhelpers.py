"""Running a search command as a user would: killed with SIGKILL mid-run, then resumed."""
import json
import os
import signal
import subprocess
import time

from nasx.data.synth import SynthConfig, write_synth_dataset


def tiny_synth(tmp_path_factory, *, train: int, val: int, seed: int = 3):
    """A tiny embedded dataset (64 px images, at most 3 objects each) in a fresh temporary folder."""
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(root, train=train, val=val, seed=seed, workers=0, config=SynthConfig(size=64, max_objects=3))
    return root


def start_and_kill(cmd, env, log, ready) -> None:
    """Start ``cmd``, SIGKILL it (and its process group: a local Ray cluster too) as soon as
    ``ready()`` is true; fails if the run ended first."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        alive = proc.poll() is None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert alive, f"the run ended before it could be killed: {log.read_text()[-2000:]}"


def killed_then_resumed(cmd, out, env, log, *, min_records: int = 3):
    """Start ``cmd``, SIGKILL it once ``min_records`` are in results.jsonl, run it again to the end;
    returns the records there before the kill and after the end, having checked that nothing was
    lost or evaluated twice."""
    results = out / "results.jsonl"
    start_and_kill(cmd, env, log, lambda: results.exists() and len(results.read_text().splitlines()) >= min_records)
    before = [json.loads(line) for line in results.read_text().splitlines() if line.strip().endswith("}")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    encodings = [r["encoding"] for r in records]
    assert len(encodings) == len(set(encodings))  # nothing evaluated twice
    assert encodings[: len(before)] == [r["encoding"] for r in before]  # nothing lost
    return before, records
