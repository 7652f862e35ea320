"""`open-sandwiches`: one command line, a parser per command, the modules' work behind it.

    open-sandwiches --version
    open-sandwiches COMMAND --help
    open-sandwiches classes --search burger

Every command is declared here: its summary, description and example, its flags (those
of plan, build and train generated from their config dataclasses in pipelines/options.py
and model/config.py; the few of the others below) and the function that runs it. Parsing
imports none of Beam, TensorFlow or TFDS, so `--help` and a misspelt flag answer at once;
the module that does the work is imported only to run it. Each module's `main(argv)`, and
so `python -m pipelines.build ...`, goes through the same `run()`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import sys
from typing import Callable

from pipelines import __version__, command, flags
from pipelines.command import Parser
from pipelines.flags import UsageError, default_text


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand.

    Attributes:
      summary: its line in `open-sandwiches --help`.
      description, example: the top and the end of its --help.
      flags: adds its flags to a parser (light: no Beam, no TensorFlow).
      run: "module:function", called with the parsed arguments, returning the exit code.
      json: it has --json.
      beam: flags it does not know may be Beam's (plan, build).
      config: it reads --config files.
      usage: its positional arguments, for the usage line.
    """

    summary: str
    description: str
    example: str
    flags: Callable[[Parser], None]
    run: str
    json: bool = False
    beam: bool = False
    config: bool = False
    usage: str = ""


def _add(group, name: str, help: str, default=None, **kwargs) -> None:
    """A flag whose help shows its default."""
    group.add_argument(name, default=default, help=help + default_text(default), **kwargs)


def _classes_flags(p: Parser) -> None:
    from pipelines import options
    options.PLAN_GROUPS["selection"].add_to(p)
    g = p.add_argument_group("look-up")
    _add(g, "--search", "classes whose name contains TEXT", metavar="TEXT")
    g.add_argument("--tree", metavar="NAME", nargs="?", const="Entity",
                   help="the indented subtree under NAME (default: the whole hierarchy)")
    _add(g, "--radial_tree", "write the hierarchy as a self-contained Vega radial tree page",
         metavar="FILE.html")
    _add(g, "--plan", "with --radial_tree: box counts from a plan folder", metavar="DIR")


def _plan_flags(p: Parser) -> None:
    from pipelines import options
    options.add_plan_flags(p)


def _build_flags(p: Parser) -> None:
    from pipelines import options
    options.add_build_flags(p)


def _verify_flags(p: Parser) -> None:
    p.add_argument("dataset_dir", help="a dataset folder: <output_dir>/<name>/<version>")
    g = p.add_argument_group("comparison")
    _add(g, "--against", "another build of the same dataset: list the photos whose source "
                         "bytes differ (exit 1 if any)", metavar="DIR")


def _metadata_flags(p: Parser) -> None:
    from pipelines import metadata
    p.add_argument("action", choices=("list", "download"),
                   help="list the official files, or download them into the cache")
    g = p.add_argument_group("files")
    _add(g, "--version", "Open Images version", "v7", choices=tuple(metadata.FILES))
    _add(g, "--split", "train, validation, test or all", "validation")
    _add(g, "--metadata_base_url", "where the files are (a mirror, say)", metadata.BASE_URL)
    _add(g, "--metadata_cache", "the download cache (default: "
                                "~/.cache/open-sandwiches/metadata)", "")


def _preview_flags(p: Parser) -> None:
    g = p.add_argument_group("what to draw (one of)")
    _add(g, "--plan", "a plan folder (with plan-*.parquet)", metavar="DIR")
    _add(g, "--dataset", "a dataset folder (<output_dir>/<name>/<version>)", metavar="DIR")
    g = p.add_argument_group("drawing")
    _add(g, "--cache_dir", "the download cache the photos come from (default: "
                           "~/.cache/open-sandwiches/images)", "")
    _add(g, "--per_class", "photos per class", 4, type=int)
    _add(g, "--output", "with --plan: the PNG to write (default: PLAN/photos.png)", "")


def _train_flags(p: Parser) -> None:
    from model import config
    config.add_flags(p)


def _evaluate_flags(p: Parser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--model_dir", required=True, help="a folder written by train")
    _add(g, "--dataset_dir", "the dataset to evaluate on (default: the one the model "
                             "trained on)", "")


def _predict_flags(p: Parser) -> None:
    p.add_argument("model_dir", help="a folder written by train")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")


def _export_flags(p: Parser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--model_dir", required=True, help="a folder written by train")
    g.add_argument("--output", required=True, help="the SavedModel folder to write")
    _add(g, "--overwrite", "replace a non-empty --output", False, action="store_true")


def _demo_flags(p: Parser) -> None:
    g = p.add_argument_group("demo")
    _add(g, "--output_dir", "where everything goes", "demo_out")
    _add(g, "--classes", "the classes drawn in the synthetic photos",
         ["Hamburger", "Sandwich"], nargs="+")
    _add(g, "--images", "photos in the catalog", 240, type=int)
    _add(g, "--image_size", "crop side, in pixels", 96, type=int)
    _add(g, "--epochs", "most training epochs", 15, type=int)
    _add(g, "--seed", "seed of the catalog, the splits and the training", 0, type=int)


def _catalog_flags(p: Parser) -> None:
    g = p.add_argument_group("catalog")
    g.add_argument("--output_dir", required=True, help="where the tables are written")
    _add(g, "--classes", "classes that the photos show", ["Hamburger", "Sandwich"], nargs="+")
    _add(g, "--images", "photos in the image table", 200, type=int)
    _add(g, "--seed", "seed of every generated value", 0, type=int)
    _add(g, "--version", "the class list's format", "v7", choices=("v4", "v7"))
    _add(g, "--box_layout", "the box table's columns (13 as in V4/V5 and validation, 21 "
                            "as in oidv6 train)", "boxes_13", choices=("boxes_13", "boxes_21"))
    _add(g, "--crlf", "CRLF line endings", False, action="store_true")
    _add(g, "--base_url", "the photo server the image table's URLs point at",
         "http://127.0.0.1:8000")
    _add(g, "--photos", "also render the photos (into photos/, for serve-images)", False,
         action="store_true")


def _serve_flags(p: Parser) -> None:
    from pipelines.demo import server
    p.add_argument("catalog_dir", help="a catalog written with photos (its photos/ folder)")
    g = p.add_argument_group("server")
    _add(g, "--port", "the port on 127.0.0.1 (0: a free one)", 8000, type=int)
    _add(g, "--pool", "serve any ImageID from the catalog's photos (full-size tables)",
         False, action="store_true")
    g = p.add_argument_group("faults")
    _add(g, "--fault_rate", "the fraction of photos whose originals fail", 0.0, type=float)
    _add(g, "--fault_kinds", "the faults --fault_rate cycles through", list(server.FAULTS),
         nargs="+", choices=list(server.FAULTS) + list(server.SLOW_FAULTS), metavar="KIND")
    _add(g, "--latency_ms", "added to every answer", 0.0, type=float)
    _add(g, "--hang_s", "how long a hang fault stalls", 5.0, type=float)
    _add(g, "--storm_rate", "answer this fraction of all requests 429 with Retry-After",
         0.0, type=float)
    _add(g, "--retry_after", "the Retry-After of --storm_rate's 429s", "1")
    _add(g, "--rate_limit", "serve this many requests a second at most (a token bucket); "
                            "answer the rest 429 with Retry-After (0: no limit)", 0.0, type=float)
    _add(g, "--rate_burst", "the bucket's size (default: one second of --rate_limit)", None,
         type=float)


COMMANDS: dict[str, Command] = {
    "classes": Command(
        "search class names, show the hierarchy, check a selection",
        "Find Open Images class names, see the hierarchy, and check what a selection "
        "becomes as labels. Works offline on the packaged V4 and V7 class lists.",
        "open-sandwiches classes --search burger\n"
        "open-sandwiches classes --classes Sandwich --include_subclasses --json",
        _classes_flags, "pipelines.classes:command", json=True),
    "plan": Command(
        "scan the tables and show what you would get (no download)",
        "Scan the box table for the classes and the image table for their photos, join "
        "them, assign splits and apply limits; write plan-*.parquet, failures.jsonl and "
        "summary.json to --output_dir and print the counts. Nothing is downloaded.",
        "open-sandwiches plan --classes Hamburger Sandwich \\\n"
        "    --bbox_csv oidv6-train-annotations-bbox.csv \\\n"
        "    --images_csv train-images-boxable-with-rotation.csv --output_dir out/plan",
        _plan_flags, "pipelines.plan:command", json=True, beam=True, config=True),
    "build": Command(
        "plan, download, crop and write the TFDS dataset",
        "Plan, download each photo (concurrent, retried, cached, verified), crop every "
        "box and write a sharded TFDS dataset to <output_dir>/<name>/<version>, with "
        "its manifest, failures, attribution and build_report.json, as one Beam job.",
        "open-sandwiches build --classes Hamburger Sandwich \\\n"
        "    --bbox_csv oidv6-train-annotations-bbox.csv \\\n"
        "    --images_csv train-images-boxable-with-rotation.csv --output_dir out\n"
        "open-sandwiches build --config out/hamburger_sandwich/1.0.0/build_report.json "
        "--output_dir again",
        _build_flags, "pipelines.build:command", json=True, beam=True, config=True),
    "verify": Command(
        "check a built dataset against its manifest",
        "Re-read every shard and check each example, its counts and each shard's sha256 "
        "against the manifest, dataset_info.json and build_report.json. Exit 0 only "
        "when everything matches and the build completed.",
        "open-sandwiches verify out/hamburger_sandwich/1.0.0",
        _verify_flags, "pipelines.verify:command", json=True, usage="DATASET_DIR [flags]"),
    "metadata": Command(
        "list or download the official Open Images tables",
        "List the official box and image tables of a version and split (sizes, "
        "checksums), or download them into the cache, resuming and checking them.",
        "open-sandwiches metadata list --version v7 --split all\n"
        "open-sandwiches metadata download --version v7 --split validation",
        _metadata_flags, "pipelines.metadata:command", json=True,
        usage="{list,download} [flags]"),
    "preview": Command(
        "PNG grids of photos with boxes, crops, counts, failures",
        "Draw a plan's source photos with their boxes, or a dataset's photo grid, crops "
        "per class and split, and charts of examples and failures.",
        "open-sandwiches preview --dataset out/hamburger_sandwich/1.0.0",
        _preview_flags, "pipelines.preview:command"),
    "train": Command(
        "train a Keras classifier on a built dataset",
        "Train the article's classifier (or a pretrained MobileNetV2 / EfficientNetB0) "
        "on a dataset written by build. Rerun the same command after a kill and it "
        "resumes from the last finished epoch.",
        "open-sandwiches train --dataset_dir out/hamburger_sandwich/1.0.0 --model_dir out/model",
        _train_flags, "model.train:command", config=True),
    "evaluate": Command(
        "per-class precision and recall, confusion matrix, mistakes",
        "Evaluate a trained model on validation and test: metrics.json, "
        "confusion_matrix.png and mistakes.png in --model_dir.",
        "open-sandwiches evaluate --model_dir out/model",
        _evaluate_flags, "model.evaluate:command", json=True),
    "predict": Command(
        "class probabilities for image files",
        "Class probabilities for image files, resized to the model's input as in training.",
        "open-sandwiches predict out/model my_lunch.jpg",
        _predict_flags, "model.evaluate:predict_command", json=True,
        usage="MODEL_DIR IMAGE [IMAGE ...] [flags]"),
    "export": Command(
        "a SavedModel that serves JPEG bytes: class names, probabilities",
        "Write a SavedModel whose serving signature takes encoded images and returns "
        "class names and probabilities; serving it needs TensorFlow only.",
        "open-sandwiches export --model_dir out/model --output out/serving",
        _export_flags, "model.export:command"),
    "demo": Command(
        "run the tool offline on a generated mini Open Images",
        "Generate a mini Open Images (tables and photos), serve it on 127.0.0.1 with a "
        "few realistic faults, then plan, build, train and evaluate, offline.",
        "open-sandwiches demo --output_dir demo_out",
        _demo_flags, "pipelines.demo.run:command"),
    "demo-catalog": Command(
        "write a synthetic Open Images catalog",
        "Write a synthetic catalog in the real table formats (class list, hierarchy, box "
        "and image tables) for trying things out.",
        "open-sandwiches demo-catalog --output_dir cat --classes Hamburger Sandwich --images 200",
        _catalog_flags, "pipelines.demo.catalog:command"),
    "serve-images": Command(
        "serve a catalog's photos on 127.0.0.1, with faults",
        "Serve a demo catalog's photos on 127.0.0.1 under the URL shapes a build uses, "
        "with realistic faults, for trying a build offline. Ctrl-C stops it.",
        "open-sandwiches serve-images demo_out/catalog --port 8000 --fault_rate 0.2",
        _serve_flags, "pipelines.demo.server:command", usage="CATALOG_DIR [flags]"),
}


def parser(name: str) -> Parser:
    """The command's parser (builds without Beam or TensorFlow)."""
    spec = COMMANDS[name]
    p = Parser(name, spec.description, spec.example, spec.usage)
    spec.flags(p)
    p.output_flags(json_flag=spec.json)
    return p


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse a command line (its --config file first, so the command line wins).

    Beam commands get `beam_args`: the flags for Beam's PipelineOptions.

    Raises:
      UsageError: an unknown or misspelt flag (with the closest one), a bad value, an
        unknown key in the --config file.
    """
    spec = COMMANDS[name]
    p = parser(name)
    ours = p.flags
    argv = flags.snake_case(argv, ours)
    path, argv = flags.expand_config(argv) if spec.config else ("", argv)
    file_argv, file_beam = _config_file(name, path, p) if path else ([], [])
    args, rest = p.parse_known_args(file_argv + argv)
    args.config = path
    if spec.beam:
        from pipelines import options
        args.beam_args = options.beam_args(vars(args), file_beam + rest)
        options.check_beam_args(args.beam_args, ours)  # also the values Beam checks
    elif rest:
        first = next((a for a in rest if a.startswith("-")), rest[0])
        if not first.startswith("-"):
            raise UsageError(f"unexpected argument {first!r}")
        raise UsageError(f"unknown flag {first.split('=')[0]}"
                         + flags.suggest(first.split("=")[0], ours))
    return args


def _config_file(name: str, path: str, p: Parser) -> tuple[list[str], list[str]]:
    """A --config file's argv for our flags (those of parser `p`) and for Beam's (checked
    against Beam)."""
    if not COMMANDS[name].beam:
        return flags.config_argv(path, p.flags, single=p.single)[0], []
    from pipelines import options
    ignore = options.flag_names("build") if name == "plan" else ()  # a build's config plans too
    ours_argv, values = flags.config_argv(path, p.flags, options.beam_knows, ignore, p.single)
    beam = options.beam_argv_of(values)
    options.check_beam_args(beam, p.flags, source=path)
    return ours_argv, beam


@functools.lru_cache(maxsize=None)
def _function(where: str) -> Callable:
    module, _, function = where.partition(":")
    return getattr(importlib.import_module(module), function)


def run(name: str, argv: list[str] | None = None) -> int:
    """Parse and run one command; a bad input is one `error:` line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    command.setup_output(verbose, quiet="--quiet" in argv)

    def body() -> int:
        args = parse(name, argv)  # first: --help and a bad flag need no heavy import
        return _function(COMMANDS[name].run)(args)

    return command.run(body, verbose)


def usage() -> str:
    lines = ["usage: open-sandwiches COMMAND [FLAGS]", "       open-sandwiches --version",
             "", "commands:"]
    lines += [f"  {name:<14} {spec.summary}" for name, spec in COMMANDS.items()]
    lines += ["", "open-sandwiches COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"open-sandwiches {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}{flags.suggest(name, COMMANDS)} "
              f"(open-sandwiches --help lists the commands)", file=sys.stderr)
        return 2
    return run(name, rest)


def readme_usage(width: int = 96) -> str:
    """Every command's --help, as the README's command reference shows it."""
    out = ["```", usage(), "```"]
    for name in COMMANDS:
        p = parser(name)
        p.formatter_class = functools.partial(argparse.RawDescriptionHelpFormatter,
                                              width=width)
        out += ["", "<details><summary><code>open-sandwiches " + name + " --help</code>"
                "</summary>", "", "```", p.format_help().rstrip(), "```", "", "</details>"]
    return "\n".join(out)


def write_readme_usage(path: str = "README.md") -> None:
    """Rewrite the README's command reference (between its usage markers) from the parsers;
    tests/test_cli.py checks that the README matches."""
    start, end = "<!-- usage: begin -->", "<!-- usage: end -->"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{start}\n{readme_usage()}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
