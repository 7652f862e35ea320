"""Every flag of `plan` and `build`, in one PipelineOptions subclass.

Beam's own flags (`--runner`, `--direct_num_workers`, Dataflow and Flink flags) pass
straight through; ours are snake_case like Beam's.

    open-sandwiches plan --classes Hamburger Sandwich --bbox_csv boxes.csv \
        --images_csv images.csv --output_dir out/plan
"""
from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import crop, csvscan, fetch, join, rows
from schemas import openimages

# Beam's DirectRunner first tries to download the Prism runner binary from the internet;
# FnApiRunner is what it falls back to for batch jobs, so we go there directly: no network
# at start-up, and --direct_running_mode / --direct_num_workers still apply.
LOCAL_RUNNER = "FnApiRunner"


class OpenSandwichesOptions(PipelineOptions):
    """Flags of the plan and build pipelines."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        g = parser.add_argument_group("classes")
        g.add_argument("--classes", nargs="+", default=[],
                       help="Class names or MIDs, e.g. --classes Hamburger Sandwich. "
                            "Quote names with spaces. The order is the label order.")
        g.add_argument("--include_subclasses", action="store_true",
                       help="Add each class's Subcategory descendants (never Parts).")
        g.add_argument("--exclude", nargs="+", default=[],
                       help="Classes removed (with their descendants) from the expansion.")
        g.add_argument("--relabel_to_parent", action="store_true",
                       help="Label descendants as the class you asked for.")
        g.add_argument("--version", choices=openimages.VERSIONS, default="v7",
                       help="Open Images version whose class names label the data.")
        g.add_argument("--class_descriptions", default=None,
                       help="Class list CSV (default: the packaged list of --version).")
        g.add_argument("--hierarchy", default=None,
                       help="bbox_labels_600_hierarchy.json (default: the packaged copy).")

        g = parser.add_argument_group("tables")
        g.add_argument("--bbox_csv", nargs="+", default=[],
                       help="Box tables (local paths or gs://, s3://... URLs).")
        g.add_argument("--images_csv", nargs="+", default=[],
                       help="Image tables with URLs, licences and Rotation.")
        g.add_argument("--split", default="", choices=("", "train", "validation", "test", "all"),
                       help="Instead of --bbox_csv/--images_csv: use the official tables of "
                            "--version for this split, downloaded into --metadata_cache.")
        g.add_argument("--metadata_base_url", default="https://storage.googleapis.com/openimages",
                       help="Where the official metadata files are (a mirror, say).")
        g.add_argument("--metadata_cache", default="",
                       help="Metadata download cache (default ~/.cache/open-sandwiches/metadata).")
        g.add_argument("--scan_range_mb", type=float, default=csvscan.DEFAULT_RANGE_BYTES >> 20,
                       help="Size of the byte ranges the tables are scanned in (the unit of "
                            "parallelism; fractions allowed).")
        g.add_argument("--output_dir", default=None, help="Where outputs are written.")

        g = parser.add_argument_group("filters")
        for flag in ("is_occluded", "is_truncated", "is_group_of", "is_depiction", "is_inside"):
            g.add_argument(f"--{flag}", choices=rows.FLAG_MODES, default="include",
                           help=f"include, exclude or only boxes with {flag}=1 "
                                f"(unknown, -1, passes exclude and fails only).")
        g.add_argument("--min_box_size", type=float, default=0.0,
                       help="Drop boxes whose width or height is below this fraction of the photo's.")
        g.add_argument("--max_per_class", type=int, default=0,
                       help="Keep at most N boxes per label, chosen by a seeded hash (0: all).")
        g.add_argument("--seed", type=int, default=0,
                       help="Seed of every deterministic choice (splits, sampling).")
        g.add_argument("--split_source", choices=("hash", "openimages"), default="hash",
                       help="hash: SHA-256 of ImageID and seed; openimages: the table's Subset.")
        g.add_argument("--split_fractions", nargs=3, type=float,
                       default=list(join.DEFAULT_FRACTIONS),
                       help="train, validation and test fractions for --split_source hash.")

        d = fetch.FetchConfig()
        g = parser.add_argument_group("fetching")
        g.add_argument("--image_source", nargs="+", choices=fetch.SOURCES,
                       default=list(d.image_source),
                       help="Sources to try, in order: cvdf (the CVDF mirror: every boxable "
                            "photo, longest side 1024), original (Flickr, MD5-checked), "
                            "thumbnail (Thumbnail300KURL), template (--url_template).")
        g.add_argument("--url_template", default="",
                       help="URL with {image_id} and {subset}, for --image_source template.")
        g.add_argument("--cvdf_base_url", default=d.cvdf_base_url,
                       help="Base URL of the CVDF mirror ({base}/{subset}/{image_id}.jpg).")
        g.add_argument("--fetch_concurrency", type=int, default=d.fetch_concurrency,
                       help="Requests in flight per worker.")
        g.add_argument("--fetch_per_host", type=int, default=d.fetch_per_host,
                       help="Requests in flight per host, per worker.")
        g.add_argument("--connect_timeout_s", type=float, default=d.connect_timeout_s)
        g.add_argument("--fetch_timeout_s", type=float, default=d.read_timeout_s,
                       help="Read timeout: seconds without a byte before a request fails.")
        g.add_argument("--fetch_deadline_s", type=float, default=d.deadline_s,
                       help="Most seconds one photo may take, retries and fallbacks "
                            "included; a body that trickles is cut off (reason timeout).")
        g.add_argument("--fetch_attempts", type=int, default=d.fetch_attempts,
                       help="Tries per URL for retryable failures (timeouts, 5xx, 429).")
        g.add_argument("--fetch_backoff_s", type=float, default=d.backoff_s,
                       help="First retry delay; doubles each retry, with jitter.")
        g.add_argument("--max_image_bytes", type=int, default=d.max_image_bytes,
                       help="Size cap per downloaded file.")
        g.add_argument("--allow_private_network", action="store_true",
                       help="Allow URLs on private, loopback and link-local addresses "
                            "(local test servers). Off by default: a worker must never be "
                            "steered to its metadata service or internal network.")
        g.add_argument("--cache_dir", default="",
                       help="Where downloads are cached (default: ~/.cache/open-sandwiches/images).")
        g.add_argument("--placeholder_sha256", nargs="*", default=[],
                       help="SHA-256 digests of known placeholder images to reject.")

        c = crop.CropSpec()
        g = parser.add_argument_group("cropping")
        g.add_argument("--image_size", type=int, default=c.image_size,
                       help="Side of the square crops, in pixels.")
        g.add_argument("--crop_margin", type=float, default=c.margin,
                       help="Context around each box, as a fraction of its size.")
        g.add_argument("--square", action="store_true",
                       help="Widen the box's shorter side to make it square in the photo.")
        g.add_argument("--aspect", choices=crop.ASPECTS, default=c.aspect,
                       help="pad (letterbox), stretch, or center (fill and cut).")
        g.add_argument("--min_crop_pixels", type=int, default=c.min_crop_pixels,
                       help="Boxes narrower or shorter than this (in photo pixels) fail as too_small.")
        g.add_argument("--jpeg_quality", type=int, default=c.jpeg_quality)
        g.add_argument("--max_jpeg_scans", type=int, default=c.max_jpeg_scans,
                       help="A source JPEG with more scans fails as too_large (0: no limit); "
                            "real progressive photos have about 10.")
        g.add_argument("--max_jpeg_megasamples", type=int, default=c.max_jpeg_megasamples,
                       help="A source JPEG whose scans hold more million samples to decode "
                            "fails as too_large (0: no limit): the decode budget per photo.")

        g = parser.add_argument_group("dataset")
        g.add_argument("--dataset_name", default="",
                       help="Name of the dataset (default: from the labels, e.g. hamburger_sandwich).")
        g.add_argument("--dataset_version", default="1.0.0", help="Semantic version.")
        g.add_argument("--shard_size_mb", type=float, default=100.0,
                       help="Target shard size; the shard count per split follows from it.")
        g.add_argument("--num_shards", type=int, default=0,
                       help="Fixed shard count per split (overrides --shard_size_mb).")
        g.add_argument("--file_format", choices=("tfrecord", "array_record"), default="tfrecord",
                       help="Shard format: tfrecord (sequential, tf.data) or array_record "
                            "(random access: tfds as_data_source, Grain, PyTorch loaders).")
        g.add_argument("--overwrite", action="store_true",
                       help="Rebuild over a completed dataset of the same name and version.")
        g.add_argument("--export_folders", default="",
                       help="Also write DIR/<split>/<label>/<key>.jpg for image_dataset_from_directory.")
        g.add_argument("--no_previews", action="store_true",
                       help="Do not write previews/ (photo grid, crops, counts, failures).")
        g.add_argument("--config", default="",
                       help="YAML or JSON file of flags (keys without --); the command line wins.")


def fetch_config(o: "OpenSandwichesOptions") -> fetch.FetchConfig:
    """The fetch stage's config from flags (raises ValueError on bad values)."""
    return fetch.FetchConfig(
        image_source=tuple(o.image_source), url_template=o.url_template,
        cvdf_base_url=o.cvdf_base_url, fetch_concurrency=o.fetch_concurrency,
        fetch_per_host=o.fetch_per_host, connect_timeout_s=o.connect_timeout_s,
        read_timeout_s=o.fetch_timeout_s, deadline_s=o.fetch_deadline_s,
        max_image_bytes=o.max_image_bytes,
        fetch_attempts=o.fetch_attempts, backoff_s=o.fetch_backoff_s,
        allow_private_network=o.allow_private_network,
        cache_dir=o.cache_dir or fetch.default_cache_dir(),
        placeholder_sha256=tuple(o.placeholder_sha256))


def crop_spec(o: "OpenSandwichesOptions") -> crop.CropSpec:
    """The crop stage's spec from flags (raises ValueError on bad values)."""
    return crop.CropSpec(image_size=o.image_size, margin=o.crop_margin, square=o.square,
                         aspect=o.aspect, min_crop_pixels=o.min_crop_pixels,
                         jpeg_quality=o.jpeg_quality, max_jpeg_scans=o.max_jpeg_scans,
                         max_jpeg_megasamples=o.max_jpeg_megasamples)


def config_flags(path: str) -> list[str]:
    """Flags from a YAML or JSON file: {"classes": ["Hamburger"], "include_subclasses": true}
    becomes --classes Hamburger --include_subclasses (false booleans are left out)."""
    import yaml  # JSON is YAML

    from pipelines import files
    data = yaml.safe_load(files.read_bytes(path)) or {}
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "fingerprint" in data:
        data = data["config"]  # a build_report.json: rebuild from the flags it records
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file is a mapping of flag names to values")
    argv: list[str] = []
    for key, value in data.items():
        flag = "--" + str(key).lstrip("-")
        if key == "config" or value is False or value is None or value == []:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag] + [str(v) for v in value]
        else:
            argv += [flag, str(value)]
    return argv


def expand_config(argv: list[str]) -> list[str]:
    """Put a --config file's flags before the command line's, so the command line wins."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return config_flags(argv[i + 1]) + argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return config_flags(arg.split("=", 1)[1]) + argv[:i] + argv[i + 1:]
    return argv


def parse(argv: list[str] | None) -> OpenSandwichesOptions:
    """Parse flags (after expanding --config); pick the offline in-process runner unless
    one was chosen. DirectRunner is translated to LOCAL_RUNNER for the reason given above.
    """
    options = OpenSandwichesOptions(expand_config(argv or []))
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner"):
        standard.runner = LOCAL_RUNNER
    return options


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam and tfds are chatty at INFO; keep their lines for --verbose.
    for name in ("apache_beam", "absl"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
