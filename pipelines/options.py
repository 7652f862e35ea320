"""Every flag of `plan` and `build`, generated from their configs; Beam's passed through.

    open-sandwiches plan --classes Hamburger Sandwich --bbox_csv boxes.csv \
        --images_csv images.csv --output_dir out/plan

The flag groups are config dataclasses (pipelines/flags.py makes the flags): classes
(`ClassSettings`), tables (`TableSettings`), filters (`scan_rows.BoxFilters`), splits
(`SplitSettings`), and for `build` also download (`fetch.FetchConfig`), crop
(`crop.CropSpec`) and dataset (`DatasetSettings`). Three fields keep the flag names
users' scripts and build reports know, renamed here and nowhere else: --fetch_timeout_s,
--fetch_deadline_s, --fetch_backoff_s and --crop_margin.

Any other flag goes to Beam (`--runner`, `--direct_num_workers`, Dataflow's and Flink's
flags...) if one of Beam's option classes knows it; a flag that neither we nor Beam know
is an error naming it and the closest flag (`--max_per_clas` -> `--max_per_class`).
Kebab-case spellings of our flags are accepted (`--bbox-csv` is `--bbox_csv`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable

from pipelines import crop, fetch, flags, metadata, scan, scan_rows
from pipelines.flags import Group, UsageError
from schemas import examples, openimages
from schemas.records import SPLITS

# Beam's DirectRunner first tries to download the Prism runner binary from the internet;
# FnApiRunner is what it falls back to for batch jobs, so we go there directly: no network
# at start-up, and --direct_running_mode / --direct_num_workers still apply.
LOCAL_RUNNER = "FnApiRunner"
BEAM_DOCS = "https://beam.apache.org/documentation/runners/"


@dataclasses.dataclass(frozen=True)
class ClassSettings:
    """Which Open Images classes, and how they become labels.

    Attributes:
      classes: class names or MIDs, e.g. --classes Hamburger Sandwich (quote names with
        spaces); their order is the label order.
      include_subclasses: add each class's Subcategory descendants (never Parts).
      exclude: classes removed, with their descendants, from that expansion.
      relabel_to_parent: label the descendants as the class you asked for.
      version: the Open Images version whose class names label the data.
      class_descriptions: a class list CSV (default: the packaged list of --version).
      hierarchy: a bbox_labels_600_hierarchy.json (default: the packaged copy).
    """

    classes: tuple[str, ...] = ()
    include_subclasses: bool = False
    exclude: tuple[str, ...] = ()
    relabel_to_parent: bool = False
    version: str = "v7"
    class_descriptions: str | None = None
    hierarchy: str | None = None


@dataclasses.dataclass(frozen=True)
class TableSettings:
    """Which tables are read, and where the outputs go.

    Attributes:
      bbox_csv: box tables (local paths or gs://, s3://... URLs).
      images_csv: image tables, with URLs, licences and Rotation.
      split: instead of --bbox_csv/--images_csv, the official tables of --version for
        this split, downloaded into --metadata_cache.
      metadata_base_url: where the official metadata files are (a mirror, say).
      metadata_cache: the metadata download cache (default
        ~/.cache/open-sandwiches/metadata).
      scan_range_mb: the size of the byte ranges the tables are scanned in (the unit of
        parallelism; fractions allowed).
      output_dir: where the outputs are written (required).
    """

    bbox_csv: tuple[str, ...] = ()
    images_csv: tuple[str, ...] = ()
    split: str = ""
    metadata_base_url: str = metadata.BASE_URL
    metadata_cache: str = ""
    scan_range_mb: float = scan.DEFAULT_RANGE_BYTES >> 20
    output_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """How photos are split and sampled (pipelines/join.py applies them).

    Attributes:
      max_per_class: keep at most N boxes per label, chosen by a seeded hash (0: all).
      seed: the seed of every deterministic choice (splits, sampling).
      split_source: hash (SHA-256 of ImageID and seed) or openimages (the table's Subset).
      split_fractions: train, validation and test fractions for --split_source hash.
    """

    max_per_class: int = 0
    seed: int = 0
    split_source: str = "hash"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    """What the written dataset is called and how it is laid out.

    Attributes:
      dataset_name: the dataset's name (default: from the labels, e.g. hamburger_sandwich).
      dataset_version: its semantic version.
      shard_size_mb: the target shard size; the shard count per split follows from it.
      num_shards: a fixed shard count per split (overrides --shard_size_mb).
      file_format: the shards' format: tfrecord (sequential, tf.data) or array_record
        (random access: tfds as_data_source, Grain, PyTorch loaders).
      overwrite: rebuild over a completed dataset of the same name and version.
      export_folders: also write DIR/<split>/<label>/<key>.jpg for
        image_dataset_from_directory.
      no_previews: do not write previews/ (photo grid, crops, counts, failures).
    """

    dataset_name: str = ""
    dataset_version: str = "1.0.0"
    shard_size_mb: float = 100.0
    num_shards: int = 0
    file_format: str = "tfrecord"
    overwrite: bool = False
    export_folders: str = ""
    no_previews: bool = False


@dataclasses.dataclass(frozen=True)
class PlanSettings:
    """Every setting of a plan, one config per flag group."""

    selection: ClassSettings = ClassSettings()
    tables: TableSettings = TableSettings()
    filters: scan_rows.BoxFilters = scan_rows.BoxFilters()
    splits: SplitSettings = SplitSettings()


@dataclasses.dataclass(frozen=True)
class BuildSettings(PlanSettings):
    """Every setting of a build: the plan's, then how photos are fetched, cropped, written."""

    fetch: fetch.FetchConfig = fetch.FetchConfig()
    crop: crop.CropSpec = crop.CropSpec()
    dataset: DatasetSettings = DatasetSettings()

    @property
    def plan(self) -> PlanSettings:
        return PlanSettings(self.selection, self.tables, self.filters, self.splits)


_MODES = "include, exclude or only boxes with {0}=1 (unknown, -1, passes exclude and fails only)"
PLAN_GROUPS = {
    "selection": Group("classes", ClassSettings, choices={"version": openimages.VERSIONS},
                       metavars={"classes": "NAME", "exclude": "NAME",
                                 "class_descriptions": "FILE", "hierarchy": "FILE"}),
    "tables": Group("tables", TableSettings,
                    choices={"split": ("",) + SPLITS + ("all",)},
                    metavars={"bbox_csv": "FILE", "images_csv": "FILE", "output_dir": "DIR",
                              "metadata_base_url": "URL", "metadata_cache": "DIR",
                              "scan_range_mb": "MB"}),
    "filters": Group(
        "filters", scan_rows.BoxFilters, metavars={"min_box_size": "FRACTION"},
        help={**{f: _MODES.format(f) for f in ("is_occluded", "is_truncated", "is_group_of",
                                             "is_depiction", "is_inside")},
              "min_box_size": "drop boxes whose width or height is below this fraction of "
                              "the photo's"},
        choices={f: scan_rows.FLAG_MODES for f in ("is_occluded", "is_truncated", "is_group_of",
                                              "is_depiction", "is_inside")}),
    "splits": Group("splits and sampling", SplitSettings,
                    choices={"split_source": ("hash", "openimages")},
                    metavars={"max_per_class": "N", "split_fractions": ("TRAIN", "VAL", "TEST")}),
}
BUILD_GROUPS = {
    **PLAN_GROUPS,
    "fetch": Group(
        "download", fetch.FetchConfig,
        flags={"read_timeout_s": "fetch_timeout_s", "deadline_s": "fetch_deadline_s",
               "backoff_s": "fetch_backoff_s"},
        hidden=("max_backoff_s", "max_redirects"),
        choices={"image_source": fetch.SOURCES},
        metavars={"image_source": "SOURCE", "url_template": "URL", "cvdf_base_url": "URL", "cache_dir": "DIR",
                  "placeholder_sha256": "SHA256"},
        help={
            "image_source": "sources to try, in order: cvdf (the CVDF mirror: every boxable "
                            "photo, longest side 1024), original (Flickr, MD5-checked), "
                            "thumbnail (Thumbnail300KURL), template (--url_template)",
            "url_template": "a URL with {image_id} and {subset}, for --image_source template",
            "cvdf_base_url": "the CVDF mirror's base URL ({base}/{subset}/{image_id}.jpg)",
            "fetch_concurrency": "requests in flight per worker (a sliding window)",
            "fetch_per_host": "requests in flight per host, per worker",
            "connect_timeout_s": "seconds to wait for a connection",
            "read_timeout_s": "read timeout: seconds without a byte before a request fails",
            "deadline_s": "the most seconds one photo may take, retries and fallbacks "
                          "included; a body that trickles is cut off (reason timeout)",
            "max_image_bytes": "the size cap per downloaded file",
            "fetch_attempts": "tries per URL for retryable failures (timeouts, 5xx, 429)",
            "backoff_s": "the first retry delay; it doubles each retry, with jitter",
            "allow_private_network": "allow URLs on private and loopback addresses "
                                     "(local mirrors, test servers); off by default: a "
                                     "worker must never be steered to its internal "
                                     "network. Link-local addresses (the metadata "
                                     "service) stay refused even with it",
            "cache_dir": "where downloads are cached (default: "
                         "~/.cache/open-sandwiches/images)",
            "placeholder_sha256": "SHA-256 digests of known placeholder images to reject"}),
    "crop": Group("crop", crop.CropSpec, flags={"margin": "crop_margin"},
                  choices={"aspect": crop.ASPECTS},
                  metavars={"image_size": "PIXELS", "margin": "FRACTION",
                            "min_crop_pixels": "PIXELS"},
                  help={"jpeg_quality": "the JPEG quality of the crops, 1 to 100",
                        "max_jpeg_megasamples": "a JPEG whose scans hold more million "
                                                "samples to decode fails as too_large (0: "
                                                "no limit): the decode budget per photo"}),
    "dataset": Group("dataset", DatasetSettings, choices={"file_format": examples.FILE_FORMATS}),
}

# Beam's flags we document; every other Beam flag passes through the same way.
BEAM_FLAGS = {
    "runner": f"where the job runs: {LOCAL_RUNNER} (in-process, offline; DirectRunner "
              f"means the same), PortableRunner, FlinkRunner, SparkRunner, DataflowRunner "
              f"(default: {LOCAL_RUNNER})",
    "direct_running_mode": "the local runner's mode: in_memory (default), multi_threading, "
                           "or multi_processing (one process per worker)",
    "direct_num_workers": "the local runner's workers (0: one per core)",
    "project": "Google Cloud project (DataflowRunner)",
    "region": "Google Cloud region (DataflowRunner)",
    "temp_location": "a gs:// folder for Dataflow's temporary files",
    "setup_file": "./setup.py: how remote workers install this package",
    "flink_master": "Flink's JobManager, HOST:PORT, or [local] (FlinkRunner)",
    "environment_type": "how portable runners start their workers: DOCKER, PROCESS, "
                        "EXTERNAL or LOOPBACK",
}


def add_plan_flags(parser) -> None:
    _add_flags(parser, PLAN_GROUPS)


def add_build_flags(parser) -> None:
    _add_flags(parser, BUILD_GROUPS)


def _add_flags(parser, groups: dict[str, Group]) -> None:
    for group in groups.values():
        group.add_to(parser)
    g = parser.add_argument_group("Beam", flags.wrap(
        f"Every Apache Beam pipeline option passes straight through to Beam; see "
        f"{BEAM_DOCS} for each runner's. The common ones:"))
    for name, text in BEAM_FLAGS.items():
        g.add_argument(f"--{name}", default=None, help=text, metavar=name.split("_")[-1].upper())
    g = parser.add_argument_group("config")
    g.add_argument("--config", default="", metavar="FILE",
                   help="a YAML or JSON file of flags (keys without --; a build_report.json "
                        "is one); the command line wins")


def settings(values: dict[str, Any], command: str) -> PlanSettings:
    """PlanSettings or BuildSettings from flag values ({flag: value}, e.g. vars(args)).

    Raises:
      ValueError: a config refuses a value.
    """
    groups = BUILD_GROUPS if command == "build" else PLAN_GROUPS
    kind = BuildSettings if command == "build" else PlanSettings
    return kind(**{attr: group.build(values) for attr, group in groups.items()})


def flag_values(settings_: PlanSettings) -> dict[str, Any]:
    """{flag: value} of settings: build_report.json's `config` and --config's keys."""
    groups = BUILD_GROUPS if isinstance(settings_, BuildSettings) else PLAN_GROUPS
    out: dict[str, Any] = {}
    for attr, group in groups.items():
        out.update(group.values(getattr(settings_, attr)))
    return out


def flag_names(command: str) -> list[str]:
    groups = BUILD_GROUPS if command == "build" else PLAN_GROUPS
    return ["--" + n for g in groups.values() for n in g.names()] + [
        "--" + n for n in BEAM_FLAGS] + ["--config"]


# ---- Beam's side: which flags it knows, and its PipelineOptions -------------------------

@functools.lru_cache(maxsize=1)
def _beam_parser():
    """A parser of every option Beam's option classes define (as PipelineOptions itself
    builds one in get_all_options), which raises UsageError on a bad value."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class BeamFlags(_BeamArgumentParser):
        def __init__(self):
            self.names: set[str] = set()
            super().__init__(allow_abbrev=False)

        def add_argument(self, *args, **kwargs):
            action = super().add_argument(*args, **kwargs)
            self.names.update(action.option_strings)
            return action

        def error(self, message):
            raise UsageError(f"Beam: {message}")

    parser = BeamFlags()
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return parser


def beam_knows(flag: str) -> bool:
    """Whether one of Beam's option classes defines `--name` (or `--name=value`)."""
    return flag.split("=", 1)[0] in _beam_parser().names


def check_beam_args(args: list[str], ours: Iterable[str], source: str = "") -> None:
    """Raise UsageError for the first of `args` that Beam does not know either.

    Args:
      args: what our parser did not take.
      ours: our flags, offered first as the closest match.
      source: where the args came from (a config file), for the message.
    """
    if not args:
        return
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(args)
    if not unknown:
        return
    where = f"{source}: " if source else ""
    first = next((a for a in unknown if a.startswith("-")), unknown[0])
    if not first.startswith("-"):
        raise UsageError(f"{where}unexpected argument {first!r}")
    name = first.split("=", 1)[0]
    hint = flags.suggest(name, ours) or flags.suggest(name, sorted(parser.names))
    raise UsageError(f"{where}unknown flag {name}{hint}")


def beam_argv_of(values: dict[str, Any]) -> list[str]:
    """Beam flags from {name: value}, as PipelineOptions.from_dictionary writes them: a
    list as the flag repeated (Beam's list options append), a mapping as JSON, True as
    the bare flag, False and None left out."""
    import json
    argv: list[str] = []
    for key, value in values.items():
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}={v}" for v in value]
        elif isinstance(value, dict):
            argv.append(f"--{key}={json.dumps(value)}")
        elif value is not None:
            argv.append(f"--{key}={value}")
    return argv


def beam_args(values: dict[str, Any], rest: list[str]) -> list[str]:
    """The Beam flags of a command line: the documented ones given, then the rest."""
    return [f"--{k}={values[k]}" for k in BEAM_FLAGS if values.get(k) is not None] + rest


def pipeline_options(args: list[str]):
    """Beam's PipelineOptions; the offline in-process runner unless one was chosen
    (DirectRunner is translated to LOCAL_RUNNER for the reason given above)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    options = PipelineOptions(args)
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner"):
        standard.runner = LOCAL_RUNNER
    return options


def runs_in_process(options) -> bool:
    """Whether the job's DoFns run in this process (so they can draw progress bars here):
    the local runner, in memory or on threads."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    runner = options.view_as(StandardOptions).runner
    mode = options.view_as(DirectOptions).direct_running_mode or "in_memory"
    return runner in (LOCAL_RUNNER, "DirectRunner", "BundleBasedDirectRunner") and \
        mode in ("in_memory", "multi_threading")
