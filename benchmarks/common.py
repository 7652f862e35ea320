"""Helpers shared by the benchmark scripts: cached inputs, timed subprocesses, reports.

Benchmarks print ratios against a baseline run side by side in the same script, because
absolute times on shared machines are not stable. They assert nothing.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("OPEN_SANDWICHES_BENCH_DATA", os.path.join(HERE, ".data"))


def full_size_tables(scale: float = 1.0, seed: int = 0):
    """The full-size synthetic V4 tables (14.6M boxes, 1.74M images at scale 1), generated
    once into benchmarks/.data and reused."""
    from pipelines.demo import catalog

    n_boxes, n_images = int(14_600_000 * scale), int(1_740_000 * scale)
    folder = os.path.join(DATA, f"full_{n_boxes}_{n_images}_{seed}")
    done = os.path.join(folder, "DONE")
    pinned = {"/m/0cdn1": int(12_000 * scale) or 1, "/m/0l515": int(12_000 * scale) or 1}
    if not os.path.exists(done):
        t = time.perf_counter()
        print(f"generating {n_boxes:,} boxes on {n_images:,} images into {folder} ...",
              flush=True)
        files = catalog.write_full_size(folder, n_boxes, n_images, seed, pinned)
        with open(done, "w") as f:
            json.dump(files.__dict__, f)
        print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    with open(done) as f:
        return catalog.CatalogFiles(**json.load(f))


def run_child(argv: list[str]) -> dict:
    """Run `python ARGV` in a fresh process and return the JSON report it prints last.

    Each measured step runs in its own process so that its peak memory is its own.
    """
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          cwd=os.path.dirname(HERE))
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> dict[str, float]:
    """Peak resident memory of this process, and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"peak_rss_mib": round(own, 1), "peak_child_rss_mib": round(children, 1)}
