"""`defocuskit ingest`: list every source, decode in worker processes, write atomic, resumable shards.

Before any work every source's layout is checked: a folder that is not the dataset its option names
fails (IngestError naming the expected folders, what is there and which option would fit).

Sharding is deterministic: the tasks of all sources are listed (sources in `SOURCES` order, each in its
own deterministic order), grouped by split, and each split's list is cut into consecutive groups of
`shard_size` tasks; group g of split s is shard `{s}-{g:06d}.tar`. A group's fingerprint covers its
tasks (keys, listed metadata, and each input file's size, mtime_ns and a hash of its first and last
MiB) and the content options, so a changed, fixed or replaced file is read again (a `touch` too).
A shard is done when its tar and its record exist with the fingerprint of the current plan, so a rerun
skips it; `--part I/N` takes the groups whose global index is I-1 modulo N. manifest.json and
rejects.jsonl are regenerated from the records (the listing's rejects are listed again every run).

A rerun into the same folder with other content options (--shard-size, --max-side, --patch, ...)
REPLACES the folder's shards: the manifest is first rewritten for the new plan ("complete": false until
every shard of it is written, so a killed re-plan never leaves an old manifest beside new tars), the
new plan's shards are written (a shard of the same name is replaced atomically when its new tar is
complete), the tars and records of this tool that the new plan does not hold are removed with the
temporary files of killed runs (`manifest.prune`), and only then is the manifest marked complete. Other
inputs are another dataset: refused unless --overwrite. Only what this tool wrote is ever replaced or
removed (`folder`: records, manifest, ownership ledger); a file of the user's in the way stops the run
before any work, naming it. Parts share the plan, so a part never removes another part's shards (nor
the temporary files it may be writing); a run of another plan into a folder in use stops at once.

A plan that yields no sample is an error (IngestError naming the cause: no inputs, or every input
rejected with the most common reason), judged at listing (no task) or, with parts, once every part
is done; manifest.json ("complete": false, with the "error") and rejects.jsonl are written first.

This module runs the work (workers, shard writing, resume); `plan` lists and groups the tasks,
`postprocess` holds the per-sample steps and `records` the shard records and the no-sample error.
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2

from defocuskit.data import folder, shards
from defocuskit.data.ingest_checks import DEFAULT_MAX_WORKERS, check_numbers, check_unused
from defocuskit.data.manifest import prune, publish_with_record, read_record, record_path, regenerate, write_record
from defocuskit.data.plan import (
    Group,
    check_sources,
    first_file,
    list_all,
    listing_record,
    plan_groups,
    resolved_options,
)
from defocuskit.data.postprocess import check_sample, check_side, finalize_meta, postprocess
from defocuskit.data.records import no_sample_error, shard_record, tar_intact
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, RejectError, Task
from defocuskit.data.sources import module_of, source_in
from defocuskit.data.stamps import Stamps, stamp_files
from defocuskit.data.workers import ordered_results
from defocuskit.io.formats import ImageError
from defocuskit.io.lifeline import die_with

LIST_EVERY_S = 1.0  # while shards are written the manifest lists the finished ones, at most this far behind


# ---------------------------------------------------------------------------------------- worker


@dataclass
class Encoded:
    key: str
    members: dict[str, bytes]
    source: str
    f_number: str


@dataclass
class WorkResult:
    """What a worker returns for one task: encoded samples, or a reject."""

    key: str
    samples: list[Encoded] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0


def process_task(module: str, task: Task, opts: IngestOptions) -> WorkResult:
    """Decode one task with its source, post-process and PNG-encode; failures become a reject."""
    try:
        samples = source_in(module).load(task, opts)
        result = WorkResult(task.key)
        for raw in samples:
            check_sample(raw)
            kept, dropped = postprocess(raw, opts, raw.meta.get("split") or task.split)
            check_side(kept, first_file(task), opts.max_side)
            result.dropped += dropped
            for s in kept:
                meta = finalize_meta(s, task)
                views = None if s.left is None or s.right is None else (s.left, s.right)
                members = shards.encode_members(s.sharp, s.blur, s.coc, meta, s.blurmask, s.coc_signed, views)
                result.samples.append(Encoded(s.key, members, str(meta["source"]),
                                              shards.f_number_key(meta["f_number"])))
        keys = [e.key for e in result.samples]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the source gave duplicate sample keys for task {task.key}")
        return result
    except RejectError as exc:
        rej = Rejected(task.source, exc.file, exc.reason, task.key)
    except ImageError as exc:
        rej = Rejected(task.source, exc.path, exc.reason, task.key)
    except Exception as exc:  # any other failure on one input is that input's reject
        rej = Rejected(task.source, first_file(task), f"{type(exc).__name__}: {exc}", task.key)
    return WorkResult(task.key, rejects=[rej.to_json()])


def _init_worker(main_pid: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process
    cv2.setNumThreads(1)  # one process per core already
    die_with(main_pid)  # a killed ingest leaves no worker behind (its parent is the fork server, which outlives it)


def default_workers() -> int:
    """The worker processes of an ingest without --workers: one per core, at most DEFAULT_MAX_WORKERS."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS))


def _results(jobs: list[tuple[str, Task]], opts: IngestOptions, workers: int) -> Iterator[WorkResult]:
    """Results in job order, as PyTorch's num_workers: in the main process for workers 0, else in `workers`
    processes (one for 1) fed a bounded ordered window (`workers.ordered_results`); an input whose worker dies
    (a decoder's crash, the out-of-memory killer) is that input's reject, not a run that waits for ever."""
    if workers == 0:
        for module, task in jobs:
            yield process_task(module, task, opts)
        return
    yield from ordered_results(process_task, [(m, t, opts) for m, t in jobs], workers, _dead_worker_result,
                               initializer=functools.partial(_init_worker, os.getpid()))


def _dead_worker_result(job: tuple[str, Task, IngestOptions]) -> WorkResult:
    """The reject of a task whose worker process died twice, in the pool and alone."""
    task = job[1]
    reason = ("the process reading it died, twice (a crash in the decoder, or killed: out of memory?); the other "
              "inputs were read")
    return WorkResult(task.key, rejects=[Rejected(task.source, first_file(task), reason, task.key).to_json()])


def _unreadable_reject(task: Task, stamps: Stamps) -> dict[str, Any] | None:
    """The reject line of a task with an input file that cannot be read, else None."""
    for path in task.files.values():
        if path in stamps.unreadable:
            return Rejected(task.source, path, f"unreadable file: {stamps.unreadable[path]}", task.key).to_json()
    return None


# ------------------------------------------------------------------------------------------- run


def run_ingest(sources: Mapping[str, Path], opts: IngestOptions, *, progress: bool = True) -> dict:
    """Ingest `sources` (name -> root) into the shard folder `opts.out`; returns the manifest.

    The returned manifest also carries a "run" entry (not written to disk) with this run's numbers:
    tasks, shards written/skipped, samples written, new rejects, flat patches dropped, stale files
    removed, seconds. Raises IngestError (completed shards kept, no partial shard left) under --strict,
    for a source whose layout is not its dataset's (before any work), and when the whole plan (all
    parts) yields no sample (manifest.json and rejects.jsonl are written first, "complete" false).
    A successful run removes the shards, records and temporary files of earlier plans (`manifest.prune`).
    """
    t0 = time.perf_counter()
    check_sources(sources)
    part, nparts = opts.part
    if not (nparts >= 1 and 0 <= part < nparts):
        raise IngestError(f"--part must be I/N with 1 <= I <= N, got {part + 1}/{nparts}")
    check_numbers(opts)
    check_unused(sources, opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, listing_rejects = list_all(sources, opts)
    stamps = stamp_files([p for t in tasks for p in t.files.values()]
                         + [r["file"] for r in listing_rejects if os.path.isfile(r["file"])])
    groups = plan_groups(tasks, opts.shard_size, opts, stamps.of)
    options = {**asdict(opts), "sources": {k: str(v) for k, v in sources.items()}, **resolved_options(sources, tasks)}
    listing = listing_record(listing_rejects, options["sources"], stamps)
    plan = {g.name: g.fingerprint for g in groups} | {listing["name"]: listing["fingerprint"]}
    try:
        with folder.run_lock(out, "ingest", folder.plan_digest(plan), opts.part):
            folder.check_dataset(out, folder.dataset_identity(options), opts.overwrite)
            folder.check_collisions(out, plan)
            return _run_plan(out, opts, sources, progress, tasks, groups, plan, options, listing, listing_rejects,
                             stamps, t0)
    except folder.FolderError as exc:
        raise IngestError(str(exc)) from None


def _run_plan(out: Path, opts: IngestOptions, sources: Mapping[str, Path], progress: bool, tasks: list[Task],
              groups: list[Group], plan: dict[str, str], options: dict[str, Any], listing: dict[str, Any], listing_rejects: list[dict[str, Any]],
              stamps: Stamps, t0: float) -> dict:
    """`run_ingest` once the folder is held and checked: write what is pending, manifest, prune."""
    old = read_record(out, listing["name"])
    new_rejects = 0 if old and old.get("fingerprint") == listing["fingerprint"] else len(listing_rejects)
    write_record(out, listing)
    # The manifest on disk describes this plan before any shard of it replaces one of an earlier plan, so a
    # run killed midway leaves "complete": false, never an old manifest beside new tars.
    regenerate(out, plan, options)
    if not tasks:
        raise no_sample_error(out, plan, options, sources, 0)

    part, nparts = opts.part
    mine = [g for g in groups if g.index % nparts == part]
    pending, skipped = _pending(out, mine)
    stats: Counter = Counter()
    listed_at = time.monotonic()

    def list_finished() -> None:  # the manifest lists each finished shard: a killed run's are read, not lost
        nonlocal listed_at
        if time.monotonic() - listed_at >= LIST_EVERY_S:
            regenerate(out, plan, options, final=False)
            listed_at = time.monotonic()

    try:
        workers = _write_groups(out, pending, stamps, opts, progress, stats, list_finished)
    except BaseException:
        regenerate(out, plan, options, final=False)  # not complete: an earlier plan's tars are not pruned
        raise
    removed, foreign = prune(out, plan, {g.name for g in mine})  # before "complete" can be written
    manifest = regenerate(out, plan, options)
    if manifest["done_shards"] >= manifest["expected_shards"] and (manifest["counts"]["samples"] == 0
                                                                    or manifest["counts"].get("blurred") == 0):
        raise no_sample_error(out, plan, options, sources, len(tasks), manifest["counts"]["samples"])
    manifest["run"] = {
        "tasks": len(tasks), "shards_planned": len(groups), "shards_written": stats["written"],
        "shards_skipped": skipped, "pairs_loaded": stats["loaded"], "samples_written": stats["samples"],
        "rejects_new": new_rejects + stats["rejects"], "dropped_flat": stats["dropped"], "workers": workers,
        "stale_removed": len(removed), "foreign_kept": [str(p) for p in foreign],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return manifest


def _pending(out: Path, groups: list[Group]) -> tuple[list[Group], int]:
    """The groups without a tar and record of their fingerprint (leftovers of theirs removed), and how
    many are done (a tar whose size is not its record's, cut short or changed since, is not). An older tar of the
    same name stays until the new one replaces it (or `prune`)."""
    pending, skipped = [], 0
    for g in groups:
        rec = read_record(out, g.name)
        done = rec and rec.get("fingerprint") == g.fingerprint
        if done and (rec["samples"] == 0 or tar_intact(rec, out / f"{g.name}.tar")):
            skipped += 1
            continue
        record_path(out, g.name).unlink(missing_ok=True)
        pending.append(g)
    names = {g.name for g in pending}
    folder.remove_temporaries(out, lambda shard: shard in names)  # the temporaries an interrupted run listed
    return pending, skipped


def _write_groups(out: Path, pending: list[Group], stamps: Stamps, opts: IngestOptions, progress: bool,
                  stats: Counter, on_shard: Callable[[], None] = lambda: None) -> int:
    """Process the pending groups' tasks in worker processes and commit each group's shard and record
    as soon as it is complete (then call `on_shard`); a task with an unreadable input file is a reject without a
    worker. Updates `stats`; returns the number of worker processes. On any exception no partial shard is left."""
    todo = [(g, t) for g in pending for t in g.tasks]
    blocked = {t.key: rej for _, t in todo if (rej := _unreadable_reject(t, stamps))}
    work = [(module_of(t.source), t) for _, t in todo if t.key not in blocked]
    workers = min(default_workers() if opts.workers is None else opts.workers, len(work))
    results = _results(work, opts, workers)
    writer: shards.AtomicShard | None = None
    bar = _progress(progress, len(todo))
    try:
        counts: Counter = Counter()
        rejects: list[dict[str, Any]] = []
        dropped = blurred = 0
        for g, task in todo:
            res = WorkResult(task.key, rejects=[blocked[task.key]]) if task.key in blocked else next(results)
            if res.rejects and opts.strict:
                raise IngestError(f"{res.rejects[0]['file']}: {res.rejects[0]['reason']}")
            for enc in res.samples:
                writer = writer or shards.AtomicShard(out, g.name)
                writer.write(enc.key, enc.members)
                counts[(enc.source, enc.f_number)] += 1
                blurred += "blur.png" in enc.members
            rejects += res.rejects
            dropped += res.dropped
            stats.update(samples=len(res.samples), dropped=res.dropped, loaded=not res.rejects,
                         rejects=len(res.rejects))
            if bar:
                bar[0].advance(bar[1])
            if task is g.tasks[-1]:  # the group is complete: commit its shard, then its record
                if writer:
                    writer.seal()
                record = shard_record(g, counts, rejects, dropped, blurred, writer.partial if writer else None)
                publish_with_record(out, writer, record)
                writer = None
                stats["written"] += 1
                on_shard()
                counts, rejects, dropped, blurred = Counter(), [], 0, 0
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        results.close()
        _stop(bar)
    return workers


def _progress(enabled: bool, total: int) -> tuple[Any, Any] | None:
    """A rich progress bar counting input files (tasks) per second, or None."""
    if not enabled or total == 0:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class FilesPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed or 0:.1f} files/s")

    bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), FilesPerSecond(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("ingest", total=total)


def _stop(bar: tuple[Any, Any] | None) -> None:
    if bar:
        bar[0].stop()
