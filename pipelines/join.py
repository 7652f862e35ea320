"""Joining boxes to their image rows, and the deterministic choices made per image.

Pure functions: `make_task` turns one ImageID's boxes and image rows (as CoGroupByKey
delivers them, in any order) into an ImageTask and failure records; `split_of` and
`sample_priority` are SHA-256 buckets of stable keys and a seed (after tensorflow/tfx's
example gen), never of arrival order or of `random`. So two runs, on any runner, agree.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Iterable

from schemas.records import (REASON_BAD_IMAGE_ROW, REASON_DUPLICATE_BOX, REASON_NO_IMAGE_ROW,
                             SPLITS, STAGE_JOIN, Box, Failure, ImageRow, ImageTask)

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def _bucket(*parts: object) -> float:
    """A uniform number in [0, 1) from the SHA-256 of the parts."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def check_fractions(fractions: Iterable[float]) -> tuple[float, float, float]:
    """Validate train/validation/test fractions: three non-negative numbers summing to 1."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or any(x < 0 for x in f) or abs(sum(f) - 1.0) > 1e-6:
        raise ValueError(f"--split_fractions needs three non-negative numbers (train, "
                         f"validation, test) that sum to 1, not {list(f)}")
    return f


def split_of(image_id: str, seed: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    """The split of a photo: every box of one photo shares it, so no photo leaks across."""
    x = _bucket("split", seed, image_id)
    if x < fractions[0]:
        return SPLITS[0]
    if x < fractions[0] + fractions[1]:
        return SPLITS[1]
    return SPLITS[2]


def make_split_fn(source: str, seed: int, fractions: tuple[float, float, float]) -> Callable[[ImageRow], str]:
    """Build the split rule: `hash` (SHA-256 of ImageID) or `openimages` (the table's Subset;
    photos with a Subset outside train/validation/test fall back to the hash)."""
    if source not in ("hash", "openimages"):
        raise ValueError(f"--split_source must be hash or openimages, not {source!r}")

    def split(image: ImageRow) -> str:
        if source == "openimages" and image.subset in SPLITS:
            return image.subset
        return split_of(image.image_id, seed, fractions)

    return split


def sample_priority(seed: int, image_id: str, box: Box) -> float:
    """Rank used by --max_per_class: the boxes with the smallest values are kept. A function
    of the box's identity and the seed only, so the choice ignores row order."""
    return _bucket("sample", seed, image_id, *box.canonical_key())


def make_task(image_id: str, boxes: Iterable[Box], images: Iterable[ImageRow],
              split_fn: Callable[[ImageRow], str]) -> tuple[ImageTask | None, list[Failure]]:
    """Join one photo's boxes with its image row.

    Boxes are put in canonical order (class, coordinates, flags) and numbered 0..n-1: that
    `box_index` is stable across runs and row orders. An identical second box of the same
    class is a failure (`duplicate_box`), not a second example of the same pixels.

    Returns:
      (the task, or None when no box survives; failure records).
    """
    ordered = sorted(boxes, key=Box.canonical_key)
    if not ordered:
        return None, []
    rows = sorted(images, key=lambda r: dataclasses.astuple(r))
    failures: list[Failure] = []
    unique: list[Box] = []
    for box in ordered:
        if unique and unique[-1].canonical_key() == box.canonical_key():
            failures.append(Failure(STAGE_JOIN, image_id, -1, "", REASON_DUPLICATE_BOX,
                                    f"same class and coordinates as box {len(unique) - 1}",
                                    box.mid))
        else:
            unique.append(dataclasses.replace(box, box_index=len(unique)))
    if not rows or rows[0].problem:
        reason = REASON_NO_IMAGE_ROW if not rows else REASON_BAD_IMAGE_ROW
        detail = ("ImageID not found in the image table" if not rows else rows[0].problem)
        url = rows[0].original_url if rows else ""
        failures += [Failure(STAGE_JOIN, image_id, b.box_index, url, reason, detail, b.mid)
                     for b in unique]
        return None, failures
    image = rows[0]
    return ImageTask(image=image, boxes=tuple(unique), split=split_fn(image)), failures
