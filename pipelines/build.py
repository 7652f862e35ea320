"""`open-sandwiches build`: plan, fetch, crop and write a TFDS dataset, as one Beam job.

    open-sandwiches build --classes Hamburger Sandwich \
        --bbox_csv train-annotations-bbox.csv \
        --images_csv train-images-boxable-with-rotation.csv --output_dir out

    python -m pipelines.build --runner DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py ... --output_dir gs://B/out

Writes `<output_dir>/<name>/<version>/` (shards, dataset_info.json, features.json,
manifest.parquet, failures.jsonl, ATTRIBUTION.md, build_report.json and, last, COMPLETED)
and prints the report. `--config FILE` loads flags from YAML or JSON; a build_report.json
is such a file, so `build --config build_report.json` rebuilds a dataset from its report.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import sys
import time

import apache_beam as beam
import pyarrow.compute as pc

from pipelines import (crop, failures_stage, fetch, files, options, plan, progress, report,
                       scan_stage)
from pipelines.crop_stage import CropBoxes
from pipelines.fetch_stage import FetchImages
from pipelines.ontology import packaged_class_list, packaged_path
from schemas.records import tasks_of
from pipelines.write import (COMPLETED_FILE, REPORT_FILE, DatasetLayout, check_destination,
                             default_dataset_name, finalize, write_json)
from pipelines.write_stage import WriteDataset, export_folders

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build needs, checked before the pipeline starts; `settings` are the
    flags it came from (build_report.json's `config`)."""

    plan: plan.PlanConfig
    fetch: fetch.FetchConfig
    crop: crop.CropSpec
    layout: DatasetLayout
    shard_size_bytes: int
    num_shards: int
    export_folders: str
    settings: options.BuildSettings = options.BuildSettings()


def prepare(argv: list[str] | None) -> tuple[object, BuildConfig]:
    """Parse and check everything: (Beam's PipelineOptions, the config). Raises a
    ValueError or OSError (FileExistsError over a completed dataset) on mistakes."""
    from pipelines import cli
    return _prepared(cli.parse("build", list(argv or [])))


def _prepared(args) -> tuple[object, BuildConfig]:
    return prepare_settings(options.settings(vars(args), "build"),
                            options.pipeline_options(args.beam_args))


def prepare_settings(settings: options.BuildSettings, opts) -> tuple[object, BuildConfig]:
    """What prepare() returns, from settings and PipelineOptions (the Python API's way).

    Clears a partial dataset left by a killed build, and refuses to replace a completed
    one unless --overwrite.
    """
    _, plan_config, output_dir = plan.prepare_settings(settings.plan, opts)
    d = settings.dataset
    # At least one byte: a smaller size (or nan, inf) has no whole number of bytes.
    if not (math.isfinite(d.shard_size_mb) and d.shard_size_mb * 2**20 >= 1) or d.num_shards < 0:
        raise ValueError(f"--shard_size_mb must be a finite size of at least one byte "
                         f"({2**-20:.1e}), not {d.shard_size_mb}, and --num_shards >= 0")
    layout = DatasetLayout(output_dir,
                           d.dataset_name or default_dataset_name(plan_config.label_set.labels),
                           d.dataset_version, d.file_format, settings.crop.image_size)
    fetch_config = dataclasses.replace(settings.fetch, cache_dir=settings.fetch.cache_dir
                                       or fetch.default_cache_dir())
    config = BuildConfig(plan_config, fetch_config, settings.crop, layout,
                         int(d.shard_size_mb * 2**20), d.num_shards, d.export_folders,
                         settings)
    check_destination(layout, d.overwrite)
    return opts, config


def _finalize(_, layout, labels, shards, failure_slices, attribution, failure_counts,
              planned_boxes, scanned, tables):
    counts = finalize(layout, labels, list(shards), list(failure_slices), list(attribution),
                      failure_counts, planned_boxes)
    counts["scan"] = scan_stage.scan_report(tables, scanned)
    report.write_part(layout.report_part, counts)


# The bars of a build in a terminal (pipelines/progress.py): (what the stage counts,
# the bar's label, its unit).
PROGRESS_BARS = (("fetch", "fetch", "photo"), ("crop", "crop", "box"),
                 ("crops serialized", "write", "crop"))


class _Tally(beam.DoFn):
    """The bars' totals, from the plan's buckets as they leave the join (less the boxes
    whose photo or crop failed), and the crop stage's count; emits nothing, and where no
    bar is open only the crop count's log lines remain."""

    def __init__(self, kind: str):
        self._kind = kind

    def setup(self):
        self._crop = progress.Progress("crop")

    def process(self, element):
        if self._kind == "planned":
            batch = element[1]
            progress.expect("fetch", pc.count_distinct(batch["image_id"]).as_py()
                            if batch.num_rows else 0)
            progress.expect("crop", batch.num_rows)
            progress.expect("crops serialized", batch.num_rows)
        elif self._kind == "photo_failed":
            progress.expect("crop", -1)
            progress.expect("crops serialized", -1)
        else:
            failed = self._kind == "crop_failed"
            self._crop.add(boxes=1, failed=int(failed))
            if failed:
                progress.expect("crops serialized", -1)
        return ()


def build_pipeline(p: beam.Pipeline, config: BuildConfig) -> None:
    """Add the whole build to a pipeline: plan -> fetch -> crop -> write -> finalize.

    The plan stays in Arrow batches until the fetch needs one task per photo; example
    bytes stay in run files until each shard is merged (pipelines/write.py)."""
    labels = config.plan.label_set.labels
    layout = config.layout
    plan_batches, plan_failures, scanned = p | "Plan" >> plan.PlanImages(
        config.plan, files.join_path(layout.parts_dir, "batches"))
    tasks = plan_batches | "PhotoTasks" >> beam.FlatMap(lambda kv: tasks_of(kv[1]))
    photos, fetch_failures = tasks | "FetchImages" >> FetchImages(config.fetch)
    crops, crop_failures = photos | "CropBoxes" >> CropBoxes(config.crop)
    if config.export_folders:
        export_folders(crops, config.export_folders)
    shards, attribution = crops | "WriteDataset" >> WriteDataset(
        layout, labels, config.shard_size_bytes, config.num_shards)
    failed = (plan_failures, fetch_failures, crop_failures) | "AllFailures" >> beam.Flatten()
    failure_counts = failed | "CountFailures" >> failures_stage.CountFailures()
    failure_slices = failed | "FailureRuns" >> beam.ParDo(
        failures_stage.WriteFailureRuns(files.join_path(layout.parts_dir, "failures")))
    planned = (plan_batches
               | "BoxesPerBucket" >> beam.Map(lambda kv: kv[1].num_rows)
               | "PlannedBoxes" >> beam.CombineGlobally(sum))
    for name, pcoll, kind in (("ProgressTotals", plan_batches, "planned"),
                              ("ProgressFetchFailed", fetch_failures, "photo_failed"),
                              ("ProgressCropped", crops, "cropped"),
                              ("ProgressCropFailed", crop_failures, "crop_failed")):
        pcoll | name >> beam.ParDo(_Tally(kind))
    (p
     | "Once" >> beam.Create([None])
     | "Finalize" >> beam.Map(
         _finalize, layout, labels, beam.pvalue.AsList(shards),
         beam.pvalue.AsList(failure_slices), beam.pvalue.AsList(attribution),
         beam.pvalue.AsSingleton(failure_counts), beam.pvalue.AsSingleton(planned),
         beam.pvalue.AsDict(scanned), config.plan.box_tables + config.plan.image_tables))


def execute(opts, config: BuildConfig, bars: bool | None = None) -> dict:
    """Run the job, then complete build_report.json and write COMPLETED last.

    Args:
      bars: draw progress bars on stderr (default: when it is a terminal and the job
        runs in this process); else the stages log progress lines.
    """
    flags = options.flag_values(config.settings)
    tables = config.plan.box_tables + config.plan.image_tables
    selection = config.settings.selection
    inputs = [t.path for t in tables] + [
        selection.class_descriptions or packaged_class_list(selection.version),
        selection.hierarchy or packaged_path("bbox_labels_600_hierarchy.json")]
    identity = report.fingerprint(flags, inputs)
    start = time.perf_counter()
    if bars is None:
        bars = progress.wanted(options.runs_in_process(opts))
    with progress.bars(PROGRESS_BARS) if bars else contextlib.nullcontext():
        with beam.Pipeline(options=opts) as p:
            build_pipeline(p, config)
    seconds = time.perf_counter() - start
    path = config.layout.path(REPORT_FILE)
    result = report.take_part(config.layout.report_part)
    result = {"dataset": config.layout.name, "version": config.layout.version,
              "labels": list(config.plan.label_set.labels), **result,
              "notes": list(config.plan.label_set.notes), "seconds": round(seconds, 2),
              **identity, "config": flags, "tool": report.tool(),
              "environment": report.environment(),
              "metrics": report.metrics_dict(p.result)}
    write_json(path, result)
    if not result["invariant"]["examples"]:
        log.error("no box became an example: nothing to load. See %s for why.",
                  config.layout.path("failures.jsonl"))
        return result
    if not config.settings.dataset.no_previews and not files.is_remote(config.layout.dir):
        from pipelines import preview
        try:  # previews are for people: they never decide whether the dataset is complete
            preview.dataset_previews(config.layout.dir, config.fetch.cache_dir)
        except Exception:
            log.warning("previews were not written; the dataset is unaffected", exc_info=True)
    lost = result["invariant"]["lost"]
    if lost:
        # The runner dropped records (measured once: Beam 2.77's multi_processing mode at
        # 20,000 crops). Never mark such a dataset complete.
        log.error("%d planned boxes are neither an example nor a failure record: the runner "
                  "lost records. The dataset is NOT marked COMPLETED; rerun, or use another "
                  "runner (the in-process default never lost one in our tests).", lost)
        return result
    files.write_bytes(config.layout.path(COMPLETED_FILE),
                      (result["fingerprint"] + "\n").encode())
    return result


def run(argv: list[str] | None = None) -> dict:
    """Build from command-line flags; return the report."""
    return execute(*prepare(argv))


def _root_cause(err: BaseException) -> str:
    """The innermost exception of a chain, as 'Type: message' (Beam wraps DoFn errors)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def command(args) -> int:
    """`open-sandwiches build` with parsed flags; --json prints the report as JSON."""
    opts, config = _prepared(args)
    try:
        result = execute(opts, config)
    except Exception as err:  # a full disk, a read-only folder, a worker crash
        if args.verbose:
            raise
        print(f"error: the build failed and the dataset is not marked COMPLETED: "
              f"{_root_cause(err)} (rerun with --verbose for the traceback; a rerun "
              f"reuses every download)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"dataset_dir": config.layout.dir, **result}, indent=2))
    else:
        print(report.format_report(result))
        print(f"\ndataset: {config.layout.dir}")
    if result["invariant"]["lost"]:
        print(f"error: {result['invariant']['lost']} boxes were lost by the runner; the "
              f"dataset is incomplete and not marked COMPLETED", file=sys.stderr)
        return 1
    if not result["invariant"]["examples"]:
        print("error: no box became an example (see failures.jsonl for the reasons); the "
              "dataset is not marked COMPLETED", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("build", argv)


if __name__ == "__main__":
    sys.exit(main())
