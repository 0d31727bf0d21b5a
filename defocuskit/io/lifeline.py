"""Worker processes that end with their launcher: `accelerate launch` (torchrun's agent) killed with -9 leaves
its workers orphaned, and they would go on scoring or training and write their outputs after the user stopped
the command."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_WATCHING = False


def launched_worker() -> bool:
    """Whether this process is one of several started by a launcher (torchrun / `accelerate launch`)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def die_with_parent(poll_s: float = 0.2) -> None:
    """End this process (SIGKILL) as soon as its parent process is gone: at once on Linux (the kernel's
    parent-death signal), and within `poll_s` anywhere (a daemon thread watching the parent's pid)."""
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent or parent == 1:  # the launcher died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it is there


def die_with(pid: int, poll_s: float = 0.5) -> None:
    """End this process (SIGKILL) within `poll_s` of process `pid` ending: for a worker whose parent is not the
    process it works for (a multiprocessing fork server's child outlives a killed main process, idle, for ever)."""
    if not _alive(pid):
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while _alive(pid):
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with", daemon=True).start()
