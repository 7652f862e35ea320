"""The official Open Images metadata files: names, URLs, sizes, checksums, and downloading them.

    open-sandwiches metadata list --version v7
    open-sandwiches metadata download --version v7 --split validation

Knows which box and image tables each version (V4 to V7) and split use, downloads them into
a cache with a progress bar (bytes, rate, ETA), resumes a partial file with an HTTP Range
request, writes to a temp name and renames, and checks the official size and checksum
where they are known. `plan` and `build` call `ensure()` when given `--split` instead of
explicit table paths. `--metadata_base_url` points everything at a mirror (tests use a
local one), with the same code path.

Sizes and checksums: from the datasets-mila mirror's md5sums and git-annex keys and
xhpmoonx's Git-LFS pointers, as collected in the project's shared notes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time

import requests

from schemas.records import SPLITS

BASE_URL = "https://storage.googleapis.com/openimages"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One official file: its path under the base URL and what it must hash to."""

    path: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


_V4_BOXES = {s: RemoteFile(f"2018_04/{s}/{s}-annotations-bbox.csv") for s in SPLITS}
_V5_BOXES = {
    "train": _V4_BOXES["train"],
    "validation": RemoteFile("v5/validation-annotations-bbox.csv", 25105048,
                             md5="c5e8200df129ea6867e913e8b21fcab9"),
    "test": RemoteFile("v5/test-annotations-bbox.csv", 77484237,
                       md5="1cc058a7003b4e73d47642276e9b123b"),
}
_V6_BOXES = {**_V5_BOXES, "train": RemoteFile("v6/oidv6-train-annotations-bbox.csv", 2258447590,
                                              md5="3c3e70cfaba5757ea5c2604b19cac3b2")}
_IMAGES = {
    "train": RemoteFile("2018_04/train/train-images-boxable-with-rotation.csv", 638407721,
                        md5="a4ac0bcedb5c2df4d1b1230dc6b41b8f"),
    "validation": RemoteFile("2018_04/validation/validation-images-with-rotation.csv", 15245485,
                             md5="643a54e43b0bab8acce8817b4a569780"),
    "test": RemoteFile("2018_04/test/test-images-with-rotation.csv", 45227339,
                       md5="d832feb775b3cb78077bf8ae350adce5"),
}
_HIERARCHY = RemoteFile("2018_04/bbox_labels_600_hierarchy.json")
_V5_CLASSES = RemoteFile("v5/class-descriptions-boxable.csv", 12011,
                         md5="9846fd22fd2e68b45e3f3810a4c2a32a")

# version -> {"boxes": {split: file}, "images": {split: file}, "classes": file, "hierarchy": file}
FILES = {
    "v4": {"boxes": _V4_BOXES, "images": _IMAGES, "hierarchy": _HIERARCHY,
           "classes": RemoteFile("2018_04/class-descriptions-boxable.csv", 11255,
                                 md5="7cfca4492ef343a973605b3754d22ceb")},
    "v5": {"boxes": _V5_BOXES, "images": _IMAGES, "hierarchy": _HIERARCHY,
           "classes": _V5_CLASSES},
    "v6": {"boxes": _V6_BOXES, "images": _IMAGES, "hierarchy": _HIERARCHY,
           "classes": _V5_CLASSES},  # V6 kept V5's class list
    "v7": {"boxes": _V6_BOXES, "images": _IMAGES, "hierarchy": _HIERARCHY,
           "classes": RemoteFile("v7/oidv7-class-descriptions-boxable.csv", 12064,
                                 sha256="1839e0e7e84130ae281f7f67413768601b031581c0c42e7fc17527b8e2a99aa9")},
}


class ChecksumError(ValueError):
    """A downloaded file's size or checksum differs from the official one."""


def default_cache_dir() -> str:
    from pipelines import files
    return files.user_cache_dir("metadata")


def tables_for(version: str, split: str) -> tuple[list[RemoteFile], list[RemoteFile]]:
    """(box tables, image tables) of a version and split ("all": the three splits)."""
    if version not in FILES:
        raise ValueError(f"unknown version {version!r}; choose one of {', '.join(FILES)}")
    splits = SPLITS if split == "all" else (split,)
    if any(s not in SPLITS for s in splits):
        raise ValueError(f"--split must be one of {', '.join(SPLITS)} or all, not {split!r}")
    return ([FILES[version]["boxes"][s] for s in splits],
            [FILES[version]["images"][s] for s in splits])


class _Progress:
    """A one-line progress bar on stderr: bytes, rate and ETA, at most 4 updates a second."""

    def __init__(self, name: str, total: int | None, done: int, quiet: bool):
        self.name, self.total, self.done, self.quiet = name, total, done, quiet
        self._start, self._start_bytes, self._last = time.monotonic(), done, 0.0

    def update(self, n: int, final: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or (not final and now - self._last < 0.25):
            return
        self._last = now
        rate = (self.done - self._start_bytes) / max(now - self._start, 1e-6)
        if self.total:
            frac = self.done / self.total
            bar = "#" * int(frac * 30)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line = (f"\r{self.name}: [{bar:<30}] {self.done / 2**20:8.1f}/{self.total / 2**20:.1f} "
                    f"MiB {rate / 2**20:6.1f} MiB/s ETA {eta:5.0f} s")
        else:
            line = f"\r{self.name}: {self.done / 2**20:8.1f} MiB {rate / 2**20:6.1f} MiB/s"
        sys.stderr.write(line + ("\n" if final else ""))
        sys.stderr.flush()


def _check(path: str, spec: RemoteFile) -> None:
    size = os.path.getsize(path)
    if spec.size is not None and size != spec.size:
        raise ChecksumError(f"{spec.name}: {size} bytes, the official file has {spec.size}")
    for algo, want in (("md5", spec.md5), ("sha256", spec.sha256)):
        if want:
            digest = hashlib.new(algo)
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            if digest.hexdigest() != want:
                raise ChecksumError(f"{spec.name}: {algo} {digest.hexdigest()}, the official "
                                    f"file has {want}")


def download(spec: RemoteFile, base_url: str = BASE_URL, cache_dir: str = "",
             quiet: bool = False, session: requests.Session | None = None) -> str:
    """The local path of an official file, downloading (or resuming) it if needed.

    Raises:
      ChecksumError: the completed download does not match; nothing is kept.
      requests.RequestException: the network failed; the partial file stays for a resume.
    """
    cache_dir = cache_dir or default_cache_dir()
    final = os.path.join(cache_dir, spec.path)
    if os.path.exists(final):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    part = final + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    session = session or requests.Session()
    url = f"{base_url.rstrip('/')}/{spec.path}"
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=(10, 60)) as resp:
        if resp.status_code == 416 and spec.size == have:  # already complete
            pass
        else:
            resp.raise_for_status()
            if have and resp.status_code != 206:  # the server ignored the Range: start over
                have = 0
            total = spec.size or (int(resp.headers["Content-Length"]) + have
                                  if "Content-Length" in resp.headers else None)
            progress = _Progress(spec.name, total, have, quiet)
            with open(part, "ab" if have else "wb") as f:
                for chunk in resp.iter_content(1 << 16):
                    f.write(chunk)
                    progress.update(len(chunk))
            progress.update(0, final=True)
    try:
        _check(part, spec)
    except ChecksumError:
        os.remove(part)
        raise
    os.replace(part, final)
    return final


def ensure(version: str, split: str, base_url: str = BASE_URL, cache_dir: str = "",
           quiet: bool = False) -> tuple[list[str], list[str]]:
    """Local paths of a version's box and image tables for a split, downloading what is missing."""
    boxes, images = tables_for(version, split)
    return ([download(f, base_url, cache_dir, quiet) for f in boxes],
            [download(f, base_url, cache_dir, quiet) for f in images])


def command(args) -> int:
    """`open-sandwiches metadata list|download` with parsed flags; `list --json` prints
    {"version", "split", "base_url", "files": [{"url", "path", "size", "md5", "sha256"}]}."""
    boxes, images = tables_for(args.version, args.split)
    files = [FILES[args.version]["classes"], FILES[args.version]["hierarchy"], *boxes, *images]
    if args.action == "list":
        if args.json:
            print(json.dumps({"version": args.version, "split": args.split,
                              "base_url": args.metadata_base_url, "files": [
                                  {"url": f"{args.metadata_base_url}/{f.path}", "path": f.path,
                                   "size": f.size, "md5": f.md5, "sha256": f.sha256}
                                  for f in files]}, indent=2))
            return 0
        for f in files:
            size = f"{f.size / 2**20:,.1f} MiB" if f.size else "size unknown"
            check = f"md5 {f.md5}" if f.md5 else f"sha256 {f.sha256}" if f.sha256 else "no checksum"
            print(f"{args.metadata_base_url}/{f.path}  ({size}, {check})")
        return 0
    try:
        for f in files:
            print(download(f, args.metadata_base_url, args.metadata_cache, args.quiet))
    except (ChecksumError, requests.RequestException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("metadata", argv)


if __name__ == "__main__":
    sys.exit(main())
