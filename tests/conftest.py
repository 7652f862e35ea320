"""Shared fixtures: generated catalogs and the real rows in tests/data."""
from __future__ import annotations

import os
import random

import pytest

from pipelines.demo import catalog

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Tests serve everything from 127.0.0.1: resolving any other host name fails loudly."""
    import socket
    real = socket.getaddrinfo
    local = {"localhost", "127.0.0.1", "::1", "127.0.0.2", "0.0.0.0", None}

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in local and not str(name).startswith(("127.", "10.", "192.168.", "169.254.",
                                                             "100.64.", "fe80:", "::ffff:")):
            raise OSError(f"test tried to reach the internet: {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def data_path(*parts: str) -> str:
    return os.path.join(DATA, *parts)


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory) -> catalog.CatalogFiles:
    """60 photos of Hamburger and Sandwich with distractors and 3 orphan boxes (V7, LF)."""
    out = tmp_path_factory.mktemp("catalog")
    return catalog.write_catalog(str(out), ["Hamburger", "Sandwich"], n_images=60, seed=7,
                                 orphan_boxes=3)


def make_pipeline():
    """A TestPipeline on the offline in-process runner (DirectRunner would try Prism first)."""
    from apache_beam.testing.test_pipeline import TestPipeline
    from pipelines.options import LOCAL_RUNNER
    return TestPipeline(runner=LOCAL_RUNNER)


@pytest.fixture(scope="session")
def _photo_site(tmp_path_factory):
    """48 rendered photos (640x480; JPEG, PNG, gray, CMYK, palette, RGBA; rotated ones)
    served by a local ImageServer whose URLs the image table uses."""
    from pipelines.demo import server
    out = tmp_path_factory.mktemp("photo_catalog")
    os.makedirs(out / "photos")
    srv = server.ImageServer(str(out / "photos"), hang_s=2.0)
    files = catalog.write_catalog(str(out), ["Hamburger", "Sandwich"], n_images=48, seed=11,
                                  photos=True, photo_size=(640, 480), base_url=srv.base_url,
                                  orphan_boxes=2)
    srv.start()
    yield files, srv
    srv.stop()


@pytest.fixture
def photo_site(_photo_site):
    """The photo catalog and its server, with faults and request counts cleared."""
    files, srv = _photo_site
    srv.reset()
    yield files, srv
    srv.reset()


def image_rows(images_csv: str):
    """The image table's rows as ImageRows (the same conversion the scan does)."""
    from pipelines import scan_rows
    return scan_rows.load_image_rows(images_csv)


def collect(pcoll, path, label: str):
    """Write a PCollection's elements to a pickle file, read back with `collected(path)`:
    matchers run in (possibly other) worker processes, so results come back by file."""
    import pickle

    import apache_beam as beam

    def dump(items, path=str(path)):
        with open(path, "wb") as f:
            pickle.dump(list(items), f)

    return (pcoll | f"{label}ToList" >> beam.combiners.ToList()
            | f"{label}Dump" >> beam.Map(dump))


def collected(path) -> list:
    import pickle
    with open(path, "rb") as f:
        return pickle.load(f)


def build_argv(files, out, cache, *extra) -> list[str]:
    """Flags of a small, fast build of a photo catalog served on 127.0.0.1; `extra` flags
    come last, so they override these (argparse keeps the last value)."""
    return ["--classes", "Hamburger", "Sandwich", *files.flags(), "--output_dir", str(out),
            "--allow_private_network", "--cache_dir", str(cache), "--image_source", "original",
            "--fetch_timeout_s", "1", "--fetch_attempts", "2", "--fetch_backoff_s", "0.01",
            "--image_size", "64", "--num_shards", "3", *extra]


def shard_digests(folder) -> dict[str, str]:
    """sha256 of every shard file in a dataset folder, by name."""
    import hashlib
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder))
            if ".tfrecord-" in name or ".array_record-" in name}


def fetch_test_config(tmp_path, **kw):
    """A FetchConfig for fetching from a local server quickly: one source, short timeouts,
    two attempts, a cache in tmp_path."""
    from pipelines import fetch
    base = dict(image_source=("original",), allow_private_network=True,
                cache_dir=str(tmp_path / "cache"), read_timeout_s=0.5, connect_timeout_s=1.0,
                backoff_s=0.01, fetch_attempts=2, max_image_bytes=2 << 20)
    base.update(kw)
    return fetch.FetchConfig(**base)


def shuffled_copy(files: catalog.CatalogFiles, out_dir, seed=1) -> catalog.CatalogFiles:
    """The same tables with rows in another order and CRLF endings."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for src in (files.bbox_csv, files.images_csv):
        with open(src, newline="") as f:
            lines = f.read().splitlines()
        head, body = lines[0], lines[1:]
        random.Random(seed).shuffle(body)
        dst = os.path.join(out_dir, os.path.basename(src))
        with open(dst, "w", newline="") as f:
            f.write("\r\n".join([head] + body) + "\r\n")
        paths.append(dst)
    return catalog.CatalogFiles(files.class_descriptions, files.hierarchy, *paths)
