"""Helpers for tests that kill a training subprocess and read what it left."""
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def history(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "history.json")) as f:
        return json.load(f)


def start_killed_run(argv: list[str], backup_metadata: str, log_path: str) -> None:
    """Run `open-sandwiches train ARGV` in a subprocess and SIGKILL it as soon as its
    backup holds a finished epoch (the file BackupAndRestore writes after the weights)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "train", *argv],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not os.path.exists(backup_metadata) and proc.poll() is None:
            assert time.monotonic() < deadline, "no epoch finished in 300 s"
            time.sleep(0.01)
        finished_early = proc.poll() is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not finished_early, open(log_path).read()[-3000:]


def resumed_epoch(model_dir: str) -> int:
    """N of train.log's one "resuming from epoch N" line; checks the next is epoch N + 1."""
    lines = open(os.path.join(model_dir, "train.log")).read().splitlines()
    [(i, n)] = [(i, int(m.group(1))) for i, line in enumerate(lines)
                if (m := re.match(r"resuming from epoch (\d+) ", line))]
    assert lines[i + 1].startswith(f"epoch {n + 1}/"), lines
    return n
