"""What C libraries print to the process's stderr (file descriptor 2) while they work, captured: libjpeg's warning
about damaged pixels (io.jpeg_damage), LibRaw's lines about a damaged RAW file (io.raw). Neither library lets its
caller turn them off, and the lines they write are the only word of what went wrong."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FD2_LOCK = threading.Lock()  # fd 2 is the process's: one capture at a time


@contextmanager
def captured_fd2(select: Callable[[str], str | None]) -> Iterator[list[str]]:
    """Point fd 2 at a temporary file inside the block. On leaving it (exception or not) fd 2 is restored, each line
    written there meanwhile for which `select(line)` gives a text goes, as that text, into the yielded list, and
    every other line is passed on to stderr. One block at a time (FD2_LOCK). Where fd 2 cannot be redirected the
    block runs as it is and the list stays empty."""
    kept: list[str] = []
    with FD2_LOCK:
        try:
            sys.stderr.flush()  # Python's own pending output goes where it was meant to
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no stderr: nothing to capture
            yield kept
            return
        try:
            caught = tempfile.TemporaryFile()
        except OSError:  # no temporary file: nowhere to capture it
            os.close(saved)
            yield kept
            return
        with caught:
            try:
                os.dup2(caught.fileno(), 2)
                yield kept
            finally:  # stderr back, and what was written meanwhile sorted, whatever the block did
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                rest = []
                for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True):
                    text = select(line)
                    kept.append(text) if text is not None else rest.append(line)
                if rest:
                    try:
                        os.write(2, "".join(rest).encode("utf-8", "replace"))
                    except OSError:
                        pass
