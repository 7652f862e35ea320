"""`open-sandwiches classes`: find class names, see the hierarchy, check a selection.

    open-sandwiches classes --search burger
    open-sandwiches classes --tree Sandwich
    open-sandwiches classes --classes Hamburger Sandwich --include_subclasses --json

Works offline on the packaged V4 and V7 class lists and hierarchy. No Beam import.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipelines.ontology import ROOT_MID, Ontology, build_label_set


def run(args: argparse.Namespace) -> str:
    """The command's output as text (JSON when --json)."""
    ont = Ontology.load(args.version, args.class_descriptions, args.hierarchy)
    selected: set[str] = set()
    if args.classes:
        label_set = build_label_set(ont, args.classes, args.include_subclasses, args.exclude,
                                    args.relabel_to_parent)
        selected = set(label_set.mid_to_index)
        if args.tree is None and args.search is None and not args.radial_tree:
            if args.json:
                return json.dumps(label_set.to_json(ont), indent=2)
            lines = []
            for i, label in enumerate(label_set.labels):
                mids = [m for m in label_set.mids if label_set.mid_to_index[m] == i]
                lines.append(f"{i}: {label} <- " + ", ".join(f"{ont.name(m)} ({m})" for m in mids))
            return "\n".join(lines + [f"note: {n}" for n in label_set.notes])
    if args.radial_tree:
        from pipelines import radial_tree
        counts = _plan_counts(args.plan) if args.plan else None
        requested = {ont.resolve(c) for c in args.classes}
        html_path, spec_path, n = radial_tree.write(args.radial_tree, ont, selected, requested,
                                                    counts)
        return f"wrote {html_path} ({n} nodes) and {spec_path}"
    if args.tree is not None:
        root = ROOT_MID if args.tree.casefold() == "entity" else ont.resolve(args.tree)
        if args.json:
            return json.dumps(ont.tree_json(root), indent=2)
        legend = ["(* = selected)"] if selected else []
        return "\n".join(ont.tree_lines(root, selected) + legend)
    mids = ont.search(args.search) if args.search is not None else sorted(
        ont.names, key=lambda m: ont.names[m].casefold())
    if args.json:
        return json.dumps([{"mid": m, "name": ont.names[m]} for m in mids], indent=2)
    if not mids:
        hint = ont.suggest(args.search or "")
        return f"no class contains {args.search!r}" + (f"; close: {', '.join(hint)}" if hint else "")
    return "\n".join(f"{m:<12} {ont.names[m]}" for m in mids)


def _plan_counts(plan_dir: str) -> dict[str, int]:
    """Boxes per MID in a plan."""
    from pipelines import plan
    return plan.read_plan(plan_dir, columns=["mid"]).to_pandas().mid.value_counts().to_dict()


def command(args: argparse.Namespace) -> int:
    """`open-sandwiches classes` with parsed flags (pipelines/cli.py declares them)."""
    print(run(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("classes", argv)


if __name__ == "__main__":
    sys.exit(main())
