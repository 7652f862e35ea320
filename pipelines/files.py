"""Opening inputs by path: local files directly, anything else through Beam's FileSystems.

Local paths skip Beam's filesystem layer (fast, and no Beam import for `classes`);
`gs://`, `s3://`, `hdfs://` and other registered schemes go through
`apache_beam.io.filesystems.FileSystems`, so every reader works on Dataflow unchanged.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import threading
from typing import BinaryIO, Iterator


def user_cache_dir(*parts: str) -> str:
    """~/.cache/open-sandwiches/<parts> (or under $XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "open-sandwiches", *parts)


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def open_binary(path: str) -> BinaryIO:
    """A seekable binary reader, never decompressing (byte ranges need raw offsets)."""
    if is_remote(path):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(_local(path), "rb")


def read_bytes(path: str) -> bytes:
    """Read a whole (small) file."""
    with open_binary(path) as f:
        return f.read()


def file_size(path: str) -> int:
    """Size in bytes.

    Raises:
      FileNotFoundError: with the path, so the user sees which input is missing.
    """
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        matches = FileSystems.match([path])[0].metadata_list
        if not matches:
            raise FileNotFoundError(f"input file not found: {path}")
        return matches[0].size_in_bytes
    local = _local(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"input file not found: {path}")
    return os.path.getsize(local)


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file so that readers never see half of it (see open_for_write)."""
    with open_for_write(path) as f:
        f.write(data)


def join_path(base: str, *parts: str) -> str:
    """Join path parts for local paths and URLs alike."""
    if is_remote(base):
        return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
    return os.path.join(_local(base), *parts)


@contextlib.contextmanager
def open_for_write(path: str) -> Iterator[BinaryIO]:
    """A writer that publishes the file only when the block ends without error (temp name
    and rename locally; object stores publish on close). A crash leaves no file behind."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        with FileSystems.create(path) as f:
            yield f
        return
    local = _local(path)
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    tmp = f"{local}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class HashingWriter(io.RawIOBase):
    """A writer that also takes the sha256 of what passes through it, so a file's digest
    comes with writing it instead of reading it back (ParquetWriter writes through it)."""

    def __init__(self, f: BinaryIO):
        super().__init__()
        self._f, self._sha, self._n = f, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self._f.write(data)
        self._sha.update(data)
        self._n += len(data)
        return len(data)

    def tell(self) -> int:
        return self._n

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


@contextlib.contextmanager
def open_for_write_hashed(path: str) -> Iterator[HashingWriter]:
    """open_for_write, through a HashingWriter: `hexdigest()` once the block is done."""
    with open_for_write(path) as f:
        yield HashingWriter(f)


def exists(path: str) -> bool:
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.exists(path)
    return os.path.exists(_local(path))


def remove(path: str) -> None:
    """Delete one file, if it exists."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        if FileSystems.exists(path):
            FileSystems.delete([path])
        return
    try:
        os.remove(_local(path))
    except FileNotFoundError:
        pass


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it, if it exists."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        matches = FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list
        if matches:
            FileSystems.delete([m.path for m in matches])
        return
    shutil.rmtree(_local(path), ignore_errors=True)
