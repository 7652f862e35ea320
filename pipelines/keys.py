"""Stable keys and seeded hashes of the plan, vectorised over Arrow and numpy columns.

An Open Images ImageID is 16 lowercase hex digits: exactly a uint64. The plan carries it as
one (8 bytes, not a 20-byte string), so the image scan's filter is one sorted uint64 array
(14 MB for every boxable photo, one side-input value) and joins are integer sorts. The
numeric order of the uint64 is the string order of the ImageID, so every sort by ImageID
means the same thing in both forms.

The seeded choices keep the definitions they had when they were made one row at a time
(after tensorflow/tfx's example gen: a SHA-256 bucket of a stable key and a seed):

- split of a photo: x = first 8 bytes of SHA-256("split\\x1f<seed>\\x1f<ImageID>") / 2**64;
- priority of a box for --max_per_class: the same over "sample", seed, ImageID and the
  box's canonical key (MID, coordinates as Python's repr, Is* flags).

Only the SHA-256 itself runs once per row in Python (hashlib, ~0.5 us); building the
strings, comparing and choosing are vectorised. Bucket assignment is not part of any
output's meaning, so it uses a cheap integer mix instead of SHA-256.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import SPLITS

# What an ImageID must be before it may name a file (`../../etc` must never get that far):
# the scalar check here and the vectorised one in image_ids_to_u64 accept the same strings.
IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
_HEX_VALUES = np.full(256, 255, np.uint8)
_HEX_VALUES[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX_VALUES[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_PAIRS = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)),
                           np.uint8).reshape(256, 2)


def is_image_id(text: str) -> bool:
    return bool(IMAGE_ID.match(text))


def image_ids_to_u64(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """ImageID strings -> (uint64 values, valid mask). Valid means exactly 16 lowercase hex
    digits (the form that may name a cache file); invalid rows get 0."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if ids.type != pa.large_string():
        ids = ids.cast(pa.large_string())
    n = len(ids)
    values = np.zeros(n, np.uint64)
    valid = np.zeros(n, bool)
    if n == 0:
        return values, valid
    _, offset_buf, data_buf = ids.buffers()
    offsets = np.frombuffer(offset_buf, np.int64)[ids.offset:ids.offset + n + 1]
    data = (np.frombuffer(data_buf, np.uint8) if data_buf is not None
            else np.zeros(0, np.uint8))
    sixteen = (np.diff(offsets) == 16) & ~np.asarray(ids.is_null(), bool)
    if sixteen.all():  # the usual case: one contiguous block, no gather
        rows = np.arange(n)
        block = data[offsets[0]:offsets[0] + 16 * n].reshape(n, 16)
    else:
        rows = np.flatnonzero(sixteen)
        block = data[offsets[rows, None] + np.arange(16)]
    block_values, ok = hex_block_to_u64(block)
    values[rows[ok]] = block_values[ok]
    valid[rows[ok]] = True
    return values, valid


def hex_block_to_u64(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An (n, 16) uint8 array of ImageID characters -> (uint64 values, valid mask)."""
    digits = _HEX_VALUES[block]
    ok = digits.max(axis=1, initial=0) < 16
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]
    values = np.ascontiguousarray(packed).view(">u8").ravel().astype(np.uint64)
    return np.where(ok, values, np.uint64(0)), ok


def u64_to_image_ids(values: np.ndarray) -> pa.Array:
    """uint64 values -> 16-digit lowercase hex ImageID strings."""
    raw = np.ascontiguousarray(np.asarray(values, np.uint64).astype(">u8")).view(np.uint8)
    text = _HEX_PAIRS[raw].tobytes()
    return pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.py_buffer(np.arange(0, 16 * len(values) + 1, 16, dtype=np.int32)),
        pa.py_buffer(text)])


def bucket_of(ids: np.ndarray, num_buckets: int) -> np.ndarray:
    """A bucket in [0, num_buckets) per ImageID (splitmix64's finaliser, then modulo): every
    row of one photo, box or image, lands in the same bucket."""
    x = np.asarray(ids, np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(num_buckets)).astype(np.int64)


def sha256_prefixes(texts: pa.Array) -> np.ndarray:
    """The first 8 bytes of each UTF-8 text's SHA-256, big-endian, as uint64."""
    if len(texts) == 0:
        return np.zeros(0, np.uint64)
    sha = hashlib.sha256
    digests = b"".join([sha(b).digest() for b in
                        pc.cast(texts, pa.binary()).to_numpy(zero_copy_only=False)])
    prefixes = np.frombuffer(digests, np.uint8).reshape(-1, 32)[:, :8]
    return np.ascontiguousarray(prefixes).view(">u8").ravel().astype(np.uint64)


def unit_floats(prefixes: np.ndarray) -> np.ndarray:
    """uint64 hash prefixes -> floats in [0, 1), rounded exactly as `int / 2.0**64` is."""
    return np.asarray(prefixes, np.uint64).astype(np.float64) / 2.0 ** 64


def float_texts(values: np.ndarray) -> pa.Array:
    """Python's repr of each float64 (the text the seeded hashes were defined over); repr
    runs once per distinct value."""
    bits = np.ascontiguousarray(values, np.float64).view(np.uint64)  # -0.0 is not 0.0 here
    unique, inverse = np.unique(bits, return_inverse=True)
    texts = [repr(float(v)) for v in unique.view(np.float64)]
    return pa.array(texts, pa.string()).take(pa.array(inverse))


def _joined(parts: Sequence[pa.Array | str]) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "\x1f")


def split_floats(image_ids: pa.Array, seed: int) -> np.ndarray:
    """The split hash of each photo, in [0, 1)."""
    return unit_floats(sha256_prefixes(_joined(["split", str(seed), image_ids])))


def splits_from_floats(x: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Index into SPLITS of each photo (train below fractions[0], then validation)."""
    return np.where(x < fractions[0], 0, np.where(x < fractions[0] + fractions[1], 1, 2))


def sample_priorities(image_ids: pa.Array, mids: pa.Array, coords: Sequence[np.ndarray],
                      flags: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """The --max_per_class rank of each box: the smallest are kept."""
    parts: list[pa.Array | str] = ["sample", str(seed), image_ids, mids]
    parts += [float_texts(c) for c in coords]
    parts += [pc.cast(pa.array(f), pa.string()) for f in flags]
    return unit_floats(sha256_prefixes(_joined(parts)))


def _bucket(*parts: object) -> float:
    """The scalar form of the seeded hashes: a uniform number in [0, 1)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_of(image_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of one photo (the scalar form of split_floats + splits_from_floats)."""
    x = _bucket("split", seed, image_id)
    if x < fractions[0]:
        return SPLITS[0]
    if x < fractions[0] + fractions[1]:
        return SPLITS[1]
    return SPLITS[2]
