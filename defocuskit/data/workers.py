"""Ingest's worker processes: results in job order from a bounded window, and a worker that dies is survived.

A worker can die without raising: a decoder's crash on a damaged file (a segfault in LibRaw or a codec) or the
kernel's out-of-memory killer. A `multiprocessing.Pool` then replaces the worker and loses its task, and the
ingest waits for that result for ever. Here the pool (`concurrent.futures.ProcessPoolExecutor`) reports it
(`BrokenProcessPool`); the tasks it had not finished are run again, each alone in a process of its own, so the
one whose worker dies again is known: it becomes that task's reject (`dead_worker_result`), and the work goes on
in a fresh pool.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import islice
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


@contextmanager
def worker_pool(workers: int, initializer: Callable[[], None] | None = None) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes; left normally it waits for them, left by an exception (Ctrl-C, an error of
    the caller, the generator using it closed) it stops them at once, as `Pool.terminate` did."""
    pool = ProcessPoolExecutor(workers, mp_context=_context(), initializer=initializer)
    try:
        yield pool
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes without waiting for their tasks (`terminate_workers` from Python 3.14)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def ordered_results(run: Callable[..., Result], jobs: Sequence[tuple[Any, ...]], workers: int,
                    on_dead: Callable[[tuple[Any, ...]], Result],
                    initializer: Callable[[], None] | None = None) -> Iterator[Result]:
    """`run(*job)` for every job, in job order, in `workers` processes fed a window of 2 x `workers` jobs (so
    finished results cannot pile up in memory). A job whose process dies twice, once in the pool and once alone,
    yields `on_dead(job)` in its place; the pool is then started afresh for the jobs after it."""
    feed = iter(jobs)
    while True:
        unfinished: list[tuple[tuple[Any, ...], Future | None]] = []
        with worker_pool(workers, initializer) as pool:
            window = deque((job, pool.submit(run, *job)) for job in islice(feed, 2 * workers))
            while window:
                job, future = window[0]
                try:
                    result = future.result()
                except BrokenProcessPool:  # a worker died: every job still in the window is unsure
                    unfinished = [(j, f if _finished(f) else None) for j, f in window]
                    break
                window.popleft()
                window.extend((nxt, pool.submit(run, *nxt)) for nxt in islice(feed, 1))
                yield result
        if not unfinished:
            return
        for job, future in unfinished:
            yield future.result() if future is not None else _alone(run, job, on_dead, initializer)


def _finished(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _alone(run: Callable[..., Result], job: tuple[Any, ...], on_dead: Callable[[tuple[Any, ...]], Result],
           initializer: Callable[[], None] | None) -> Result:
    """`run(*job)` in a process of its own; `on_dead(job)` when that process dies as well."""
    with worker_pool(1, initializer) as pool:
        try:
            return pool.submit(run, *job).result()
        except BrokenProcessPool:
            return on_dead(job)
