"""How many CPU threads a command's PyTorch and OpenCV use (`defocuskit --threads N`, $DEFOCUSKIT_THREADS).

Without either, a user's OMP_NUM_THREADS is kept; otherwise the default never oversubscribes the cores this
process may use: cores / the processes `accelerate launch` started on this machine, less the DataLoader worker
processes (each runs one thread of its own). Two processes each using every core of a shared machine run
25-50x slower than one (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys

from defocuskit.io.env import env_count

THREADS_ENV = "DEFOCUSKIT_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 0) -> int:
    """Cores / local processes, less `workers` DataLoader processes; at least 1."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, available_cores() // local - max(0, workers))


def resolve_threads(workers: int = 0) -> int | None:
    """$DEFOCUSKIT_THREADS (1 to the cores this process may use), else None where the user set OMP_NUM_THREADS,
    else `default_threads(workers)`."""
    n = env_count(THREADS_ENV, 1, "threads")
    if n is not None:
        cores = available_cores()
        if n > cores:  # more threads than cores only slows every step; a huge count makes the OS refuse threads
            raise ValueError(f"${THREADS_ENV}='{n}': this process may use {cores} cores; give at most {cores} threads")
        return n
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return default_threads(workers)


def apply_threads(workers: int = 0) -> int | None:
    """Set the threads of PyTorch (now if it is imported, else through OMP_NUM_THREADS before it is) and
    OpenCV; returns the number set, or None where the user's OMP_NUM_THREADS stands."""
    n = resolve_threads(workers)
    if n is None:
        return None
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)
    return n
