"""Shard files in the two formats TFDS reads: TFRecord (sequential) and ArrayRecord
(random access, for `as_data_source`, Grain and PyTorch loaders).

    with shardio.open_shard(path, "array_record") as shard:
        for data in serialized_examples:
            shard.write(data)
    shard.sha256, shard.num_bytes          # set once the shard is published

Both writers publish a shard whole or not at all (temp name, then rename; a copy for
remote folders, since ArrayRecord writes through a local path), and give its sha256 for
the build report. Both are deterministic: the same records in the same order are the same
bytes. `num_bytes` is what the dataset's split info records: for TFRecord the framed
records (the data plus 16 bytes each, as before), for ArrayRecord the file's size.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from typing import Iterator

from pipelines import files, tfrecord

FORMATS = ("tfrecord", "array_record")
_ARRAY_RECORD_OPTIONS = "group_size:1"  # what TFDS writes: every record its own chunk


class CorruptShard(ValueError):
    """A shard that cannot be read back whole."""


def check_format(file_format: str) -> str:
    if file_format not in FORMATS:
        raise ValueError(f"--file_format must be one of {FORMATS}, not {file_format!r}")
    return file_format


class _TFRecordShard:
    def __init__(self, f):
        self._f, self._digest = f, hashlib.sha256()
        self.count = self.num_bytes = 0

    def write(self, data: bytes | memoryview) -> None:
        framed = tfrecord.frame(bytes(data))
        self._digest.update(framed)
        self._f.write(framed)
        self.count += 1
        self.num_bytes += len(framed)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _ArrayRecordShard:
    def __init__(self, local_path: str):
        from array_record.python.array_record_module import ArrayRecordWriter
        self._writer = ArrayRecordWriter(local_path, _ARRAY_RECORD_OPTIONS)
        self.count = 0

    def write(self, data: bytes | memoryview) -> None:
        self._writer.write(bytes(data))
        self.count += 1

    def close(self) -> None:
        self._writer.close()


@contextlib.contextmanager
def open_shard(path: str, file_format: str) -> Iterator:
    """A shard writer for `path`; the file appears only when the block ends without error.
    The yielded object has write(data); after the block, `.sha256`, `.num_bytes` and
    `.count` of the published file are set on it."""
    check_format(file_format)
    if file_format == "tfrecord":
        with files.open_for_write(path) as f:
            shard = _TFRecordShard(f)
            yield shard
        shard.sha256 = shard.hexdigest()
        return
    local_dir = (tempfile.mkdtemp(prefix="shard-") if files.is_remote(path)
                 else os.path.dirname(os.path.abspath(path)))
    os.makedirs(local_dir, exist_ok=True)
    tmp = os.path.join(local_dir, f".{os.path.basename(path)}.tmp-{os.getpid()}-"
                                  f"{threading.get_ident()}")
    try:
        shard = _ArrayRecordShard(tmp)
        try:
            yield shard
        finally:
            shard.close()
        shard.sha256, shard.num_bytes = _file_digest(tmp), os.path.getsize(tmp)
        if files.is_remote(path):
            with open(tmp, "rb") as src, files.open_for_write(path) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        if files.is_remote(path):
            shutil.rmtree(local_dir, ignore_errors=True)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_records(path: str, file_format: str) -> Iterator[bytes]:
    """Every record of a shard, in order, checked by the format's own checksums.

    Raises:
      CorruptShard: a record or the file's structure does not check out.
    """
    check_format(file_format)
    if file_format == "tfrecord":
        with files.open_binary(path) as f:
            try:
                yield from tfrecord.read_records(f)
            except tfrecord.CorruptRecord as err:
                raise CorruptShard(str(err)) from None
        return
    with _local_copy(path) as local:
        from array_record.python.array_record_module import ArrayRecordReader
        try:
            reader = ArrayRecordReader(local)
            n = reader.num_records()
            for start in range(0, n, 256):
                yield from reader.read(start, min(n, start + 256))
        except (RuntimeError, ValueError, OSError) as err:
            raise CorruptShard(f"{type(err).__name__}: {err}") from None


def sha256_of(path: str) -> str:
    """The sha256 of a shard file's bytes."""
    with _local_copy(path) as local:
        return _file_digest(local)


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """A local path holding the file (the file itself when it is local)."""
    if not files.is_remote(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="shard-")
    local = os.path.join(folder, os.path.basename(path))
    try:
        with files.open_binary(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
