"""`open-sandwiches demo`: the whole tool on a generated mini Open Images, offline.

    open-sandwiches demo --output_dir demo_out

Writes a synthetic catalog for two classes (Hamburger and Sandwich by default) in the real
table formats, with rendered photos; serves them on 127.0.0.1 with a few realistic faults
(deleted photos, placeholders, wrong checksums, flaky responses); runs plan, build
(DirectRunner), train and evaluate; stops the server; and prints where everything is and
the headline numbers. A rerun reuses the download cache (demo_out/cache).
"""
from __future__ import annotations

import json
import os
import sys
import time

from pipelines.demo import catalog, server

# Faults given to a few photos' originals, as the internet does; the thumbnails still work,
# so --image_source original thumbnail rescues most of them.
DEMO_FAULTS = ("placeholder", "not_found", "wrong_md5", "error_then_ok", "gone", "html")


def _faults(files: catalog.CatalogFiles, every: int = 12) -> dict[str, str]:
    import csv
    with open(files.images_csv, newline="") as f:
        ids = [row["ImageID"] for row in csv.DictReader(f)]
    return {image_id: DEMO_FAULTS[k % len(DEMO_FAULTS)]
            for k, image_id in enumerate(ids[::every])}


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("demo", argv)


def command(args) -> int:
    """`open-sandwiches demo` with parsed flags (pipelines/cli.py declares them)."""
    from model import evaluate, train
    from model.config import TrainConfig
    from pipelines import build, classes, plan
    from pipelines.ontology import Ontology
    from pipelines.write import default_dataset_name

    start = time.perf_counter()
    out = os.path.abspath(args.output_dir)
    quiet = ["--quiet"] if args.quiet else []
    photo_dir = os.path.join(out, "catalog", "photos")
    os.makedirs(photo_dir, exist_ok=True)
    srv = server.ImageServer(photo_dir)
    files = catalog.write_catalog(os.path.join(out, "catalog"), args.classes, args.images,
                                  args.seed, photos=True, photo_size=(640, 480),
                                  base_url=srv.base_url, orphan_boxes=2)
    srv.faults = _faults(files)
    print(f"1. catalog: {args.images} photos of {', '.join(args.classes)} in {out}/catalog, "
          f"served on {srv.base_url} with {len(srv.faults)} faulty originals")
    common = ["--classes", *args.classes, *files.flags(), "--seed", str(args.seed)]
    ont = Ontology.load()
    name = default_dataset_name([ont.name(ont.resolve(c)) for c in args.classes])
    dataset_dir = os.path.join(out, "dataset", name, "1.0.0")
    with srv:
        print(f"\n2. plan -> {out}/plan\n")
        plan.main(common + ["--output_dir", os.path.join(out, "plan")] + quiet)
        classes.main(["--classes", *args.classes, "--radial_tree",
                      os.path.join(out, "classes_tree.html"), "--plan", os.path.join(out, "plan")])
        print(f"\n3. build -> {out}/dataset\n")
        code = build.main(common + [
            "--output_dir", os.path.join(out, "dataset"), "--overwrite",
            "--cache_dir", os.path.join(out, "cache"), "--allow_private_network",
            "--image_source", "original", "thumbnail", "--image_size", str(args.image_size),
            # the default source list starts with the CVDF mirror: keep it on 127.0.0.1
            "--cvdf_base_url", f"{srv.base_url}/cvdf",
            "--fetch_timeout_s", "5", "--fetch_backoff_s", "0.1", "--dataset_name", name] + quiet)
        if code != 0:
            print("build failed", file=sys.stderr)
            return code
    model_dir = os.path.join(out, "model")
    print(f"\n4. train -> {model_dir}\n")
    summary = train.train(TrainConfig(dataset_dir=dataset_dir, model_dir=model_dir,
                                      epochs=args.epochs, seed=args.seed, overwrite=True))
    print(f"   {summary['epochs_run']} epochs in {summary['seconds']} s (best: epoch "
          f"{summary['best_epoch']})")
    print(f"\n5. evaluate -> {model_dir}/metrics.json\n")
    metrics = evaluate.evaluate(model_dir)
    print(evaluate.format_metrics(metrics))
    report = json.load(open(os.path.join(dataset_dir, "build_report.json")))
    _headline(out, dataset_dir, model_dir, report, metrics, time.perf_counter() - start)
    return 0


def _headline(out: str, dataset_dir: str, model_dir: str, report: dict, metrics: dict,
              seconds: float) -> None:
    print("\n" + "=" * 72)
    print(f"demo done in {seconds:.0f} s. Everything is under {out}:")
    print(f"  plan        {out}/plan/plan-*.parquet, summary.json")
    print(f"  dataset     {dataset_dir}")
    print(f"              (load: tfds.builder_from_directory('{dataset_dir}'))")
    print(f"  previews    {dataset_dir}/previews/photos.png, crops.png, counts.png, failures.png")
    print(f"  classes     {out}/classes_tree.html (the hierarchy as a radial tree)")
    print(f"  model       {model_dir}/model.keras, training_curves.png, "
          f"confusion_matrix.png, mistakes.png")
    print("\ncrops per class and split:")
    for label, counts in report["examples"].items():
        print(f"  {label:<20} " + "  ".join(f"{s} {counts[s]}" for s in ("train", "validation", "test")))
    print("failures by reason:")
    for reason, n in report["failures_by_stage_and_reason"].items():
        print(f"  {reason}: {n}")
    sources = {k.split("/")[1]: v for k, v in report["metrics"]["counters"].items()
               if k.startswith("fetch/from_") and v}
    print(f"photos by source: {sources}")
    if "test" in metrics:
        t = metrics["test"]
        print(f"test accuracy {t['accuracy']:.3f} on {t['examples']} crops")
        for label, m in t["per_class"].items():
            print(f"  {label:<20} precision {m['precision']:.3f}  recall {m['recall']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
