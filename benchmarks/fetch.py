"""Benchmark: our fetch stage vs a sequential `requests.get` loop, same 500 URLs.

A local ImageServer adds 100 ms to every response (a far-away photo host). Side by side
in one script:

- baseline: `for url in urls: requests.get(url)`, the loop a 50-line script would write;
- ours: the fetch stage's DoFn (batch of 500 on its thread pool and guarded connection
  pool, default --fetch_concurrency 64), each run with a fresh cache;
- ours, whole Beam job: the same stage inside a pipeline, start-up included.

Target: ours >= 40x the baseline's photos/s. Prints a table; asserts nothing.

    python -m benchmarks.fetch [--photos 500] [--latency_ms 100]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import apache_beam as beam
import requests

from pipelines import fetch, fetch_stage, options
from pipelines.demo import catalog

PLACEHOLDER = "http://127.0.0.1:1"


def _tasks(files, n: int):
    from pipelines import rows
    from schemas.records import ImageTask
    return [ImageTask(row, (), "train") for row in rows.load_image_rows(files.images_csv)][:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=500)
    p.add_argument("--latency_ms", type=float, default=100.0)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench_fetch_")
    files = catalog.write_catalog(work, ["Hamburger", "Sandwich"], args.photos, seed=5,
                                  photos=True, photo_size=(640, 480), base_url=PLACEHOLDER)
    # The server runs in its own process, as a real host would: in this process it would
    # compete with the client for the GIL.
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.demo.server", work, "--port", "0",
                             "--latency_ms", str(args.latency_ms)], stdout=subprocess.PIPE, text=True)
    try:
        base_url = proc.stdout.readline().split(" on ")[1].split()[0]
        tasks = [dataclasses.replace(t, image=dataclasses.replace(
            t.image, original_url=t.image.original_url.replace(PLACEHOLDER, base_url)))
            for t in _tasks(files, args.photos)]
        urls = [t.image.original_url for t in tasks]
        start = time.perf_counter()
        sizes = [len(requests.get(u, timeout=30).content) for u in urls]
        base_s = time.perf_counter() - start

        def config(cache):
            return fetch.FetchConfig(image_source=("original",), allow_private_network=True,
                                     cache_dir=os.path.join(work, cache),
                                     fetch_concurrency=args.concurrency,
                                     fetch_per_host=args.concurrency)

        dofn = fetch_stage._FetchBatch(config("cache_dofn"))
        dofn.setup()
        start = time.perf_counter()
        got = list(dofn.process(tasks))
        ours_s = time.perf_counter() - start
        dofn.teardown()
        assert len(got) == len(tasks) and sum(len(g.data) for g in got) == sum(sizes)

        start = time.perf_counter()
        with beam.Pipeline(options.LOCAL_RUNNER) as pipe:
            photos, _ = (pipe | beam.Create(tasks)
                         | fetch_stage.FetchImages(config("cache_pipeline")))
            _ = photos | beam.combiners.Count.Globally()
        job_s = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    n = len(urls)
    print(f"\n{n} photos ({sum(sizes) / n / 1024:.0f} KiB each), {args.latency_ms:.0f} ms added "
          f"latency, concurrency {args.concurrency}\n")
    print(f"{'step':<40}{'seconds':>9}{'photos/s':>10}{'ratio':>8}")
    for label, secs in (("sequential requests.get loop", base_s),
                        ("fetch stage (DoFn on its pools)", ours_s),
                        ("fetch stage in a Beam job (start-up incl.)", job_s)):
        print(f"{label:<40}{secs:>9.2f}{n / secs:>10.1f}{base_s / secs:>8.1f}")
    print("\ntarget: fetch stage >= 40x the sequential loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
