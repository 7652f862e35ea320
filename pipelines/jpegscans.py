"""How much work a JPEG asks of a decoder, read from its markers before any decoder runs.

Why: a legal progressive JPEG of a few hundred KiB can hold thousands of scans, and every
scan is a pass of entropy decoding over the coefficients of its components: a review
measured 11 s for 1,000 scans, 27 s for 3,000. A real progressive photo has about 10
(libjpeg's default script: 10 for colour, 6 for grey). libjpeg-turbo's libjpeg API has no
limit of its own, nor do simplejpeg or PIL, so the crop stage checks two, per photo:

- scans: the number of start-of-scan (SOS) markers up to end-of-image;
- blocks: the 8x8 blocks of the components each scan holds, summed over the scans so far.
  A baseline photo costs one pass over its blocks; libjpeg's progressive script about 5.3.
  The flag counts it in millions of samples (a block is 64 samples, so 1 = 15,625 blocks).

The region decoder (`_jpegregion.c`) counts the same two numbers in libjpeg's progress
monitor, by the same rule (a component's blocks are libjpeg's width_in_blocks x
height_in_blocks), and stops at the same scan; this module does it for the whole-image
decoders (simplejpeg, PIL), which offer no hook.

The walk follows libjpeg's reading of a file: a segment is skipped by its length (so bytes
inside an EXIF thumbnail or a comment are never mistaken for markers), entropy-coded data
ends at the first marker that is not a restart (RSTn) or a stuffed 0xFF00, bytes between
markers are skipped as libjpeg skips them, and end-of-image ends the walk (data after it,
as in multi-picture or "motion" photos, is no part of the image). It can only overcount
what libjpeg decodes, never undercount: where it cannot read the frame header it leaves the
verdict to the decoder, which then fails the photo.

    python -c "from pipelines import jpegscans; print(jpegscans.over_limits(open('x.jpg', 'rb').read(), 100, 0))"
"""
from __future__ import annotations

import numpy as np

BLOCKS_PER_MEGASAMPLE = 1_000_000 // 64
_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, 0xD8})  # TEM, SOI: no length field
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range
_PROGRESSIVE = frozenset({0xC2, 0xCA, 0xC6, 0xCE})  # libjpeg sets progressive_mode for these


def _frame_blocks(segment: bytes) -> dict[int, int] | None:
    """Component id -> its 8x8 blocks, from a start-of-frame segment's payload."""
    if len(segment) < 6:
        return None
    height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
    count = segment[5]
    comps = [segment[6 + 3 * i:9 + 3 * i] for i in range(count)]
    if count == 0 or any(len(c) < 3 for c in comps):
        return None
    hmax = max(c[1] >> 4 for c in comps) or 1
    vmax = max(c[1] & 15 for c in comps) or 1
    # libjpeg: width_in_blocks = ceil(image_width * h / (max_h * 8)), and so for height.
    return {c[0]: -(-width * (c[1] >> 4) // (hmax * 8)) * -(-height * (c[1] & 15) // (vmax * 8))
            for c in comps}


def _header(data: bytes):
    """The header's segments from the start, as (code, offset of the marker, body), up to
    and including the first start-of-scan; a (None, offset, b"") last where the header is
    not plainly laid out (a standalone or restart marker, or no marker where one belongs),
    and nothing more where the data ends first."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            yield None, pos, b""
            return
        code = data[pos + 1]
        if code == 0xFF:  # a fill byte
            pos += 1
            continue
        if code in _STANDALONE or 0xD0 <= code <= 0xD7 or code == 0x00:
            yield None, pos, b""
            return
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        yield code, pos, data[pos + 4:pos + 2 + length]
        if code == _SOS:
            return
        pos += 2 + length


def _first_scan(data: bytes) -> tuple[dict[int, int], bool, bytes] | None:
    """(blocks per component, progressive, the first scan's component ids), read segment by
    segment from the start; None where the header is not plainly laid out (the caller then
    walks the markers as libjpeg would)."""
    blocks, progressive = None, False
    for code, _, segment in _header(data):
        if code is None:
            return None
        if code in _SOF and blocks is None:
            blocks, progressive = _frame_blocks(segment), code in _PROGRESSIVE
            if blocks is None:
                return None
        elif code == _SOS:
            return (blocks, progressive, segment[1:1 + 2 * segment[0]:2]) if blocks and segment else None
    return None


def reaches_end(data: bytes) -> bool:
    """Whether a JPEG goes on past its first scan's header to an end-of-image marker. A body
    cut short (a short Content-Length from a source with no checksum to catch it) does not:
    entropy-coded data never holds 0xFFD9 (a 0xFF there is stuffed), and segments before
    the scan (an EXIF thumbnail, with an end-of-image of its own) are skipped by their
    lengths. Where the header is not plainly laid out, the decoder judges (True)."""
    for code, pos, _ in _header(data):
        if code is None:
            return True
        if code == _SOS:
            return data.find(b"\xff\xd9", pos + 2) != -1
    return False  # the data ends inside the header


def _markers(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of every 0xFF that starts a marker ending entropy-coded data, and the codes.
    Not one: 0xFF00 (a stuffed 0xFF), 0xFFD0-0xFFD7 (restarts, part of a scan), and 0xFF
    fill bytes before a marker (only the last 0xFF of a run counts). Vectorised: a Python
    loop over a photo's 0xFF bytes would cost more than the check is worth."""
    octets = np.frombuffer(data, np.uint8)
    at = np.flatnonzero(octets[:-1] == 0xFF)
    code = octets[at + 1]
    keep = (code != 0x00) & (code != 0xFF) & ((code < 0xD0) | (code > 0xD7))
    return at[keep], code[keep]


def over_limits(data: bytes, max_scans: int, max_blocks: int) -> tuple[str, int] | None:
    """Which limit a JPEG passes, and at which scan: ("scans" | "blocks", scan number), as
    `_jpegregion.LimitExceeded` reports it; None when it stays within both (0: no limit).

    Cheap for ordinary photos. A sequential JPEG whose first scan holds every component is
    decoded in one scan (libjpeg refuses any further one), so its header settles it. Others
    (progressive, or one component a scan) are walked marker by marker to end-of-image.
    """
    first = _first_scan(data)
    if first is not None:
        blocks, progressive, components = first
        if not progressive and len(components) == len(blocks):
            one_pass = sum(blocks.get(c, 0) for c in components)
            return ("blocks", 1) if max_blocks and one_pass > max_blocks else None
    return _walk(data, max_scans, max_blocks)


def _walk(data: bytes, max_scans: int, max_blocks: int) -> tuple[str, int] | None:
    at, codes = _markers(data)
    pos, end = 2, len(data)
    blocks: dict[int, int] | None = None
    scans = work = 0
    while True:
        i = int(np.searchsorted(at, pos))
        if i == len(at):
            return None
        code, pos = int(codes[i]), int(at[i]) + 2
        if code == _EOI:
            return None
        if code in _STANDALONE:
            continue
        if pos + 2 > end:
            return None
        segment_end = pos + int.from_bytes(data[pos:pos + 2], "big")
        segment = data[pos + 2:segment_end]
        pos = segment_end
        if code in _SOF and blocks is None:
            blocks = _frame_blocks(segment)
            if blocks is None:
                return None
            # Every SOS marker in the file, past end-of-image too: never fewer than libjpeg
            # reads. At most 4 components a scan.
            upper = int(np.count_nonzero(codes == _SOS))
            if ((not max_scans or upper <= max_scans)
                    and (not max_blocks or upper * 4 * max(blocks.values()) <= max_blocks)):
                return None
        elif code == _SOS:
            if blocks is None:
                return None  # a scan before the frame: libjpeg refuses the file
            scans += 1
            if max_scans and scans > max_scans:
                return ("scans", scans)
            components = segment[1:1 + 2 * segment[0]:2] if segment else b""
            work += sum(blocks.get(c, 0) for c in components)
            if max_blocks and work > max_blocks:
                return ("blocks", scans)
