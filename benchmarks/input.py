"""Benchmark: our tf.data input pipeline vs keras.utils.image_dataset_from_directory.

Builds a dataset from generated photos with `build --export_folders`, so both read the
same crops: ours from the TFRecord shards (tfds.builder_from_directory, JPEG decoded once
in a parallel map), Keras's from one JPEG file per crop. Same batch size (16, the
article's) and image size; one full pass each, no caching, interleaved repeats. Also shows
ours with its in-memory cache warm (what epochs 2+ cost). Target: ours / Keras >= 1.0.

    python -m benchmarks.input [--photos 600] [--image_size 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=600)
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    import keras

    from model import data
    from pipelines import build
    from pipelines.demo import catalog, server

    work = tempfile.mkdtemp(prefix="bench_input_")
    os.makedirs(os.path.join(work, "photos"))
    srv = server.ImageServer(os.path.join(work, "photos"))
    files = catalog.write_catalog(work, ["Hamburger", "Sandwich"], args.photos, seed=9,
                                  photos=True, photo_size=(640, 480), base_url=srv.base_url)
    with srv:
        build.main(["--classes", "Hamburger", "Sandwich", *files.flags(), "--output_dir",
                    os.path.join(work, "ds"), "--allow_private_network", "--cache_dir",
                    os.path.join(work, "cache"), "--image_source", "original", "--image_size",
                    str(args.image_size), "--export_folders", os.path.join(work, "folders"),
                    "--quiet"])
    dataset_dir = os.path.join(work, "ds", "hamburger_sandwich", "1.0.0")
    size, batch = args.image_size, 16

    def ours(cache="false"):
        return data.make_dataset(dataset_dir, "train", size, batch, True, 0, cache)

    def keras_folders():
        return keras.utils.image_dataset_from_directory(
            os.path.join(work, "folders", "train"), image_size=(size, size), batch_size=batch,
            shuffle=True, seed=0, verbose=False)

    def one_pass(ds) -> tuple[float, int]:
        start = time.perf_counter()
        n = sum(int(images.shape[0]) for images, _ in ds)
        return time.perf_counter() - start, n

    times = {"ours": [], "keras": [], "ours_cached": []}
    cached = ours("true")
    one_pass(cached)  # fill the cache
    for _ in range(args.repeats):
        for key, make in (("ours", ours), ("keras", keras_folders), ("ours_cached", lambda: cached)):
            secs, n = one_pass(make())
            times[key].append((secs, n))
    print(f"\n{times['ours'][0][1]} training crops, batch {batch}, {size}x{size}, best of "
          f"{args.repeats}\n")
    print(f"{'input pipeline':<46}{'seconds':>9}{'images/s':>10}{'ratio':>8}")
    base = min(t for t, _ in times["keras"])
    for label, key in (("keras image_dataset_from_directory", "keras"),
                       ("ours (TFRecord shards, decode once)", "ours"),
                       ("ours, in-memory cache warm (epochs 2+)", "ours_cached")):
        secs = min(t for t, _ in times[key])
        n = times[key][0][1]
        print(f"{label:<46}{secs:>9.2f}{n / secs:>10.0f}{base / secs:>8.2f}")
    print("\ntarget: ours / keras >= 1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
