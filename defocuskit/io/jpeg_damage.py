"""Damage inside a JPEG's compressed data, which libjpeg reports only by a warning printed to stderr.

A JPEG whose entropy-coded data was overwritten or cut in the middle, its end-of-image marker still there, decodes
without an error: libjpeg fills what it cannot read with garbage or gray and prints one warning line to the process's
stderr ("Corrupt JPEG data: 34 extraneous bytes before marker 0xd3", "Premature end of JPEG file"), which OpenCV and
Pillow both drop. `decode_with_jpeg_damage` runs a decode with file descriptor 2 pointed at a temporary file and hands
back the warning that says the pixels are damaged; whatever else was written there meanwhile is passed on to stderr.
Damage that libjpeg decodes without noticing (a run of bytes that still reads as valid codes) is not found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from defocuskit.io.fd2 import captured_fd2

T = TypeVar("T")

JPEG_MAGIC = b"\xff\xd8\xff"
# libjpeg's warnings (jerror.h JWRN_*) that mean decoded pixels are not the file's: damaged or missing data
DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Inconsistent progression sequence")
NOT_PIXELS = ("bad ICC marker",)  # a "Corrupt JPEG data" warning about metadata only


def is_jpeg(data: bytes) -> bool:
    """Whether `data` begins as a JPEG file does (SOI and a marker)."""
    return bytes(data[:3]) == JPEG_MAGIC


def damage_line(text: str) -> str | None:
    """The first line of libjpeg's output `text` that says the decoded pixels are damaged; None if there is none."""
    for line in text.splitlines():
        if any(d in line for d in DAMAGE) and not any(n in line for n in NOT_PIXELS):
            return line.strip()
    return None


def decode_with_jpeg_damage(decode: Callable[[], T]) -> tuple[T, str | None]:
    """`decode()`'s result and the first libjpeg warning it printed that says the pixels are damaged (None: none).
    The other lines printed meanwhile go on to stderr. Where fd 2 cannot be redirected, the result and None."""
    with captured_fd2(damage_line) as damage:
        result = decode()
    return result, damage[0] if damage else None
