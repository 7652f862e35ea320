"""Every flag of `plan` and `build`, in one PipelineOptions subclass.

Beam's own flags (`--runner`, `--direct_num_workers`, Dataflow and Flink flags) pass
straight through; ours are snake_case like Beam's.

    open-sandwiches plan --classes Hamburger Sandwich --bbox_csv boxes.csv \
        --images_csv images.csv --output_dir out/plan
"""
from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import csvscan, join, rows
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
        g.add_argument("--scan_range_mb", type=int, default=csvscan.DEFAULT_RANGE_BYTES >> 20,
                       help="Size of the byte ranges the tables are scanned in.")
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


def parse(argv: list[str] | None) -> OpenSandwichesOptions:
    """Parse flags; pick the offline in-process runner unless one was chosen.

    DirectRunner is translated to LOCAL_RUNNER for the reason given above.
    """
    options = OpenSandwichesOptions(argv or [])
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner"):
        standard.runner = LOCAL_RUNNER
    return options


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam is chatty at INFO; keep its lines for --verbose.
    logging.getLogger("apache_beam").setLevel(logging.DEBUG if verbose else logging.WARNING)
