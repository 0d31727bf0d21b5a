"""Damage inside a JPEG's compressed data, which libjpeg reports only by a warning printed to stderr.

A JPEG whose entropy-coded data was overwritten or cut in the middle, its end-of-image marker still there, decodes
without an error: libjpeg fills what it cannot read with garbage or gray and prints one warning line to the process's
stderr ("Corrupt JPEG data: 34 extraneous bytes before marker 0xd3", "Premature end of JPEG file"), which OpenCV and
Pillow both drop. `decode_with_jpeg_damage` runs a decode with file descriptor 2 pointed at a temporary file and hands
back the warning that says the pixels are damaged; whatever else was written there meanwhile is passed on to stderr.
Damage that libjpeg decodes without noticing (a run of bytes that still reads as valid codes) is not found.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

JPEG_MAGIC = b"\xff\xd8\xff"
# libjpeg's warnings (jerror.h JWRN_*) that mean decoded pixels are not the file's: damaged or missing data
DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Inconsistent progression sequence")
NOT_PIXELS = ("bad ICC marker",)  # a "Corrupt JPEG data" warning about metadata only
FD2_LOCK = threading.Lock()  # fd 2 is the process's: one capture at a time (io.raw's of LibRaw takes it too)


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
    """`decode()`'s result and the libjpeg warning it printed that says the pixels are damaged (None: none). The
    other lines printed meanwhile go on to stderr. Where fd 2 cannot be redirected, the result and None."""
    with FD2_LOCK:
        try:
            sys.stderr.flush()  # Python's own pending output goes where it was meant to
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no stderr: nothing to read the warning from
            return decode(), None
        try:
            caught = tempfile.TemporaryFile()
        except OSError:  # no temporary file: nowhere to read it from
            os.close(saved)
            return decode(), None
        with caught:
            try:
                os.dup2(caught.fileno(), 2)
                result = decode()
            finally:  # stderr back, and what was written meanwhile passed on, whatever the decode did
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                damage = _pass_on(caught.read().decode("utf-8", "replace"))
    return result, damage


def _pass_on(text: str) -> str | None:
    """`damage_line(text)`; the other lines of `text` written to stderr."""
    damage = damage_line(text)
    rest = "".join(line for line in text.splitlines(keepends=True) if line.strip() != damage)
    if rest:
        try:
            os.write(2, rest.encode("utf-8", "replace"))
        except OSError:
            pass
    return damage
