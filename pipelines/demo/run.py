"""`open-sandwiches demo`: the whole tool on a generated mini Open Images, offline.

    open-sandwiches demo --output_dir demo_out

Writes a synthetic catalog for two classes (Hamburger and Sandwich by default) in the real
table formats, then runs each stage the tool has on it, printing what each produced.
"""
from __future__ import annotations

import argparse
import os
import sys

from pipelines import plan
from pipelines.demo import catalog


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="open-sandwiches demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="demo_out")
    p.add_argument("--classes", nargs="+", default=["Hamburger", "Sandwich"])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    files = catalog.write_catalog(os.path.join(args.output_dir, "catalog"), args.classes,
                                  args.images, args.seed, orphan_boxes=2)
    print(f"1. catalog: {args.images} photos of {', '.join(args.classes)} in "
          f"{os.path.join(args.output_dir, 'catalog')}")
    plan_dir = os.path.join(args.output_dir, "plan")
    print(f"2. plan -> {plan_dir}\n")
    return plan.main(["--classes", *args.classes, *files.flags(), "--output_dir", plan_dir,
                      "--seed", str(args.seed)])


if __name__ == "__main__":
    sys.exit(main())
