"""Arrow batches that cross a shuffle stay in files; only their addresses travel.

"Never shuffle bytes that could stay in files": a stage that hands Arrow batches to a
later stage across a shuffle (the scan to the join, the join to the limit) writes them as
Arrow IPC (LZ4-compressed) into one run file per element it processes, and emits only
`(key, runs.RunSlice)` pairs; the consumer reads its slices back. On the in-process runner
this keeps the shuffle's buffers, which hold every element at once, to a few bytes per
batch, so memory does not grow with the selection (a plan of all 600 classes moves 1.2 GB
of rows); on Dataflow the bytes go to the temp location instead of the shuffle service.
Pickling a table would also be a trap: a pickled slice of a table carries the whole table.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.ipc as ipc

from pipelines import runs

_OPTIONS = ipc.IpcWriteOptions(compression="lz4")


def to_ipc(table: pa.Table) -> bytes:
    """A table as compressed Arrow IPC stream bytes (only its own rows, even for a slice)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return ipc.open_stream(pa.py_buffer(data)).read_all()


def spill(folder: str, keyed: Iterable[tuple[int, pa.Table]]) -> Iterator[tuple[int, runs.RunSlice]]:
    """Write (key, table) pairs into one run file; yield (key, slice) for each key."""
    writer = runs.RunWriter(folder, limit_bytes=1 << 62)
    for key, table in keyed:
        writer.add((key,), b"", to_ipc(table), table.num_rows)
    for s in writer.flush():
        yield s.partition[0], s


def load(slices: Iterable[runs.RunSlice]) -> list[pa.Table]:
    """The tables held by some slices."""
    return [from_ipc(value) for s in slices for _, value in runs.read_slice(s)]
