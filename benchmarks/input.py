"""Benchmark: our tf.data input pipeline vs keras.utils.image_dataset_from_directory.

Builds a dataset from generated photos with `build --export_folders`, so both read the
same crops: ours from the TFRecord shards (tfds.builder_from_directory, JPEG decoded once
in a parallel map), Keras's from one JPEG file per crop; and the same build again with
`--file_format array_record` (from the download cache), read by ours and, at random, by
TFDS's `as_data_source` (every example by a shuffled index, decoded). Same batch size (16,
the article's) and image size; each timing is `--passes` full passes (so it lasts seconds),
no caching, interleaved repeats. Also shows ours with its in-memory cache warm (what epochs
2+ cost). Target: ours / Keras >= 1.0.

    python -m benchmarks.input [--photos 600] [--image_size 128] [--passes 20]
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
    p.add_argument("--passes", type=int, default=20, help="full passes per timing")
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
    common = ["--classes", "Hamburger", "Sandwich", *files.flags(), "--allow_private_network",
              "--cache_dir", os.path.join(work, "cache"), "--image_source", "original",
              "--image_size", str(args.image_size), "--quiet", "--no_previews"]
    with srv:
        build.main([*common, "--output_dir", os.path.join(work, "ds"),
                    "--export_folders", os.path.join(work, "folders")])
        build.main([*common, "--output_dir", os.path.join(work, "ar"),
                    "--file_format", "array_record"])
    dataset_dir = os.path.join(work, "ds", "hamburger_sandwich", "1.0.0")
    array_dir = os.path.join(work, "ar", "hamburger_sandwich", "1.0.0")
    size, batch = args.image_size, 16

    def ours(cache="false", folder=dataset_dir):
        return data.make_dataset(folder, "train", size, batch, True, 0, cache)

    import numpy as np
    import tensorflow_datasets as tfds
    source = tfds.builder_from_directory(array_dir).as_data_source(split="train")

    class RandomAccess:
        """Every example of the split by a shuffled index, decoded, as batches."""

        def __iter__(self):
            order = np.random.default_rng(0).permutation(len(source))
            for start in range(0, len(order), batch):
                yield np.stack([source[int(i)]["image"] for i in order[start:start + batch]]), None

    def keras_folders():
        return keras.utils.image_dataset_from_directory(
            os.path.join(work, "folders", "train"), image_size=(size, size), batch_size=batch,
            shuffle=True, seed=0, verbose=False)

    def passes(ds) -> tuple[float, int]:
        start = time.perf_counter()
        n = sum(int(images.shape[0]) for _ in range(args.passes) for images, _ in ds)
        return time.perf_counter() - start, n // args.passes

    times = {"ours": [], "keras": [], "ours_cached": [], "ours_ar": [], "random": []}
    cached = ours("true")
    passes(cached)  # fill the cache
    makers = (("ours", ours), ("keras", keras_folders), ("ours_cached", lambda: cached),
              ("ours_ar", lambda: ours(folder=array_dir)), ("random", RandomAccess))
    for _ in range(args.repeats):
        for key, make in makers:
            times[key].append(passes(make()))
    print(f"\n{times['ours'][0][1]} training crops, batch {batch}, {size}x{size}, "
          f"{args.passes} passes a timing, best of {args.repeats}\n")
    print(f"{'input pipeline':<50}{'seconds':>9}{'images/s':>10}{'ratio':>8}")
    base = min(t for t, _ in times["keras"])
    for label, key in (("keras image_dataset_from_directory", "keras"),
                       ("ours (TFRecord shards, decode once)", "ours"),
                       ("ours, in-memory cache warm (epochs 2+)", "ours_cached"),
                       ("ours (ArrayRecord shards)", "ours_ar"),
                       ("tfds as_data_source, shuffled random access", "random")):
        secs = min(t for t, _ in times[key])
        n = times[key][0][1] * args.passes
        print(f"{label:<50}{secs:>9.2f}{n / secs:>10.0f}{base / secs:>8.2f}")
    print("\ntarget: ours / keras >= 1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
