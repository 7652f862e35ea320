"""`open-sandwiches plan`: what Open Images holds for your classes, before any download.

Scans the box table for the selected classes, the image table for their photos, joins
them on ImageID into one task per photo, assigns splits and applies the sampling limit.
Writes `plan.parquet` (one row per selected box), `failures.jsonl` and `summary.json`,
and prints the summary as a table.

    open-sandwiches plan --classes Hamburger Sandwich \
        --bbox_csv train-annotations-bbox.csv \
        --images_csv train-images-boxable-with-rotation.csv --output_dir out/plan

`PlanImages` is the composite that `build` reuses; `run(argv)` builds options and
`build_pipeline(p, config, output_dir)` adds the transforms, so tests pass a TestPipeline.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import sys
from typing import Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines import csvscan, files, join, metadata, options, report, rows
from pipelines.ontology import (ClassSelectionError, LabelSet, Ontology, UnknownClassError,
                                build_label_set)
from pipelines.scan import FAILED, ScanBoxes, ScanImages
from schemas import openimages
from schemas.records import PLAN_SCHEMA, SPLITS, Failure, ImageTask, plan_rows

PLAN_FILE = "plan.parquet"
FAILURES_FILE = "failures.jsonl"
SUMMARY_FILE = "summary.json"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """Everything the plan stage needs, checked while the pipeline is being built."""

    label_set: LabelSet
    box_tables: tuple[csvscan.TableFile, ...]
    image_tables: tuple[csvscan.TableFile, ...]
    filters: rows.BoxFilters
    range_bytes: int
    seed: int
    split_source: str
    fractions: tuple[float, float, float]
    max_per_class: int

    @classmethod
    def from_options(cls, opts: options.OpenSandwichesOptions) -> tuple["PlanConfig", Ontology]:
        """Resolve classes and open every table now, so mistakes fail before any worker runs.

        Raises:
          UnknownClassError, ClassSelectionError: a bad class choice (with suggestions).
          FileNotFoundError, TableFormatError: a missing file or an unknown header.
          ValueError: a bad flag value.
        """
        o = opts.view_as(options.OpenSandwichesOptions)
        bbox_csv, images_csv = list(o.bbox_csv), list(o.images_csv)
        if o.split and not bbox_csv and not images_csv:
            bbox_csv, images_csv = metadata.ensure(o.version, o.split, o.metadata_base_url,
                                                   o.metadata_cache)
        if not bbox_csv or not images_csv:
            raise ValueError("give the tables to scan: --bbox_csv FILE [FILE ...] "
                             "--images_csv FILE [FILE ...], or --version V --split S to "
                             "use (and download) the official ones")
        ontology = Ontology.load(o.version, o.class_descriptions, o.hierarchy)
        label_set = build_label_set(ontology, o.classes, o.include_subclasses, o.exclude,
                                    o.relabel_to_parent)
        filters = rows.BoxFilters(o.is_occluded, o.is_truncated, o.is_group_of,
                                  o.is_depiction, o.is_inside, o.min_box_size)
        if o.max_per_class < 0:
            raise ValueError("--max_per_class must be 0 (no limit) or positive")
        if o.scan_range_mb <= 0:
            raise ValueError("--scan_range_mb must be positive")
        config = cls(
            label_set=label_set,
            box_tables=tuple(csvscan.open_table(p, openimages.BOXES) for p in bbox_csv),
            image_tables=tuple(csvscan.open_table(p, openimages.IMAGES) for p in images_csv),
            filters=filters, range_bytes=o.scan_range_mb << 20, seed=o.seed,
            split_source=o.split_source, fractions=join.check_fractions(o.split_fractions),
            max_per_class=o.max_per_class)
        join.make_split_fn(config.split_source, config.seed, config.fractions)  # validates
        return config, ontology


class _MakeTasks(beam.DoFn):
    """(ImageID, {boxes, images}) -> ImageTask; orphan and duplicate boxes tagged FAILED."""

    def __init__(self, split_source: str, seed: int, fractions: tuple[float, float, float]):
        self._split_args = (split_source, seed, fractions)
        self._tasks = Metrics.counter("join", "tasks")
        self._failed = Metrics.counter("join", "failures")

    def setup(self):
        self._split = join.make_split_fn(*self._split_args)

    def process(self, element):
        image_id, grouped = element
        task, failures = join.make_task(image_id, grouped["boxes"], grouped["images"],
                                        self._split)
        self._failed.inc(len(failures))
        for failure in failures:
            yield beam.pvalue.TaggedOutput(FAILED, failure)
        if task is not None:
            self._tasks.inc()
            yield task


def _ranked_boxes(task: ImageTask, seed: int):
    for box in task.boxes:
        yield box.label, (join.sample_priority(seed, task.image_id, box), task.image_id,
                          box.box_index)


class _KeepChosen(beam.DoFn):
    """Rebuild a task with only the boxes --max_per_class chose (indices unchanged)."""

    def __init__(self):
        self._over = Metrics.counter("limit", "boxes_over_limit")

    def process(self, element):
        _, grouped = element
        chosen = set(grouped["kept"])
        for task in grouped["task"]:
            kept = tuple(b for b in task.boxes if b.box_index in chosen)
            self._over.inc(len(task.boxes) - len(kept))
            if kept:
                yield dataclasses.replace(task, boxes=kept)


class LimitPerClass(beam.PTransform):
    """Keep at most n boxes per label: those with the smallest seeded hash, so the choice
    is the same for any row order, runner or worker count. Boxes over the limit are left
    out by the user's request (counted in metrics), not failures."""

    def __init__(self, n: int, seed: int):
        super().__init__()
        self._n, self._seed = n, seed

    def expand(self, tasks):
        kept = (tasks
                | "RankBoxes" >> beam.FlatMap(_ranked_boxes, self._seed)
                | "SmallestPerLabel" >> beam.combiners.Top.SmallestPerKey(self._n)
                | "KeptBoxes" >> beam.FlatMap(lambda kv: [(i, b) for _, i, b in kv[1]]))
        keyed = tasks | "KeyByImage" >> beam.Map(lambda t: (t.image_id, t))
        return ({"task": keyed, "kept": kept}
                | "JoinChosen" >> beam.CoGroupByKey()
                | "KeepChosen" >> beam.ParDo(_KeepChosen()))


class PlanImages(beam.PTransform):
    """Scan, filter, join, split and limit: the plan of a build.

    Returns:
      (PCollection of ImageTask, PCollection of Failure).
    """

    def __init__(self, config: PlanConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        c = self._config
        ls = c.label_set
        boxes, box_failures = pbegin | "ScanBoxes" >> ScanBoxes(
            c.box_tables, ls.mid_to_index, ls.labels, c.filters, c.range_bytes)
        image_ids = (boxes
                     | "ImageIds" >> beam.Keys()
                     | "UniqueImageIds" >> beam.Distinct())
        images, image_failures = pbegin | "ScanImages" >> ScanImages(
            c.image_tables, beam.pvalue.AsList(image_ids), c.range_bytes)
        joined = ({"boxes": boxes, "images": images}
                  | "JoinOnImageID" >> beam.CoGroupByKey()
                  | "MakeTasks" >> beam.ParDo(_MakeTasks(c.split_source, c.seed, c.fractions))
                  .with_outputs(FAILED, main="tasks"))
        tasks = joined.tasks
        if c.max_per_class:
            tasks = tasks | "LimitPerClass" >> LimitPerClass(c.max_per_class, c.seed)
        failures = ((box_failures, image_failures, joined[FAILED])
                    | "PlanFailures" >> beam.Flatten())
        return tasks, failures


def summarize(plan: Iterable[dict], failures: Iterable[Failure], labels: Iterable[str],
              notes: Iterable[str] = ()) -> dict:
    """Boxes and images per label and split, and failures by stage and reason."""
    labels = list(labels)
    boxes = {l: collections.Counter() for l in labels}
    images = {l: collections.defaultdict(set) for l in labels}
    for row in plan:
        boxes[row["label"]][row["split"]] += 1
        images[row["label"]][row["split"]].add(row["image_id"])
    all_images = {s: set() for s in SPLITS}
    for per_split in images.values():
        for split, ids in per_split.items():
            all_images[split] |= ids
    by_reason = collections.Counter(f"{f.stage}/{f.reason}" for f in failures)

    def table(counts) -> dict:
        return {l: {**{s: counts[l].get(s, 0) for s in SPLITS},
                    "total": sum(counts[l].get(s, 0) for s in SPLITS)} for l in labels}

    image_counts = {l: {s: len(ids) for s, ids in images[l].items()} for l in labels}
    return {
        "labels": labels,
        "boxes": table(boxes),
        "images": table(image_counts),
        "totals": {"boxes": sum(sum(c.values()) for c in boxes.values()),
                   "images": sum(len(v) for v in all_images.values()),
                   "images_per_split": {s: len(all_images[s]) for s in SPLITS},
                   "failures": sum(by_reason.values())},
        "failures_by_reason": dict(sorted(by_reason.items())),
        "notes": list(notes),
    }


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table for the terminal."""
    width = max([len(l) for l in summary["labels"]] + [5])
    head = f"{'label':<{width}}  " + "  ".join(f"{s:>10}" for s in SPLITS + ("total",))
    out = []
    for what in ("boxes", "images"):
        out += [f"{what} per class and split", head, "-" * len(head)]
        for label in summary["labels"]:
            counts = summary[what][label]
            out.append(f"{label:<{width}}  " + "  ".join(
                f"{counts[s]:>10}" for s in SPLITS + ("total",)))
        out.append("")
    t = summary["totals"]
    out.append(f"total: {t['boxes']} boxes on {t['images']} images; {t['failures']} failure records")
    for reason, n in summary["failures_by_reason"].items():
        out.append(f"  {reason}: {n}")
    out += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out)


def _write_plan_files(plan: list[dict], failures: list[Failure], output_dir: str,
                      labels: tuple[str, ...], notes: tuple[str, ...]) -> None:
    """Write plan.parquet and failures.jsonl sorted by key, so reruns give the same bytes."""
    plan = sorted(plan, key=lambda r: (r["image_id"], r["box_index"]))
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(plan, schema=PLAN_SCHEMA), sink, compression="zstd")
    files.write_bytes(files.join_path(output_dir, PLAN_FILE), sink.getvalue())
    failures = sorted(failures)
    files.write_bytes(files.join_path(output_dir, FAILURES_FILE),
                      "".join(f.to_json() + "\n" for f in failures).encode("utf-8"))
    summary = summarize(plan, failures, labels, notes)
    files.write_bytes(files.join_path(output_dir, SUMMARY_FILE),
                      json.dumps(summary, indent=2).encode("utf-8"))


def build_pipeline(p: beam.Pipeline, config: PlanConfig, output_dir: str) -> None:
    """Add the plan stages and their outputs to a pipeline."""
    tasks, failures = p | "Plan" >> PlanImages(config)
    ls = config.label_set
    (tasks
     | "PlanRows" >> beam.FlatMap(plan_rows)
     | "CollectPlan" >> beam.combiners.ToList()
     | "WritePlanFiles" >> beam.Map(_write_plan_files, beam.pvalue.AsList(failures),
                                    output_dir, ls.labels, ls.notes))


def prepare(argv: list[str] | None) -> tuple[options.OpenSandwichesOptions, PlanConfig, str]:
    """Parse flags and check every input; raises USER_ERRORS on a mistake of the user's."""
    opts = options.parse(argv)
    o = opts.view_as(options.OpenSandwichesOptions)
    if not o.output_dir:
        raise ValueError("--output_dir is required")
    config, _ = PlanConfig.from_options(opts)
    return opts, config, o.output_dir


def execute(opts: options.OpenSandwichesOptions, config: PlanConfig, output_dir: str) -> dict:
    """Run the plan pipeline; return the summary, with the run's counters added to it."""
    with beam.Pipeline(options=opts) as p:
        build_pipeline(p, config, output_dir)
    summary_path = files.join_path(output_dir, SUMMARY_FILE)
    summary = json.loads(files.read_bytes(summary_path))
    summary["metrics"] = report.metrics_dict(p.result)["counters"]
    files.write_bytes(summary_path, json.dumps(summary, indent=2).encode("utf-8"))
    return summary


def run(argv: list[str] | None = None) -> dict:
    """Plan from command-line flags; return the summary."""
    return execute(*prepare(argv))


USER_ERRORS = (UnknownClassError, ClassSelectionError, FileNotFoundError,
               openimages.TableFormatError, ValueError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    options.setup_logging(verbose="--verbose" in argv, quiet="--quiet" in argv)
    argv = [a for a in argv if a not in ("--verbose", "--quiet")]
    try:
        opts, config, output_dir = prepare(argv)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in config.label_set.notes:
        log.info("%s", note)
    summary = execute(opts, config, output_dir)
    print(format_summary(summary))
    print(f"\nwrote {files.join_path(output_dir, PLAN_FILE)}, {FAILURES_FILE}, {SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
