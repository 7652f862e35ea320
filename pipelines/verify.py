"""`open-sandwiches verify DIR`: check a built dataset against its manifest and metadata.

    open-sandwiches verify out/hamburger_sandwich/1.0.0

Reads every shard (TFRecord or ArrayRecord, checking the format's own checksums), recounts examples per shard against
`dataset_info.json`, checks each shard file's sha256 against `build_report.json` (and
the manifest's, failures.jsonl's and ATTRIBUTION.md's, taken as the build wrote them),
recounts the invariant (planned boxes = manifest rows + fetch and crop failures), and
decodes every example with the dataset's own feature spec (`features.json`, written from
schemas/examples.py) to compare it with its `manifest.parquet` row: every column the two
share (split and shard, image_id and box_index, label and label_index, mid, the box, the
JPEG's sha256, licence, author and landing URL). CRCs alone prove little: anyone can
re-frame an edited record with fresh ones. Reports missing, extra and changed examples, and
exits 0 only when everything matches and the build completed.

    open-sandwiches verify out/hamburger_sandwich/1.0.0 --against other/hamburger_sandwich/1.0.0

With `--against`, also compares the source photos of two builds by the manifests'
`source_sha256`: lists the photos whose bytes differ (or that only one build has), and
exits 1 if there are any, so a rebuild can prove it saw the same photos.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys

import pyarrow.parquet as pq

from pipelines import failures, files, shardio
from pipelines.write import (ATTRIBUTION_FILE, COMPLETED_FILE, FAILURES_FILE, MANIFEST_FILE,
                             REPORT_FILE)
from schemas import examples

DIGESTED_FILES = (MANIFEST_FILE, FAILURES_FILE, ATTRIBUTION_FILE)  # build_report's file_sha256

# Manifest columns that an example also holds (the rest, source, url, title and rotation,
# are the manifest's alone).
SHARED_COLUMNS = ("split", "shard", "label", "label_index", "mid", "xmin", "xmax", "ymin",
                  "ymax", "jpeg_sha256", "license", "author", "landing_url")
Key = tuple[str, int]


def example_row(features, record: bytes, split: str, shard: str) -> dict:
    """A serialized example as the manifest columns it shares (SHARED_COLUMNS), decoded
    with the dataset's tfds FeaturesDict; the image stays encoded, for its sha256."""
    ex = examples.decode(features, record)
    names = features[examples.LABEL].names
    label_index = int(ex[examples.LABEL])
    ymin, xmin, ymax, xmax = (float(v) for v in ex[examples.BBOX])
    text = {k: ex[k].decode("utf-8", "replace") for k in (
        examples.IMAGE_ID, examples.MID, examples.LICENSE, examples.AUTHOR, examples.LANDING_URL)}
    return {"image_id": text[examples.IMAGE_ID], "box_index": int(ex[examples.BOX_INDEX]),
            "split": split, "shard": shard, "label_index": label_index,
            "label": names[label_index] if 0 <= label_index < len(names) else None,
            "mid": text[examples.MID], "xmin": xmin, "xmax": xmax, "ymin": ymin, "ymax": ymax,
            "jpeg_sha256": hashlib.sha256(ex[examples.IMAGE]).hexdigest(),
            "license": text[examples.LICENSE], "author": text[examples.AUTHOR],
            "landing_url": text[examples.LANDING_URL]}


def read_shards(dataset_dir: str, info: dict, problems: list[str]
                ) -> tuple[dict[Key, dict], dict[str, str], int]:
    """Every example of every shard dataset_info.json lists, as example_row()s by key, and
    each shard file's sha256. Unreadable records, duplicate keys and wrong counts go into
    `problems`. Returns (rows, digests, examples read)."""
    features = examples.dataset_features(dataset_dir)
    found: dict[Key, dict] = {}
    digests: dict[str, str] = {}
    examples_read = 0
    file_format = examples.file_format_of(info)
    for split, shard, length in examples.shards_of(info):
        path = files.join_path(dataset_dir, shard)
        if not files.exists(path):
            problems.append(f"{shard}: missing")
            continue
        count = 0
        try:
            for record in shardio.read_records(path, file_format):
                count += 1
                try:
                    row = example_row(features, record, split, shard)
                except Exception as err:  # framed with valid checksums, but not our example
                    problems.append(f"{shard}: record {count} is not an example of "
                                    f"this dataset ({type(err).__name__}: {err})")
                    continue
                key = (row["image_id"], row["box_index"])
                if key in found:
                    problems.append(f"{shard}: example {key} appears twice")
                found[key] = row
        except shardio.CorruptShard as err:
            problems.append(f"{shard}: corrupt: {err}")
        digests[shard] = shardio.sha256_of(path)
        examples_read += count
        if count != length:
            problems.append(f"{shard}: {count} examples, dataset_info.json says {length}")
    return found, digests, examples_read


def check_shard_digests(report: dict, info: dict, digests: dict[str, str]) -> list[str]:
    """Each shard file's sha256 against build_report.json's `shard_sha256`. A shard the
    report does not list must be one the writer left empty (its sha256 is that of no bytes)."""
    recorded = report.get("shard_sha256")
    if not isinstance(recorded, dict):
        return [f"{REPORT_FILE} has no shard_sha256 to check the shards against"]
    problems = []
    empty = hashlib.sha256(b"").hexdigest()
    listed = {shard for _, shard, _ in examples.shards_of(info)}
    for shard in sorted(listed & set(digests)):
        if shard in recorded:
            if digests[shard] != recorded[shard]:
                problems.append(f"{shard}: sha256 {digests[shard]}, {REPORT_FILE} says "
                                f"{recorded[shard]}")
        elif digests[shard] != empty:
            problems.append(f"{shard}: holds bytes, but {REPORT_FILE} does not list it")
    problems += [f"{shard}: in {REPORT_FILE} but not in dataset_info.json"
                 for shard in sorted(set(recorded) - listed)]
    return problems


def check_files(report: dict, contents: dict[str, bytes | None]) -> list[str]:
    """manifest.parquet, failures.jsonl and ATTRIBUTION.md (`contents`, None where
    missing) against the sha256 the build took while writing them (`file_sha256`;
    reports of older builds have none)."""
    recorded_digests = report.get("file_sha256", {})
    if not isinstance(recorded_digests, dict):
        return [f"{REPORT_FILE}: file_sha256 is not a mapping of file names to sha256"]
    problems = []
    for name, recorded in sorted(recorded_digests.items()):
        if name not in DIGESTED_FILES:  # never a path of the report's choosing
            problems.append(f"{REPORT_FILE}: file_sha256 names {name!r}, not one of "
                            f"{', '.join(DIGESTED_FILES)}")
            continue
        if contents[name] is None:
            problems.append(f"{name}: missing")
            continue
        digest = hashlib.sha256(contents[name]).hexdigest()
        if digest != recorded:
            problems.append(f"{name}: sha256 {digest}, {REPORT_FILE} says {recorded}")
    return problems


def check_invariant(report: dict, manifest_rows: int, failure_lines: bytes | None) -> list[str]:
    """The build's invariant, recounted from the files: planned boxes = examples (rows of
    the manifest) + fetch and crop failures of planned boxes (records of failures.jsonl),
    with nothing lost, and as the report says."""
    inv = report.get("invariant")
    if not isinstance(inv, dict) or not all(
            isinstance(inv.get(k), int) for k in ("planned_boxes", "examples",
                                                  "fetch_and_crop_failures", "lost")):
        return [f"{REPORT_FILE} has no invariant to check (planned_boxes, examples, "
                f"fetch_and_crop_failures and lost, as whole numbers)"]
    after_plan, problems = 0, []
    for n, line in enumerate((failure_lines or b"").splitlines(), 1):
        try:
            record = json.loads(line)
            after_plan += failures.after_plan(record.get("stage"), record.get("mid"))
        except (ValueError, AttributeError):
            problems.append(f"{FAILURES_FILE} line {n} is not a failure record")
    for what, counted, said in (("examples", manifest_rows, inv.get("examples")),
                                ("fetch and crop failures", after_plan,
                                 inv.get("fetch_and_crop_failures"))):
        if counted != said:
            problems.append(f"{what}: {counted} in the files, {REPORT_FILE} says {said}")
    lost = inv["planned_boxes"] - manifest_rows - after_plan
    if lost or inv.get("lost"):
        problems.append(f"invariant: {inv.get('planned_boxes')} planned boxes, {manifest_rows} "
                        f"examples + {after_plan} failures; lost {lost} "
                        f"({REPORT_FILE} says {inv.get('lost')})")
    return problems


def _read_if_there(path: str) -> bytes | None:
    return files.read_bytes(path) if files.exists(path) else None


def changed_columns(manifest_row: dict, shard_row: dict) -> list[str]:
    """The shared columns in which an example differs from its manifest row."""
    return [c for c in SHARED_COLUMNS if manifest_row.get(c) != shard_row.get(c)]


def verify(dataset_dir: str) -> dict:
    """Check a dataset folder; returns {"ok": bool, "problems": [...], counts...}."""
    problems: list[str] = []
    if not files.exists(files.join_path(dataset_dir, COMPLETED_FILE)):
        problems.append("no COMPLETED marker: the build did not finish")
    info = json.loads(files.read_bytes(files.join_path(dataset_dir, "dataset_info.json")))
    contents = {name: _read_if_there(files.join_path(dataset_dir, name))
                for name in DIGESTED_FILES}  # each read once: parsed and hashed
    if contents[MANIFEST_FILE] is None:
        raise FileNotFoundError(files.join_path(dataset_dir, MANIFEST_FILE))
    manifest = pq.read_table(io.BytesIO(contents[MANIFEST_FILE])).to_pylist()
    expected = {(r["image_id"], r["box_index"]): r for r in manifest}
    if len(expected) != len(manifest):
        problems.append(f"manifest has {len(manifest) - len(expected)} duplicate keys")
    found, digests, examples_read = read_shards(dataset_dir, info, problems)
    report_path = files.join_path(dataset_dir, REPORT_FILE)
    if files.exists(report_path):
        try:
            report = json.loads(files.read_bytes(report_path))
        except ValueError:
            report = None
        if not isinstance(report, dict):
            problems.append(f"{REPORT_FILE} is not a build report")
            report = {}
        problems += check_shard_digests(report, info, digests)
        problems += check_files(report, contents)
        problems += check_invariant(report, len(manifest), contents[FAILURES_FILE])
    else:
        problems.append(f"no {REPORT_FILE}: the shards' sha256 cannot be checked")
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    changed = {k: changed_columns(expected[k], found[k]) for k in sorted(set(expected) & set(found))}
    changed = {k: cols for k, cols in changed.items() if cols}
    problems += [f"missing example {k}" for k in missing[:20]]
    problems += [f"extra example {k}" for k in extra[:20]]
    problems += [f"changed example {k}: " + "; ".join(
        f"{c} manifest {expected[k][c]!r}, shard {found[k][c]!r}" for c in cols)
        for k, cols in list(changed.items())[:20]]
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


def command(args) -> int:
    """`open-sandwiches verify` with parsed flags (pipelines/cli.py declares them)."""
    if not files.exists(files.join_path(args.dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{args.dataset_dir} is not a dataset written by build "
                                f"(it has no dataset_info.json)")
    result = verify(args.dataset_dir)
    if args.against:
        result["sources"] = compare_sources(args.dataset_dir, args.against)
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


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("verify", argv)


if __name__ == "__main__":
    sys.exit(main())
