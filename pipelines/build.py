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

import argparse
import dataclasses
import json
import logging
import sys
import time

import apache_beam as beam

from pipelines import crop, failures, fetch, files, options, plan, report, scan
from pipelines.crop_stage import CropBoxes
from pipelines.fetch_stage import FetchImages
from pipelines.ontology import packaged_class_list, packaged_path
from schemas.records import tasks_of
from pipelines.write import (COMPLETED_FILE, REPORT_FILE, DatasetLayout, WriteDataset,
                             check_destination, default_dataset_name, export_folders,
                             finalize, write_json)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build needs, checked before the pipeline starts."""

    plan: plan.PlanConfig
    fetch: fetch.FetchConfig
    crop: crop.CropSpec
    layout: DatasetLayout
    shard_size_bytes: int
    num_shards: int
    export_folders: str


def our_flags(opts: options.OpenSandwichesOptions) -> dict:
    """The values of this project's flags (not Beam's), as a --config mapping."""
    parser = argparse.ArgumentParser(add_help=False)
    options.OpenSandwichesOptions._add_argparse_args(parser)
    values = opts.view_as(options.OpenSandwichesOptions).get_all_options()
    return {a.dest: values.get(a.dest) for a in parser._actions if a.dest != "help"}


def prepare(argv: list[str] | None) -> tuple[options.OpenSandwichesOptions, BuildConfig]:
    """Parse and check everything; raise plan.USER_ERRORS (or FileExistsError) on mistakes.

    Clears a partial dataset left by a killed build, and refuses to replace a completed
    one unless --overwrite.
    """
    opts = options.parse(argv)
    o = opts.view_as(options.OpenSandwichesOptions)
    if not o.output_dir:
        raise ValueError("--output_dir is required")
    plan_config, _ = plan.PlanConfig.from_options(opts)
    if o.shard_size_mb <= 0 or o.num_shards < 0:
        raise ValueError("--shard_size_mb must be positive and --num_shards >= 0")
    layout = DatasetLayout(o.output_dir,
                           o.dataset_name or default_dataset_name(plan_config.label_set.labels),
                           o.dataset_version, o.file_format, o.image_size)
    config = BuildConfig(plan_config, options.fetch_config(o), options.crop_spec(o), layout,
                         int(o.shard_size_mb * 2**20), o.num_shards, o.export_folders)
    check_destination(layout, o.overwrite)
    return opts, config


def _finalize(_, layout, labels, shards, failure_slices, attribution, failure_counts,
              planned_boxes, scanned, tables):
    counts = finalize(layout, labels, list(shards), list(failure_slices), list(attribution),
                      failure_counts, planned_boxes)
    counts["scan"] = scan.scan_report(tables, scanned)
    write_json(layout.path(REPORT_FILE), counts)


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
    failure_counts = failed | "CountFailures" >> failures.CountFailures()
    failure_slices = failed | "FailureRuns" >> beam.ParDo(
        failures.WriteFailureRuns(files.join_path(layout.parts_dir, "failures")))
    planned = (plan_batches
               | "BoxesPerBucket" >> beam.Map(lambda kv: kv[1].num_rows)
               | "PlannedBoxes" >> beam.CombineGlobally(sum))
    (p
     | "Once" >> beam.Create([None])
     | "Finalize" >> beam.Map(
         _finalize, layout, labels, beam.pvalue.AsList(shards),
         beam.pvalue.AsList(failure_slices), beam.pvalue.AsList(attribution),
         beam.pvalue.AsSingleton(failure_counts), beam.pvalue.AsSingleton(planned),
         beam.pvalue.AsDict(scanned), config.plan.box_tables + config.plan.image_tables))


def execute(opts: options.OpenSandwichesOptions, config: BuildConfig) -> dict:
    """Run the job, then complete build_report.json and write COMPLETED last."""
    o = opts.view_as(options.OpenSandwichesOptions)
    flags = our_flags(opts)
    tables = config.plan.box_tables + config.plan.image_tables
    inputs = [t.path for t in tables] + [
        o.class_descriptions or packaged_class_list(o.version),
        o.hierarchy or packaged_path("bbox_labels_600_hierarchy.json")]
    identity = report.fingerprint(flags, inputs)
    start = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        build_pipeline(p, config)
    seconds = time.perf_counter() - start
    path = config.layout.path(REPORT_FILE)
    result = json.loads(files.read_bytes(path))
    result = {"dataset": config.layout.name, "version": config.layout.version,
              "labels": list(config.plan.label_set.labels), **result,
              "notes": list(config.plan.label_set.notes), "seconds": round(seconds, 2),
              **identity, "config": flags, "environment": report.environment(),
              "metrics": report.metrics_dict(p.result)}
    write_json(path, result)
    if not result["invariant"]["examples"]:
        log.error("no box became an example: nothing to load. See %s for why.",
                  config.layout.path("failures.jsonl"))
        return result
    if not o.no_previews and not files.is_remote(config.layout.dir):
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options.setup_logging(verbose="--verbose" in argv, quiet="--quiet" in argv)
    argv = [a for a in argv if a not in ("--verbose", "--quiet")]
    try:
        opts, config = prepare(argv)
    except plan.USER_ERRORS + (FileExistsError,) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = execute(opts, config)
    except Exception as err:  # a full disk, a read-only folder, a worker crash
        if "--verbose" in sys.argv or log.isEnabledFor(logging.DEBUG):
            raise
        print(f"error: the build failed and the dataset is not marked COMPLETED: "
              f"{_root_cause(err)}\n(rerun with --verbose for the "
              f"traceback; a rerun reuses every download)", file=sys.stderr)
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
