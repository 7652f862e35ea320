"""Legal progressive JPEGs with as many scans as asked, written byte by byte.

Why by hand: no encoder at hand writes a thousand scans (cjpeg/jpegtran's `-scans` are not
installed here), and the attack needs nothing more than libjpeg's rules. The image is flat
grey, so every AC coefficient is zero at every bit: each AC scan, first or refinement, is a
run of end-of-band codes over all blocks, a few bytes whatever the size, and libjpeg still
walks every block of the component in every scan. The scan script is the longest legal one:
the DC of all components with successive approximation (Al 13 down to 0: 14 scans), then,
per component, each AC coefficient alone, first at Al 13 and refined 13 times (882 scans a
component). `scans` takes a prefix of it, which is still a legal (incomplete) progression.
Strict decoders (simplejpeg, the region decoder) decode the result without a warning.
"""
from __future__ import annotations

import struct


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


class _Bits:
    """Entropy-coded bits, most significant first, with 0xFF bytes stuffed."""

    def __init__(self):
        self._out, self._acc, self._n = bytearray(), 0, 0

    def put(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self._acc, self._n = (self._acc << 1) | ((value >> i) & 1), self._n + 1
            if self._n == 8:
                self._out += b"\xff\x00" if self._acc == 0xFF else bytes([self._acc])
                self._acc = self._n = 0

    def flush(self) -> bytes:
        if self._n:
            self.put((1 << (8 - self._n)) - 1, 8 - self._n)  # pad with 1 bits
        return bytes(self._out)


def scan_script(components: int) -> list[tuple[list[int], int, int, int, int]]:
    """The longest legal progression: (component ids, Ss, Se, Ah, Al) per scan."""
    ids = list(range(1, components + 1))
    script = [(ids, 0, 0, 0, 13)] + [(ids, 0, 0, a + 1, a) for a in range(12, -1, -1)]
    for c in ids:
        for k in range(1, 64):
            script += [([c], k, k, 0, 13)] + [([c], k, k, a + 1, a) for a in range(12, -1, -1)]
    return script


def many_scans(width: int, height: int, scans: int, components: int = 1,
               between_scans: bytes = b"", after_end: bytes = b"") -> bytes:
    """A flat grey progressive JPEG of `scans` scans (at most 14 + 882 per component).

    Args:
      components: 1 (grey), 3 (read as YCbCr) or 4 (read as CMYK, which PIL decodes).
      between_scans: segments inserted before every scan but the first (a comment, say).
      after_end: bytes after the end-of-image marker.
    """
    script = scan_script(components)
    if scans > len(script):
        raise ValueError(f"at most {len(script)} legal scans for {components} components")
    blocks = -(-width // 8) * -(-height // 8)  # every component sampled 1x1
    ids = list(range(1, components + 1))
    out = bytearray(b"\xff\xd8")
    out += _segment(0xDB, b"\x00" + bytes([1] * 64))
    out += _segment(0xC2, struct.pack(">BHHB", 8, height, width, components)
                    + b"".join(bytes([c, 0x11, 0]) for c in ids))
    # DC table 0: one code, "0", for difference category 0. AC table 0: EOB0..EOB14 (runs of
    # 1 to 32767 blocks), 4-bit codes 0000..1110 in that order.
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += _segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15)))
    for n, (comps, ss, se, ah, al) in enumerate(script[:scans]):
        if n:
            out += between_scans
        out += _segment(0xDA, bytes([len(comps)]) + b"".join(bytes([c, 0]) for c in comps)
                        + bytes([ss, se, (ah << 4) | al]))
        bits = _Bits()
        if ss == 0:  # DC: a zero difference (first scan) or a zero bit (refinement) a block
            for _ in range(blocks * len(comps)):
                bits.put(0, 1)
        else:  # AC: end-of-band runs over every block
            left = blocks
            while left:
                run = min(left, 32767)
                r = run.bit_length() - 1
                bits.put(r, 4)
                bits.put(run - (1 << r), r)
                left -= run
        out += bits.flush()
    return bytes(out + b"\xff\xd9" + after_end)
