"""`open-sandwiches verify DIR`: check a built dataset against its manifest and metadata.

    open-sandwiches verify out/hamburger_sandwich/1.0.0

Reads every shard (checking each record's CRCs), recounts examples per shard against
`dataset_info.json`, and recomputes every example's JPEG sha256 against
`manifest.parquet`. Reports missing, extra and changed examples, and exits 0 only when
everything matches and the build completed.

    open-sandwiches verify out/hamburger_sandwich/1.0.0 --against other/hamburger_sandwich/1.0.0

With `--against`, also compares the source photos of two builds by the manifests'
`source_sha256`: lists the photos whose bytes differ (or that only one build has), and
exits 1 if there are any, so a rebuild can prove it saw the same photos.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys

import pyarrow.parquet as pq

from pipelines import files, tfrecord
from pipelines.write import COMPLETED_FILE, MANIFEST_FILE
from schemas import examples


def verify(dataset_dir: str) -> dict:
    """Check a dataset folder; returns {"ok": bool, "problems": [...], counts...}."""
    import tensorflow as tf  # only to parse tf.train.Example protos

    problems: list[str] = []
    if not files.exists(files.join_path(dataset_dir, COMPLETED_FILE)):
        problems.append("no COMPLETED marker: the build did not finish")
    info = json.loads(files.read_bytes(files.join_path(dataset_dir, "dataset_info.json")))
    manifest = pq.read_table(io.BytesIO(files.read_bytes(
        files.join_path(dataset_dir, MANIFEST_FILE)))).to_pylist()
    expected = {(r["image_id"], r["box_index"]): (r["shard"], r["jpeg_sha256"]) for r in manifest}
    if len(expected) != len(manifest):
        problems.append(f"manifest has {len(manifest) - len(expected)} duplicate keys")
    found: dict[tuple[str, int], tuple[str, str]] = {}
    examples_read = 0
    for split, shard, length in examples.shards_of(info):
        path = files.join_path(dataset_dir, shard)
        if not files.exists(path):
            problems.append(f"{shard}: missing")
            continue
        count = 0
        try:
            with files.open_binary(path) as f:
                for record in tfrecord.read_records(f):
                    feats = tf.train.Example.FromString(record).features.feature
                    key = (feats[examples.IMAGE_ID].bytes_list.value[0].decode(),
                           int(feats[examples.BOX_INDEX].int64_list.value[0]))
                    digest = hashlib.sha256(feats[examples.IMAGE].bytes_list.value[0]).hexdigest()
                    if key in found:
                        problems.append(f"{shard}: example {key} appears twice")
                    found[key] = (shard, digest)
                    count += 1
        except tfrecord.CorruptRecord as err:
            problems.append(f"{shard}: corrupt: {err}")
        examples_read += count
        if count != length:
            problems.append(f"{shard}: {count} examples, dataset_info.json says {length}")
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    problems += [f"missing example {k}" for k in missing[:20]]
    problems += [f"extra example {k}" for k in extra[:20]]
    problems += [f"changed example {k}: manifest {expected[k]}, shard {found[k]}"
                 for k in changed[:20]]
    return {"ok": not problems, "problems": problems, "examples_in_manifest": len(expected),
            "examples_read": examples_read, "missing": len(missing), "extra": len(extra),
            "changed": len(changed)}


def _source_digests(dataset_dir: str) -> dict[str, tuple[str, str]]:
    """ImageID -> (source, source_sha256) from a dataset's manifest."""
    table = pq.read_table(io.BytesIO(files.read_bytes(files.join_path(dataset_dir, MANIFEST_FILE))))
    if "source_sha256" not in table.column_names:
        raise ValueError(f"{dataset_dir}: its manifest has no source_sha256 column (built "
                         f"before it was recorded); rebuild it to compare source photos")
    return {r["image_id"]: (r["source"], r["source_sha256"])
            for r in table.select(["image_id", "source", "source_sha256"]).to_pylist()}


def compare_sources(dataset_dir: str, other_dir: str) -> dict:
    """Which source photos differ between two builds: {"same": bool, "differ": [...],
    "only_here": [...], "only_there": [...], "photos": n}; `differ` holds
    (image_id, (source, sha256) here, (source, sha256) there)."""
    here, there = _source_digests(dataset_dir), _source_digests(other_dir)
    differ = sorted((i, here[i], there[i]) for i in set(here) & set(there) if here[i][1] != there[i][1])
    only_here, only_there = sorted(set(here) - set(there)), sorted(set(there) - set(here))
    return {"same": not (differ or only_here or only_there), "photos": len(here),
            "differ": differ, "only_here": only_here, "only_there": only_there}


def _print_comparison(other_dir: str, c: dict) -> None:
    print(f"source photos against {other_dir}: {c['photos']} here, {len(c['differ'])} "
          f"differ, {len(c['only_here'])} only here, {len(c['only_there'])} only there")
    for image_id, (src_a, sha_a), (src_b, sha_b) in c["differ"][:50]:
        print(f"  differs: {image_id}  here {src_a} {sha_a[:16]}  there {src_b} {sha_b[:16]}")
    for label in ("only_here", "only_there"):
        for image_id in c[label][:20]:
            print(f"  {label.replace('_', ' ')}: {image_id}")
    print("SAME PHOTOS" if c["same"] else "PHOTOS DIFFER")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="open-sandwiches verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir", help="<output_dir>/<name>/<version>")
    p.add_argument("--json", action="store_true")
    p.add_argument("--against", default="",
                   help="another build of the same dataset: list photos whose source bytes differ")
    args = p.parse_args(argv)
    if not os.path.isdir(args.dataset_dir) and not files.is_remote(args.dataset_dir):
        print(f"error: {args.dataset_dir} is not a folder", file=sys.stderr)
        return 2
    result = verify(args.dataset_dir)
    if args.against:
        try:
            result["sources"] = compare_sources(args.dataset_dir, args.against)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        result["ok"] = result["ok"] and result["sources"]["same"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['examples_read']} examples read, {result['examples_in_manifest']} in the "
              f"manifest; missing {result['missing']}, extra {result['extra']}, "
              f"changed {result['changed']}")
        for problem in result["problems"]:
            print(f"  problem: {problem}")
        if args.against:
            _print_comparison(args.against, result["sources"])
        print("OK" if result["ok"] else "FAILED")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
