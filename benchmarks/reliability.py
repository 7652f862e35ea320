"""Benchmark: the fault matrix, the retry budget, boxes lost, and memory at high concurrency.

Builds a 240-photo catalog whose originals fail for 20% of photos (every fault kind of the
demo server, mixed), at --fetch_concurrency 64 and 256, each build in its own process
(peak memory is its own), against the server in this process (which counts requests).
Prints: fault kinds x outcomes (photos, recovered, failed with the expected reason),
requests made vs the budget, boxes lost (must be 0), and peak memory. Asserts nothing.

    python -m benchmarks.reliability [--photos 240]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

from benchmarks import common
from pipelines.demo import catalog, server


def child(args) -> dict:
    from pipelines import build
    report = build.run(json.loads(args.argv))
    return {"report": report, **common.peak_rss_mib()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=240)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--argv", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args), default=str))
        return 0
    work = tempfile.mkdtemp(prefix="bench_reliability_")
    os.makedirs(os.path.join(work, "photos"))
    srv = server.ImageServer(os.path.join(work, "photos"), hang_s=3.0)
    files = catalog.write_catalog(work, ["Hamburger", "Sandwich"], args.photos, seed=13,
                                  photos=True, photo_size=(640, 480), base_url=srv.base_url)
    import pandas as pd
    ids = list(pd.read_csv(files.images_csv).ImageID)
    kinds = server.FAULTS
    faults = {i: kinds[k % len(kinds)] for k, i in enumerate(ids[: len(ids) // 5])}
    results = {}
    with srv:
        for concurrency in (64, 256):
            srv.reset(faults=faults)
            out = os.path.join(work, f"out{concurrency}")
            argv = ["--classes", "Hamburger", "Sandwich", *files.flags(), "--output_dir", out,
                    "--allow_private_network", "--cache_dir", os.path.join(work, f"cache{concurrency}"),
                    "--image_source", "original", "--fetch_timeout_s", "1", "--fetch_attempts", "2",
                    "--fetch_backoff_s", "0.05", "--max_image_bytes", "3000000",
                    "--fetch_concurrency", str(concurrency), "--fetch_per_host", str(concurrency),
                    "--image_size", "96", "--no_previews"]
            got = common.run_child(["-m", "benchmarks.reliability", "--child", "--argv",
                                    json.dumps(argv)])
            results[concurrency] = (got, srv.total_requests(), out)
    got, requests, out = results[64]
    report = got["report"]
    folder = os.path.join(out, report["dataset"], report["version"])
    failures = [json.loads(line) for line in open(os.path.join(folder, "failures.jsonl"))]
    by_image = {f["image_id"]: f["reason"] for f in failures if f["stage"] == "fetch"}
    manifest = pd.read_parquet(os.path.join(folder, "manifest.parquet"))
    cropped = set(manifest.image_id)
    print(f"\n{len(ids)} photos, {len(faults)} with a fault on the original (20%), "
          f"--fetch_attempts 2\n")
    print(f"{'fault':<15}{'photos':>7}{'recovered':>10}{'failed as':>22}{'expected':>16}")
    for kind in kinds:
        mine = [i for i, k in faults.items() if k == kind]
        recovered = sum(1 for i in mine if i in cropped)
        reasons = collections.Counter(by_image.get(i, "-") for i in mine if i not in cropped)
        expected = server.FAULT_OUTCOMES[kind][0] or "recovered"
        shown = ", ".join(f"{r} {n}" for r, n in reasons.items()) or "-"
        print(f"{kind:<15}{len(mine):>7}{recovered:>10}{shown:>22}{expected:>16}")
    planned = cropped | {f["image_id"] for f in failures if f["stage"] in ("fetch", "crop")}
    budget = sum(server.FAULT_OUTCOMES[faults[i]][1] if i in faults else 1 for i in planned)
    print(f"\nrequests made {requests}, budget {budget} (1 per healthy photo, the fault's "
          f"retry budget otherwise)")
    for concurrency, (got, requests, _) in results.items():
        inv = got["report"]["invariant"]
        print(f"concurrency {concurrency:>3}: boxes planned {inv['planned_boxes']}, examples "
              f"{inv['examples']}, failures {inv['fetch_and_crop_failures']}, lost {inv['lost']}; "
              f"peak memory {got['peak_rss_mib']:.0f} MiB; {got['report']['seconds']:.1f} s; "
              f"requests {requests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
