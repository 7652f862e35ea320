"""The `open-sandwiches` command: one entry point, one subcommand per module's `main`.

    open-sandwiches classes --search burger
    open-sandwiches plan --classes Hamburger Sandwich --bbox_csv ... --images_csv ... --output_dir DIR
    open-sandwiches demo-catalog --output_dir DIR --classes Hamburger Sandwich --images 200

Subcommand modules are imported only when chosen, so `classes` starts without Beam or TF.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "classes": ("pipelines.classes", "search class names, show the hierarchy, check a selection"),
    "plan": ("pipelines.plan", "scan the tables and show what you would get (no download)"),
    "build": ("pipelines.build", "plan, download, crop and write the TFDS dataset"),
    "verify": ("pipelines.verify", "check a built dataset against its manifest"),
    "metadata": ("pipelines.metadata", "list or download the official Open Images tables"),
    "preview": ("pipelines.preview", "PNG grids of photos with boxes, crops, counts, failures"),
    "train": ("model.train", "train a Keras classifier on a built dataset"),
    "evaluate": ("model.evaluate", "per-class precision and recall, confusion matrix, mistakes"),
    "predict": ("model.evaluate:predict_main", "class probabilities for image files"),
    "export": ("model.export", "a SavedModel that serves JPEG bytes: class names, probabilities"),
    "demo": ("pipelines.demo.run", "run the tool offline on a generated mini Open Images"),
    "demo-catalog": ("pipelines.demo.catalog", "write a synthetic Open Images catalog"),
    "serve-images": ("pipelines.demo.server", "serve a catalog's photos on 127.0.0.1, with faults"),
}


def usage() -> str:
    lines = ["usage: open-sandwiches COMMAND [FLAGS]", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "open-sandwiches COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module_name), function or "main")(rest)


if __name__ == "__main__":
    sys.exit(main())
