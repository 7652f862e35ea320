"""Sorted run files: how outputs larger than memory are written (the way Spark writes its shuffle).

A worker buffers (partition, key, value) entries; whenever the buffer passes a fixed size
(64 MiB), and at the end of its bundle, it writes one run file sorted by (partition, key)
and reports, per partition, the byte range of the run that holds it. Only those
`RunSlice`s (file, offset, length, count) travel through Beam's shuffle, never the bytes;
`merge` range-reads one partition's slices from every run and streams them in key order.
So a merge's memory is a read buffer per run, whatever the dataset's size, and two builds
of one config write the same files whatever the bundles were: order comes from keys.

One file per run (not per run and partition) keeps object counts sane on Cloud Storage;
the size limit matters because the in-process runner may hand a whole collection to one
bundle. Run names are random (uuid4): they are scratch names, never part of an output.
A retried bundle's runs are never merged, because only slices that reached the shuffle are.

Entry framing: uint32 key length, uint32 value length (big-endian), key, value. Keys
compare as bytes; `sort_key` encodes a tuple of strings and integers so that byte order is
tuple order.
"""
from __future__ import annotations

import dataclasses
import heapq
import operator
import os
import struct
import uuid
from typing import BinaryIO, Iterable, Iterator

from pipelines import files

RUN_BYTES = 64 << 20
_HEADER = struct.Struct(">II")
_READ = 1 << 20


@dataclasses.dataclass(frozen=True)
class RunSlice:
    """One partition's entries in one run file.

    Attributes:
      partition: what the entries belong to, e.g. ("train", 3) for a shard.
      path: the run file.
      offset, length: the byte range of the entries in it.
      count: entries.
      size: the sum of the sizes the writer was given (say, serialised example bytes).
    """

    partition: tuple
    path: str
    offset: int
    length: int
    count: int
    size: int = 0


class RunWriter:
    """Buffers entries and writes them as sorted runs into a folder (local or remote)."""

    def __init__(self, folder: str, limit_bytes: int | None = None):
        self._folder = folder
        self._limit = RUN_BYTES if limit_bytes is None else limit_bytes
        self._entries: list[tuple[str, bytes, tuple, tuple[bytes, ...], int]] = []
        self._bytes = 0

    def add(self, partition: tuple, key: bytes, value: bytes | tuple[bytes, ...],
            size: int = 0) -> list[RunSlice]:
        """Buffer one entry (a value may come in parts, written one after another, so a
        large one is never copied to be joined); returns the slices of a run written
        because the buffer filled."""
        parts = value if isinstance(value, tuple) else (value,)
        self._entries.append((repr(partition), key, partition, parts, size))
        self._bytes += len(key) + sum(map(len, parts)) + 64
        return self.flush() if self._bytes >= self._limit else []

    def flush(self) -> list[RunSlice]:
        """Write what is buffered as one run (nothing if empty); returns its slices."""
        if not self._entries:
            return []
        entries, self._entries, self._bytes = self._entries, [], 0
        entries.sort(key=operator.itemgetter(0, 1))
        path = files.join_path(self._folder, f"{uuid.uuid4().hex}.run")
        slices: list[RunSlice] = []
        parts: list[bytes] = []
        offset = 0
        current, start, count, size = None, 0, 0, 0
        for _, key, partition, value, entry_size in entries:
            if partition != current:
                if current is not None:
                    slices.append(RunSlice(current, path, start, offset - start, count, size))
                current, start, count, size = partition, offset, 0, 0
            length = sum(map(len, value))
            parts += (_HEADER.pack(len(key), length), key, *value)
            offset += _HEADER.size + len(key) + length
            count += 1
            size += entry_size
        slices.append(RunSlice(current, path, start, offset - start, count, size))
        # Written in place, not by rename: a run half-written by a killed worker is never
        # named by a slice, so it is never read; the scratch folder is removed at the end.
        with _create(path) as f:
            f.writelines(parts)
        return slices


def _create(path: str) -> BinaryIO:
    if files.is_remote(path):
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.create(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "wb")


def read_slice(s: RunSlice) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) entries of one slice, read in 1 MiB blocks."""
    with files.open_binary(s.path) as f:
        yield from _entries(f, s.offset, s.length)


def _entries(f: BinaryIO, offset: int, length: int) -> Iterator[tuple[bytes, bytes]]:
    f.seek(offset)
    buf, pos, left = b"", 0, length
    while True:
        while len(buf) - pos >= _HEADER.size:
            klen, vlen = _HEADER.unpack_from(buf, pos)
            start, end = pos + _HEADER.size, pos + _HEADER.size + klen + vlen
            if end > len(buf):
                break
            yield buf[start:start + klen], buf[start + klen:end]
            pos = end
        if left <= 0:
            if pos < len(buf):
                raise ValueError(f"truncated run entry at the end of a slice of {length} bytes")
            return
        block = f.read(min(left, _READ))
        if not block:
            raise ValueError("run file is shorter than its slice")
        left -= len(block)
        buf, pos = buf[pos:] + block, 0


def merge(slices: Iterable[RunSlice]) -> Iterator[tuple[bytes, bytes]]:
    """All entries of the slices, in key order (a streaming k-way merge)."""
    ordered = sorted(slices, key=lambda s: (s.path, s.offset))  # ties: a fixed order
    return heapq.merge(*(read_slice(s) for s in ordered), key=operator.itemgetter(0))


def sort_key(*parts: str | int) -> bytes:
    """Bytes whose order is the order of the tuple `parts` (strings and integers)."""
    out = bytearray()
    for part in parts:
        if isinstance(part, int):
            out += (part + (1 << 63)).to_bytes(8, "big")
        else:
            out += part.encode("utf-8").replace(b"\x00", b"\x00\x01") + b"\x00\x00"
    return bytes(out)


def windowed(slices: Iterable[RunSlice]):
    """Slices as the global-window values that a DoFn's finish_bundle must emit."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import MIN_TIMESTAMP
    from apache_beam.utils.windowed_value import WindowedValue
    for s in slices:
        yield WindowedValue(s, MIN_TIMESTAMP, [GlobalWindow()])
