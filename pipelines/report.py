"""Reading a finished job's Beam metrics, fingerprinting a build, printing its report."""
from __future__ import annotations

import collections
import hashlib
import json

from apache_beam.metrics.metric import MetricsFilter

from pipelines import files
from schemas.records import SPLITS

# Flags that say where things go on this machine, not what the dataset is.
_LOCAL_FLAGS = ("output_dir", "cache_dir", "export_folders", "overwrite", "config")


def write_part(path: str, data: dict) -> None:
    """What a job's last step knows of its report, for the launcher to finish: the job's
    counters exist only once it has ended, so the report itself is written once, after."""
    files.write_bytes(path, json.dumps(data).encode("utf-8"))


def take_part(path: str) -> dict:
    """Read a report part and remove it."""
    data = json.loads(files.read_bytes(path))
    files.remove(path)
    return data


def metrics_dict(result) -> dict:
    """Counters as {'namespace/name': value} and timing distributions as
    {'namespace/name': {'count', 'sum', 'mean', 'max'}}, from a finished pipeline."""
    query = result.metrics().query(MetricsFilter())
    counters: dict[str, int] = collections.Counter()
    for c in query["counters"]:
        counters[f"{c.key.metric.namespace}/{c.key.metric.name}"] += c.committed or c.attempted or 0
    timings = {}
    for d in query["distributions"]:
        r = d.committed or d.attempted
        if r is not None and r.count:
            timings[f"{d.key.metric.namespace}/{d.key.metric.name}"] = {
                "count": r.count, "sum": r.sum, "mean": round(r.sum / r.count, 2), "max": r.max}
    return {"counters": dict(sorted(counters.items())), "timings": dict(sorted(timings.items()))}


def file_checksum(path: str) -> str:
    """sha256 of a local file; the filesystem's own checksum for remote ones (gs:// md5)."""
    if files.is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        return f"{path.split('://')[0]}:{FileSystems.checksum(path)}"
    digest = hashlib.sha256()
    with files.open_binary(path) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def fingerprint(config: dict, inputs: list[str]) -> dict:
    """What identifies a build: its flags (less machine-local paths) and its inputs' checksums."""
    portable = {k: v for k, v in sorted(config.items()) if k not in _LOCAL_FLAGS}
    checksums = {path: file_checksum(path) for path in inputs}
    blob = json.dumps({"config": portable, "inputs": sorted(checksums.values())}, sort_keys=True)
    return {"inputs": checksums, "fingerprint": hashlib.sha256(blob.encode()).hexdigest()}


# Packages whose versions can change a dataset's bytes (decoding, resizing, encoding, framing).
_BYTE_SHAPING_PACKAGES = ("apache-beam", "numpy", "pillow", "simplejpeg", "tensorflow-datasets")


def environment() -> dict:
    """What besides flags and inputs shapes the bytes: a rebuild that must match byte for byte
    needs the same versions and JPEG decoder (pipelines/crop.py explains the two decoders).
    Read on the machine that launches the job; remote workers install the same setup.py."""
    import importlib.metadata
    import platform

    from pipelines import crop
    versions = {}
    for name in _BYTE_SHAPING_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions,
            "jpeg_decoder": crop.decoder_name()}


def tool() -> dict:
    """This tool's name and version (pipelines.__version__, the one setup.py installs)."""
    from pipelines import __version__
    return {"name": "open-sandwiches", "version": __version__}


def split_table(title: str, counts: dict[str, dict[str, int]]) -> list[str]:
    """Lines of a per-label table of counts by split and in total (plan's and build's)."""
    columns = SPLITS + ("total",)
    width = max([len(label) for label in counts] + [5])
    head = f"{'label':<{width}}  " + "  ".join(f"{s:>10}" for s in columns)
    return [title, head, "-" * len(head)] + [
        f"{label:<{width}}  " + "  ".join(f"{row[s]:>10}" for s in columns)
        for label, row in counts.items()] + [""]


def format_report(report: dict) -> str:
    """The build report as plain-text tables."""
    out = split_table("examples per class and split", report["examples"])
    for split, info in report["splits"].items():
        out.append(f"{split}: {info['examples']} examples in {info['shards']} shard(s), "
                   f"{info['bytes'] / 2**20:.1f} MiB")
    inv = report["invariant"]
    out.append(f"boxes planned {inv['planned_boxes']} = examples {inv['examples']} + fetch/crop "
               f"failures {inv['fetch_and_crop_failures']}; lost: {inv['lost']}")
    if report["failures_by_stage_and_reason"]:
        out.append("failures by stage/reason:")
        out += [f"  {k}: {v}" for k, v in report["failures_by_stage_and_reason"].items()]
    if "seconds" in report:
        out.append(f"built in {report['seconds']:.1f} s; fingerprint {report['fingerprint'][:16]}")
    return "\n".join(out)
