"""`open-sandwiches plan`: what Open Images holds for your classes, before any download.

Scans the box table for the selected classes and the image table for their photos, joins
them in buckets of photos, assigns splits and applies the sampling limit, all in Arrow
batches (never one Python object per row). Writes, in parallel, `plan-NNNNN-of-MMMMM.parquet`
(one row per selected box, a file per bucket; `read_plan` reads them all), then
`failures.jsonl` (merged from sorted runs) and `summary.json` (from combiners), and prints
the summary as a table.

    open-sandwiches plan --classes Hamburger Sandwich \
        --bbox_csv train-annotations-bbox.csv \
        --images_csv train-images-boxable-with-rotation.csv --output_dir out/plan

`PlanImages` is the composite that `build` reuses; `run(argv)` parses the flags
(pipelines/options.py) and `build_pipeline(p, config, output_dir)` adds the transforms, so
tests pass a TestPipeline; `pipelines.api.plan(...)` takes keyword arguments.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import io
import json
import logging
import math
import os
import re
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import (failures, failures_stage, files, join, join_stage, keys, metadata,
                       options, report, scan, scan_rows, scan_stage)
from pipelines.ontology import LabelSet, Ontology, build_label_set
from pipelines.failures import FAILED
from schemas import openimages
from schemas.records import PLAN_SCHEMA, SPLITS

PLAN_FILES = "plan-{:05d}-of-{:05d}.parquet"
_PLAN_FILE_RE = re.compile(r"^plan-(\d{5})-of-(\d{5})\.parquet$")
FAILURES_FILE = failures.FAILURES_FILE
SUMMARY_FILE = "summary.json"
SUMMARY_PART = ".summary-part.json"  # the job's half of summary.json (report.write_part)
PARTS_DIR = ".plan-parts"

log = logging.getLogger(__name__)


MAX_BUCKETS = 1024  # photo buckets (plan files) at most


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """Everything the plan stage needs, checked while the pipeline is being built."""

    label_set: LabelSet
    box_tables: tuple[scan.TableFile, ...]
    image_tables: tuple[scan.TableFile, ...]
    filters: scan_rows.BoxFilters
    range_bytes: int
    seed: int
    split_source: str
    fractions: tuple[float, float, float]
    max_per_class: int

    @property
    def num_buckets(self) -> int:
        """Two buckets of photos per range of input: a bucket's join then holds about half
        a range's rows, even when every row of the tables is selected. At most MAX_BUCKETS
        (a plan file each), however small --scan_range_mb: the whole of Open Images at the
        default 64 MiB ranges is ~60."""
        data = sum(t.size - t.header_end for t in self.box_tables + self.image_tables)
        return max(1, min(MAX_BUCKETS, 2 * math.ceil(data / self.range_bytes)))

    @property
    def join_spec(self) -> join.JoinSpec:
        ls = self.label_set
        return join.JoinSpec(tuple(sorted(ls.mid_to_index)), tuple(ls.labels), self.split_source,
                             self.seed, self.fractions, priorities=self.max_per_class > 0)

    @classmethod
    def from_settings(cls, settings: options.PlanSettings) -> tuple["PlanConfig", Ontology]:
        """Resolve classes and open every table now, so mistakes fail before any worker runs.

        Raises:
          UnknownClassError, ClassSelectionError: a bad class choice (with suggestions).
          FileNotFoundError, TableFormatError: a missing file or an unknown header.
          ValueError: a bad flag value.
        """
        c, t, s = settings.selection, settings.tables, settings.splits
        bbox_csv, images_csv = list(t.bbox_csv), list(t.images_csv)
        if t.split and not bbox_csv and not images_csv:
            bbox_csv, images_csv = metadata.ensure(c.version, t.split, t.metadata_base_url,
                                                   t.metadata_cache)
        if not bbox_csv or not images_csv:
            raise ValueError("give the tables to scan: --bbox_csv FILE [FILE ...] "
                             "--images_csv FILE [FILE ...], or --version V --split S to "
                             "use (and download) the official ones")
        ontology = Ontology.load(c.version, c.class_descriptions, c.hierarchy)
        label_set = build_label_set(ontology, list(c.classes), c.include_subclasses,
                                    list(c.exclude), c.relabel_to_parent)
        if s.max_per_class < 0:
            raise ValueError("--max_per_class must be 0 (no limit) or positive")
        if not 0 < t.scan_range_mb < math.inf:  # also refuses nan
            raise ValueError(f"--scan_range_mb must be a positive number of MiB, not "
                             f"{t.scan_range_mb}")
        config = cls(
            label_set=label_set,
            box_tables=tuple(scan.open_table(p, openimages.BOXES) for p in bbox_csv),
            image_tables=tuple(scan.open_table(p, openimages.IMAGES) for p in images_csv),
            filters=settings.filters, range_bytes=max(1, int(t.scan_range_mb * 2**20)),
            seed=s.seed, split_source=s.split_source,
            fractions=join.check_fractions(s.split_fractions), max_per_class=s.max_per_class)
        config.join_spec  # validates the split source
        return config, ontology


class PlanImages(beam.PTransform):
    """Scan, filter, join, split and limit: the plan of a build.

    Args:
      config: the checked plan config.
      scratch: a folder for batches between stages (removed by whoever owns it, after).

    Returns:
      (PCollection of (bucket, PLAN_BATCH) with exactly one element per bucket,
       PCollection of FAILURE_SCHEMA batches,
       PCollection of (table path, scan_stage.TableScan), one per table).
    """

    def __init__(self, config: PlanConfig, scratch: str):
        super().__init__()
        self._config, self._scratch = config, scratch

    def expand(self, pbegin):
        c, scratch = self._config, self._scratch
        n = c.num_buckets
        box = pbegin | "ScanBoxes" >> scan_stage.ScanBoxes(
            c.box_tables, c.label_set.mid_to_index, c.filters, c.range_bytes, n, scratch)
        images = pbegin | "ScanImages" >> scan_stage.ScanImages(
            c.image_tables, beam.pvalue.AsSingleton(box[scan_stage.IMAGE_IDS]), c.range_bytes, n,
            scratch)
        plan, join_failures = ((box[scan_stage.BOXES], images[scan_stage.IMAGES])
                               | "JoinBuckets" >> join_stage.JoinBuckets(
                                   c.join_spec, c.max_per_class, n, scratch))
        failures = (box[FAILED], join_failures) | "PlanFailures" >> beam.Flatten()
        scanned = ((box[scan_stage.SCANNED], images[scan_stage.SCANNED])
                   | "Scanned" >> beam.Flatten()
                   | "PerTable" >> beam.CombinePerKey(_SumScans()))
        return plan, failures, scanned


class _SumScans(beam.CombineFn):
    def create_accumulator(self):
        return scan_stage.TableScan()

    def add_input(self, acc, value):
        return acc.add(value)

    def merge_accumulators(self, accs):
        total = scan_stage.TableScan()
        for acc in accs:
            total = total.add(acc)
        return total

    def extract_output(self, acc):
        return acc


def plan_counts(element) -> collections.Counter:
    """A bucket's boxes and photos per (label index, split), and photos per split. Photos
    never span buckets, so per-bucket distinct counts add up."""
    _, plan = element
    counts: collections.Counter = collections.Counter()
    if plan.num_rows == 0:
        return counts
    label = plan["label_index"].to_numpy().astype(np.int64)
    split = np.asarray(pc.index_in(plan["split"], value_set=pa.array(SPLITS))
                       .to_numpy(zero_copy_only=False), np.int64)
    ids, _ = keys.image_ids_to_u64(plan["image_id"])
    photo = np.cumsum(np.concatenate([[True], ids[1:] != ids[:-1]])) - 1  # rows are by photo
    width = int(label.max()) + 1
    cell = label * len(SPLITS) + split
    photo_cells = np.sort(photo * width * len(SPLITS) + cell)
    distinct = photo_cells[np.concatenate([[True], photo_cells[1:] != photo_cells[:-1]])]
    for what, values in (("boxes", cell), ("images", distinct % (width * len(SPLITS)))):
        for c, k in enumerate(np.bincount(values, minlength=width * len(SPLITS))):
            if k:
                counts[(what, c // len(SPLITS), SPLITS[c % len(SPLITS)])] += int(k)
    first = np.concatenate([[True], photo[1:] != photo[:-1]])
    for s, k in enumerate(np.bincount(split[first], minlength=len(SPLITS))):
        counts[("images_total", SPLITS[s])] += int(k)
    return counts


def summarize(counts: dict, failures_by_reason: dict, labels, notes=()) -> dict:
    """Boxes and images per label and split, and failures by stage and reason."""
    labels = list(labels)

    def table(what: str) -> dict:
        out = {}
        for i, label in enumerate(labels):
            per = {s: counts.get((what, i, s), 0) for s in SPLITS}
            out[label] = {**per, "total": sum(per.values())}
        return out

    per_split = {s: counts.get(("images_total", s), 0) for s in SPLITS}
    boxes = table("boxes")
    return {
        "labels": labels,
        "boxes": boxes,
        "images": table("images"),
        "totals": {"boxes": sum(b["total"] for b in boxes.values()),
                   "images": sum(per_split.values()), "images_per_split": per_split,
                   "failures": sum(failures_by_reason.values())},
        "failures_by_reason": dict(sorted(failures_by_reason.items())),
        "notes": list(notes),
    }


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table for the terminal."""
    out = []
    for what in ("boxes", "images"):
        out += report.split_table(f"{what} per class and split",
                                  {label: summary[what][label] for label in summary["labels"]})
    t = summary["totals"]
    out.append(f"total: {t['boxes']} boxes on {t['images']} images; "
               f"{t['failures']} failure records")
    for reason, n in summary["failures_by_reason"].items():
        out.append(f"  {reason}: {n}")
    for path, s in summary.get("scan", {}).items():
        if not s["complete"]:
            out.append(f"warning: the scan of {path} does not add up: {s}")
    out += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out)


class _WritePlanFile(beam.DoFn):
    def __init__(self, output_dir: str, num_buckets: int):
        self._output_dir, self._n = output_dir, num_buckets

    def process(self, element):
        bucket, plan = element
        name = PLAN_FILES.format(bucket, self._n)
        sink = io.BytesIO()
        # Without dictionaries: zstd alone packs the repeated photo columns smaller, and
        # twice as fast (measured on a 24K-row plan file: 38 ms, 1.4 MB vs 74 ms, 1.8 MB).
        pq.write_table(plan.cast(PLAN_SCHEMA), sink, compression="zstd", use_dictionary=False)
        files.write_bytes(files.join_path(self._output_dir, name), sink.getvalue())
        yield name


def _write_report(_, output_dir: str, counts: dict, failure_counts: dict,
                  failure_slices: list, scanned: dict, written: list, labels, notes,
                  tables) -> None:
    failures.merge_failures(failure_slices, files.join_path(output_dir, FAILURES_FILE))
    files.remove_tree(files.join_path(output_dir, PARTS_DIR))
    summary = summarize(counts, failures.by_reason(failure_counts), labels, notes)
    summary["scan"] = scan_stage.scan_report(tables, scanned)
    summary["plan_files"] = len(written)
    report.write_part(files.join_path(output_dir, SUMMARY_PART), summary)


def build_pipeline(p: beam.Pipeline, config: PlanConfig, output_dir: str) -> None:
    """Add the plan stages and their outputs to a pipeline."""
    plan, failed, scanned = p | "Plan" >> PlanImages(
        config, files.join_path(output_dir, PARTS_DIR, "batches"))
    ls = config.label_set
    written = plan | "WritePlanFiles" >> beam.ParDo(_WritePlanFile(output_dir,
                                                                    config.num_buckets))
    counts = (plan
              | "PlanCounts" >> beam.Map(plan_counts)
              | "SumPlanCounts" >> beam.CombineGlobally(failures_stage.SumCounts()))
    failure_counts = failed | "CountFailures" >> failures_stage.CountFailures()
    slices = failed | "FailureRuns" >> beam.ParDo(
        failures_stage.WriteFailureRuns(files.join_path(output_dir, PARTS_DIR, "failures")))
    (p
     | "Once" >> beam.Create([None])
     | "WriteReport" >> beam.Map(
         _write_report, output_dir, beam.pvalue.AsSingleton(counts),
         beam.pvalue.AsSingleton(failure_counts), beam.pvalue.AsList(slices),
         beam.pvalue.AsDict(scanned), beam.pvalue.AsList(written), ls.labels, ls.notes,
         config.box_tables + config.image_tables))


def plan_files(plan_dir: str) -> list[str]:
    """The plan files of a plan folder, in order.

    Raises:
      FileNotFoundError: no plan there, or some of its files are missing.
    """
    names = sorted(n for n in os.listdir(plan_dir) if _PLAN_FILE_RE.match(n)) if \
        os.path.isdir(plan_dir) else []
    if not names:
        raise FileNotFoundError(f"{plan_dir} holds no plan (plan-NNNNN-of-MMMMM.parquet); "
                                f"run `open-sandwiches plan --output_dir {plan_dir}` first")
    total = int(_PLAN_FILE_RE.match(names[0]).group(2))
    if len(names) != total or any(int(_PLAN_FILE_RE.match(n).group(2)) != total for n in names):
        raise FileNotFoundError(f"{plan_dir}: the plan is incomplete ({len(names)} of "
                                f"{total} files); run plan again")
    return [os.path.join(plan_dir, n) for n in names]


def read_plan(plan_dir: str, columns: list[str] | None = None) -> pa.Table:
    """Every row of a plan, in file order."""
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in plan_files(plan_dir)])


def read_failures(folder: str) -> list[dict]:
    """The failure records of a plan or dataset folder."""
    with open(os.path.join(folder, FAILURES_FILE), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def clear_outputs(output_dir: str) -> None:
    """Remove an earlier plan's files, so a plan with fewer buckets leaves no stale ones."""
    if files.is_remote(output_dir):
        return  # object stores: the next plan overwrites by name; readers check the count
    for path in glob.glob(os.path.join(output_dir, "plan-*-of-*.parquet")) + [
            os.path.join(output_dir, FAILURES_FILE), os.path.join(output_dir, SUMMARY_FILE),
            os.path.join(output_dir, SUMMARY_PART)]:
        if os.path.isfile(path):
            os.remove(path)
    files.remove_tree(os.path.join(output_dir, PARTS_DIR))


def prepare(argv: list[str] | None) -> tuple[object, PlanConfig, str]:
    """Parse flags and check every input: (Beam's PipelineOptions, the config, the output
    folder). Raises a ValueError or OSError on a mistake of the user's."""
    from pipelines import cli
    return _prepared(cli.parse("plan", list(argv or [])))


def _prepared(args) -> tuple[object, PlanConfig, str]:
    settings = options.settings(vars(args), "plan")
    return prepare_settings(settings, options.pipeline_options(args.beam_args))


def prepare_settings(settings: options.PlanSettings, opts) -> tuple[object, PlanConfig, str]:
    """What prepare() returns, from settings and PipelineOptions (the Python API's way)."""
    if not settings.tables.output_dir:
        raise ValueError("--output_dir is required")
    config, _ = PlanConfig.from_settings(settings)
    return opts, config, settings.tables.output_dir


def execute(opts, config: PlanConfig, output_dir: str) -> dict:
    """Run the plan pipeline; return the summary, with the run's counters added to it."""
    clear_outputs(output_dir)
    with beam.Pipeline(options=opts) as p:
        build_pipeline(p, config, output_dir)
    summary = report.take_part(files.join_path(output_dir, SUMMARY_PART))
    summary["metrics"] = report.metrics_dict(p.result)["counters"]
    files.write_bytes(files.join_path(output_dir, SUMMARY_FILE),
                      json.dumps(summary, indent=2).encode("utf-8"))
    return summary


def run(argv: list[str] | None = None) -> dict:
    """Plan from command-line flags; return the summary."""
    return execute(*prepare(argv))


def command(args) -> int:
    """`open-sandwiches plan` with parsed flags; --json prints the summary as JSON."""
    opts, config, output_dir = _prepared(args)
    for note in config.label_set.notes:
        log.info("%s", note)
    summary = execute(opts, config, output_dir)
    if args.json:
        print(json.dumps({"output_dir": output_dir, **summary}, indent=2))
        return 0
    print(format_summary(summary))
    print(f"\nwrote {summary['plan_files']} plan files "
          f"({PLAN_FILES.format(0, summary['plan_files'])}, ...), {FAILURES_FILE}, "
          f"{SUMMARY_FILE} in {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("plan", argv)


if __name__ == "__main__":
    sys.exit(main())
