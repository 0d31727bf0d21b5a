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

A rerun into the same folder with other content options (--shard-size, --max-side, --patch, ...) or
other inputs REPLACES the folder's shards: the new plan's shards are written (a shard of the same name
is replaced atomically when its new tar is complete), the manifest is regenerated, and only then are
the tars and records that the new plan does not hold removed, with the temporary files of killed runs
(`shards.prune`). After a successful run the manifest is the one list of shards: no other
`{split}-NNNNNN.tar` is left in the folder. Parts share the plan, so a part never removes another
part's shards (nor the temporary files it may be writing).

A plan that yields no sample is an error (IngestError naming the cause: no inputs, or every input
rejected with the most common reason), judged at listing (no task) or, with parts, once every part
is done; manifest.json ("complete": false, with the "error") and rejects.jsonl are written first.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defocuskit.data import shards
from defocuskit.data.stamps import Stamps, stamp_files
from defocuskit.data.sample import META_KEYS, IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.data.sources import OPTION_OF, SOURCES, get_source, source_module_name
from defocuskit.images import ImageError, bit_depth, to_float

_SPLIT_RE = re.compile(r"^[A-Za-z0-9_]+$")


class IngestError(RuntimeError):
    """Ingest cannot go on (bad arguments, or a rejected input under --strict); the message says why."""


# ------------------------------------------------------------------------ post-processing (pure)


def sharpness(image: np.ndarray) -> float:
    """Edge measure of an RGB image: the mean gradient magnitude of its luminance.

    Luminance Y is the channel mean in [0, 1]; the gradient uses central differences (np.gradient),
    so the result is in [0, ~0.7]: about 0 for a flat patch, 0.01-0.05 for textured photo patches.
    DPDNet (Abuolaim & Brown 2020) likewise drops its flattest training patches by sharpness energy.
    """
    y = to_float(image).mean(axis=2)
    gy, gx = np.gradient(y)
    return float(np.mean(np.hypot(gx, gy)))


def resize_max_side(sample: Sample, max_side: int | None) -> Sample:
    """Downscale (INTER_AREA) so the longer side is at most `max_side`; coc diameters scale along, a
    blur map is averaged and thresholded again at 128 (it stays 0/255)."""
    h, w = sample.image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return sample
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def shrink(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else cv2.resize(a, size, interpolation=cv2.INTER_AREA)

    coc = shrink(sample.coc)
    if coc is not None:
        coc = coc.astype(np.float32) * np.float32(0.5 * (size[0] / w + size[1] / h))
    mask = shrink(sample.blurmask)
    if mask is not None:
        mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    return replace(sample, sharp=shrink(sample.sharp), blur=shrink(sample.blur), coc=coc, blurmask=mask)


def convert_bit_depth(sample: Sample, depth: str) -> Sample:
    """"auto" keeps the arrays' sample type; "8" / "16" convert (x / 257 rounded, or x * 257)."""
    if depth == "auto":
        return sample
    if depth not in ("8", "16"):
        raise ValueError(f"bit depth must be auto, 8 or 16, got {depth!r}")

    def conv(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        if depth == "8" and a.dtype == np.uint16:
            return np.rint(a / 257.0).astype(np.uint8)
        if depth == "16" and a.dtype == np.uint8:
            return a.astype(np.uint16) * np.uint16(257)
        return a

    return replace(sample, sharp=conv(sample.sharp), blur=conv(sample.blur))


def cut_patches(sample: Sample, patch: int, stride: int | None = None) -> list[Sample]:
    """Aligned `patch` x `patch` crops of blur/sharp/coc/blurmask every `stride` pixels; keys get `/p{y}_{x}`."""
    stride = stride or patch
    h, w = sample.image.shape[:2]
    if h < patch or w < patch:
        raise RejectError(str(sample.meta.get("origin") or sample.key),
                          f"image {w}x{h} is smaller than the {patch}px patch")
    out = []
    for y in range(0, h - patch + 1, stride):
        for x in range(0, w - patch + 1, stride):
            win = (slice(y, y + patch), slice(x, x + patch))
            out.append(Sample(
                key=f"{sample.key}/p{y}_{x}", sharp=None if sample.sharp is None else sample.sharp[win],
                meta=dict(sample.meta), blur=None if sample.blur is None else sample.blur[win],
                coc=None if sample.coc is None else sample.coc[win],
                blurmask=None if sample.blurmask is None else sample.blurmask[win],
            ))
    return out


def postprocess(sample: Sample, opts: IngestOptions) -> tuple[list[Sample], int]:
    """--max-side, --bit-depth, --patch/--stride and --min-sharpness; returns (samples, flat ones dropped).

    --min-sharpness judges the sharp reference; blur-map samples have none and are all kept."""
    sample = convert_bit_depth(resize_max_side(sample, opts.max_side), opts.bit_depth)
    pieces = cut_patches(sample, opts.patch, opts.stride) if opts.patch else [sample]
    if opts.min_sharpness is None:
        return pieces, 0
    kept = [p for p in pieces if p.sharp is None or sharpness(p.sharp) >= opts.min_sharpness]
    return kept, len(pieces) - len(kept)


def finalize_meta(sample: Sample, task: Task) -> dict[str, Any]:
    """Every contract key, with source/split/scene from the task where the source left them out and
    height/width/bit_depth from the arrays as written (the blurred photo in a blur-map sample)."""
    meta = {k: sample.meta.get(k) for k in META_KEYS}
    meta.update({k: v for k, v in sample.meta.items() if k not in meta})
    for k in ("source", "split", "scene"):
        if meta[k] is None:
            meta[k] = getattr(task, k)
    meta["height"], meta["width"] = int(sample.image.shape[0]), int(sample.image.shape[1])
    meta["bit_depth"] = bit_depth(sample.image)
    return meta


def _check(sample: Sample) -> None:
    for role, a in (("sharp", sample.sharp), ("blur", sample.blur)):
        if a is None:
            continue
        if a.dtype not in (np.uint8, np.uint16) or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{role} must be RGB uint8/uint16, got {a.dtype} {a.shape}")
    if sample.sharp is None:
        if sample.blur is None or sample.blurmask is None:
            raise ValueError("a sample without a sharp reference must be a blur-map sample (blur and blurmask)")
    elif sample.blur is not None and (sample.blur.shape, sample.blur.dtype) != (sample.sharp.shape, sample.sharp.dtype):
        raise ValueError(f"blur {sample.blur.shape} {sample.blur.dtype} and sharp {sample.sharp.shape} "
                         f"{sample.sharp.dtype} differ")
    if sample.coc is not None and sample.coc.shape != sample.image.shape[:2]:
        raise ValueError(f"coc {sample.coc.shape} does not match the image {sample.image.shape[:2]}")
    mask = sample.blurmask
    if mask is not None and (mask.dtype != np.uint8 or mask.shape != sample.image.shape[:2]):
        raise ValueError(f"blurmask {sample.blurmask.dtype} {sample.blurmask.shape} must be uint8 of the image's "
                         f"size {sample.image.shape[:2]}")
    if "." in sample.key:
        raise ValueError(f"sample key {sample.key!r} contains '.'")


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


def _first_file(task: Task) -> str:
    return next(iter(task.files.values()), task.key)


def process_task(module: str, task: Task, opts: IngestOptions) -> WorkResult:
    """Decode one task with its source, post-process and PNG-encode; failures become a reject."""
    try:
        samples = importlib.import_module(module).load(task, opts)
        result = WorkResult(task.key)
        for raw in samples:
            _check(raw)
            kept, dropped = postprocess(raw, opts)
            result.dropped += dropped
            for s in kept:
                meta = finalize_meta(s, task)
                result.samples.append(Encoded(s.key, shards.encode_members(s.sharp, s.blur, s.coc, meta, s.blurmask),
                                              str(meta["source"]), shards.f_number_key(meta["f_number"])))
        keys = [e.key for e in result.samples]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the source gave duplicate sample keys for task {task.key}")
        return result
    except RejectError as exc:
        rej = Rejected(task.source, exc.file, exc.reason, task.key)
    except ImageError as exc:
        rej = Rejected(task.source, exc.path, exc.reason, task.key)
    except Exception as exc:  # any other failure on one input is that input's reject
        rej = Rejected(task.source, _first_file(task), f"{type(exc).__name__}: {exc}", task.key)
    return WorkResult(task.key, rejects=[rej.to_json()])


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process
    cv2.setNumThreads(1)  # one process per core already


def _results(jobs: list[tuple[str, Task]], opts: IngestOptions, workers: int) -> Iterator[WorkResult]:
    """Results in job order: in-process for one worker, else a Pool fed a bounded ordered window
    (the equivalent of imap with chunksize 1 that cannot pile up encoded images in memory)."""
    if workers <= 1:
        for module, task in jobs:
            yield process_task(module, task, opts)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        feed = iter(jobs)
        window = deque(pool.apply_async(process_task, (m, t, opts)) for m, t in islice(feed, 2 * workers))
        while window:
            result = window.popleft().get()
            for m, t in islice(feed, 1):
                window.append(pool.apply_async(process_task, (m, t, opts)))
            yield result


def _unreadable_reject(task: Task, stamps: Stamps) -> dict[str, Any] | None:
    """The reject line of a task with an input file that cannot be read, else None."""
    for path in task.files.values():
        if path in stamps.unreadable:
            return Rejected(task.source, path, f"unreadable file: {stamps.unreadable[path]}", task.key).to_json()
    return None


# ------------------------------------------------------------------------------------------ plan


@dataclass
class Group:
    name: str
    split: str
    index: int  # global group counter over all splits, for --part
    tasks: list[Task]
    fingerprint: str = ""


def content_options(opts: IngestOptions) -> dict[str, Any]:
    """The options that change what a shard contains (not workers, part, strict or the output folder)."""
    d = asdict(opts)
    for k in ("out", "workers", "part", "strict"):
        d.pop(k)
    for k in ("cuhk_white_is", "cuhk_test_fraction"):  # carried by the CUHK tasks (split, meta): only they change
        d.pop(k)
    return d


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def list_all(sources: Mapping[str, Path], opts: IngestOptions) -> tuple[list[Task], list[dict[str, Any]]]:
    """Every source's tasks in deterministic order, and the rejects found while listing."""
    tasks, rejects, seen = [], [], set()
    for name in (n for n in SOURCES if n in sources):
        module = get_source(name)
        for item in module.list_tasks(Path(sources[name]), opts):
            if isinstance(item, Rejected):
                if opts.strict:
                    raise IngestError(f"{item.file}: {item.reason}")
                rejects.append(item.to_json())
                continue
            if "." in item.key:
                raise IngestError(f"source {name}: task key {item.key!r} contains '.'")
            if not _SPLIT_RE.match(item.split):
                raise IngestError(f"source {name}: task {item.key!r} has an invalid split name {item.split!r}")
            if item.key in seen:
                rej = Rejected(name, _first_file(item), "duplicate key (listed twice)", item.key)
                if opts.strict:
                    raise IngestError(f"{rej.file}: {rej.reason}")
                rejects.append(rej.to_json())
                continue
            seen.add(item.key)
            tasks.append(item)
    return tasks, rejects


def resolved_options(sources: Mapping[str, Path], tasks: list[Task]) -> dict[str, Any]:
    """What the sources decided while listing, for manifest.json's options: each given source module's
    `manifest_options(tasks)` (e.g. CUHK blur's mask polarity), merged."""
    resolved: dict[str, Any] = {}
    for name in (n for n in SOURCES if n in sources):
        hook = getattr(get_source(name), "manifest_options", None)
        if hook is not None:
            resolved.update(hook([t for t in tasks if t.source == name]))
    return resolved


def _task_identity(task: Task, stamps: Mapping[str, Any]) -> dict[str, Any]:
    """What a task's output depends on: key, files with their stamps, listed metadata and options."""
    return {"key": task.key, "files": task.files, "stamps": [stamps.get(p) for p in task.files.values()],
            "meta": task.meta, "options": task.options}


def plan_groups(tasks: list[Task], shard_size: int, opts: IngestOptions,
                stamps: Mapping[str, Any] | None = None) -> list[Group]:
    """Consecutive groups of `shard_size` tasks per split (splits in sorted order), fingerprinted by the
    tasks (with the `stamps` of their files: size, mtime_ns, content hash) and the content options."""
    if shard_size < 1:
        raise IngestError(f"--shard-size must be at least 1, got {shard_size}")
    by_split: dict[str, list[Task]] = {}
    for t in tasks:
        by_split.setdefault(t.split, []).append(t)
    groups, content = [], content_options(opts)
    for split in sorted(by_split):
        items = by_split[split]
        for g, start in enumerate(range(0, len(items), shard_size)):
            chunk = items[start:start + shard_size]
            fp = _digest({"tasks": [_task_identity(t, stamps or {}) for t in chunk], "options": content})
            groups.append(Group(shards.shard_name(split, g), split, len(groups), chunk, fp))
    return groups


def _check_sources(sources: Mapping[str, Path]) -> None:
    """Names, folders and dataset layouts of every source, before any work; IngestError naming each problem."""
    if not sources:
        raise IngestError("no source given: pass at least one of " + ", ".join(OPTION_OF.values()))
    problems: list[IngestError] = []
    for name, root in sources.items():
        source_module_name(name)  # unknown names fail here
        if name == "synthetic":
            if str(root) != "builtin":
                raise IngestError(f"--synthetic {root}: only 'builtin' is available")
        elif not Path(root).is_dir():
            raise IngestError(f"{OPTION_OF.get(name, name)} {root}: no such directory")
        else:
            check = getattr(get_source(name), "check_layout", None)
            try:
                if check is not None:
                    check(Path(root))
            except IngestError as exc:
                problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise IngestError("\n".join(str(p) for p in problems))


# ------------------------------------------------------------------------------------------- run


def run_ingest(sources: Mapping[str, Path], opts: IngestOptions, *, progress: bool = True) -> dict:
    """Ingest `sources` (name -> root) into the shard folder `opts.out`; returns the manifest.

    The returned manifest also carries a "run" entry (not written to disk) with this run's numbers:
    tasks, shards written/skipped, samples written, new rejects, flat patches dropped, stale files
    removed, seconds. Raises IngestError (completed shards kept, no partial shard left) under --strict,
    for a source whose layout is not its dataset's (before any work), and when the whole plan (all
    parts) yields no sample (manifest.json and rejects.jsonl are written first, "complete" false).
    A successful run removes the shards, records and temporary files of earlier plans (`shards.prune`).
    """
    t0 = time.perf_counter()
    _check_sources(sources)
    part, nparts = opts.part
    if not (nparts >= 1 and 0 <= part < nparts):
        raise IngestError(f"--part must be I/N with 1 <= I <= N, got {part + 1}/{nparts}")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, listing_rejects = list_all(sources, opts)
    stamps = stamp_files([p for t in tasks for p in t.files.values()]
                         + [r["file"] for r in listing_rejects if os.path.isfile(r["file"])])
    groups = plan_groups(tasks, opts.shard_size, opts, stamps.of)
    options = {**asdict(opts), "sources": {k: str(v) for k, v in sources.items()}, **resolved_options(sources, tasks)}
    listing = _listing_record(listing_rejects, options["sources"], stamps)
    plan = {g.name: g.fingerprint for g in groups} | {listing["name"]: listing["fingerprint"]}
    old = shards.read_record(out, listing["name"])
    new_rejects = 0 if old and old.get("fingerprint") == listing["fingerprint"] else len(listing_rejects)
    shards.write_record(out, listing)
    if not tasks:
        raise _no_sample(out, plan, options, sources, 0)

    mine = [g for g in groups if g.index % nparts == part]
    pending, skipped = _pending(out, mine)
    stats: Counter = Counter()
    try:
        workers = _write_groups(out, pending, stamps, opts, progress, stats)
    except BaseException:
        shards.regenerate(out, plan, options)
        raise
    manifest = shards.regenerate(out, plan, options)
    if manifest["done_shards"] >= manifest["expected_shards"] and manifest["counts"]["samples"] == 0:
        raise _no_sample(out, plan, options, sources, len(tasks))
    removed = shards.prune(out, plan, {g.name for g in mine})
    manifest["run"] = {
        "tasks": len(tasks), "shards_planned": len(groups), "shards_written": stats["written"],
        "shards_skipped": skipped, "pairs_loaded": stats["loaded"], "samples_written": stats["samples"],
        "rejects_new": new_rejects + stats["rejects"], "dropped_flat": stats["dropped"], "workers": workers,
        "stale_removed": len(removed), "seconds": round(time.perf_counter() - t0, 3),
    }
    return manifest


def _listing_record(rejects: list[dict[str, Any]], sources: Mapping[str, str], stamps: Stamps) -> dict[str, Any]:
    """The pseudo-shard record of the listing's rejects, fingerprinted with the rejected files' stamps."""
    seen = [stamps.of.get(r["file"]) for r in rejects]
    fingerprint = _digest({"rejects": rejects, "sources": sources, "stamps": seen})
    return {"name": shards.LISTING_RECORD, "split": None, "samples": 0, "rejects": rejects, "fingerprint": fingerprint}


def _pending(out: Path, groups: list[Group]) -> tuple[list[Group], int]:
    """The groups without a tar and record of their fingerprint (leftovers of theirs removed), and how
    many are done. An older tar of the same name stays until the new one replaces it (or `prune`)."""
    pending, skipped = [], 0
    for g in groups:
        rec = shards.read_record(out, g.name)
        done = rec and rec.get("fingerprint") == g.fingerprint
        if done and (rec["samples"] == 0 or (out / f"{g.name}.tar").is_file()):
            skipped += 1
            continue
        shards.partial_path(out, g.name).unlink(missing_ok=True)  # left by an interrupted run
        shards.spool_path(out, g.name).unlink(missing_ok=True)
        shards.record_path(out, g.name).unlink(missing_ok=True)
        pending.append(g)
    return pending, skipped


def _write_groups(out: Path, pending: list[Group], stamps: Stamps, opts: IngestOptions, progress: bool,
                  stats: Counter) -> int:
    """Process the pending groups' tasks in worker processes and commit each group's shard and record
    as soon as it is complete; a task with an unreadable input file is a reject without a worker.
    Updates `stats`; returns the number of worker processes. On any exception no partial shard is left."""
    todo = [(g, t) for g in pending for t in g.tasks]
    blocked = {t.key: rej for _, t in todo if (rej := _unreadable_reject(t, stamps))}
    work = [(source_module_name(t.source), t) for _, t in todo if t.key not in blocked]
    workers = max(1, min(opts.workers or os.cpu_count() or 1, len(work)))
    results = _results(work, opts, workers)
    writer: shards.AtomicShard | None = None
    bar = _progress(progress, len(todo))
    try:
        counts: Counter = Counter()
        rejects: list[dict[str, Any]] = []
        dropped = 0
        for g, task in todo:
            res = WorkResult(task.key, rejects=[blocked[task.key]]) if task.key in blocked else next(results)
            if res.rejects and opts.strict:
                raise IngestError(f"{res.rejects[0]['file']}: {res.rejects[0]['reason']}")
            for enc in res.samples:
                writer = writer or shards.AtomicShard(out, g.name)
                writer.write(enc.key, enc.members)
                counts[(enc.source, enc.f_number)] += 1
            rejects += res.rejects
            dropped += res.dropped
            stats.update(samples=len(res.samples), dropped=res.dropped, loaded=not res.rejects,
                         rejects=len(res.rejects))
            if bar:
                bar[0].advance(bar[1])
            if task is g.tasks[-1]:  # the group is complete: commit its shard, then its record
                _commit(out, writer, _record(g, counts, rejects, dropped))
                writer = None
                stats["written"] += 1
                counts, rejects, dropped = Counter(), [], 0
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        results.close()
        _stop(bar)
    return workers


def _commit(out: Path, writer: shards.AtomicShard | None, record: dict[str, Any]) -> None:
    """Seal the shard, then publish it and write its record together under the folder lock (so that a
    part pruning the folder never sees a published shard without its record)."""
    if writer:
        writer.seal()
    with shards.folder_lock(out):
        if writer:
            writer.publish()
        shards.write_record(out, record)


def _record(g: Group, counts: Counter, rejects: list[dict[str, Any]], dropped: int = 0) -> dict[str, Any]:
    by_source, by_f = Counter(), Counter()
    for (src, f), n in counts.items():
        by_source[src] += n
        by_f[f] += n
    return {
        "name": g.name, "split": g.split, "fingerprint": g.fingerprint, "tasks": len(g.tasks),
        "samples": sum(counts.values()), "by_source": dict(sorted(by_source.items())),
        "by_f_number": dict(sorted(by_f.items(), key=lambda kv: shards.f_sort_key(kv[0]))),
        "table": [{"source": s, "f_number": f, "samples": n} for (s, f), n in sorted(counts.items())],
        "rejects": rejects, "dropped": dropped,
    }


def _no_sample(out: Path, plan: Mapping[str, str], options: Mapping[str, Any], sources: Mapping[str, Path],
               n_tasks: int) -> IngestError:
    """The error of a plan that yields no sample, written into the manifest ("complete": false)."""
    manifest = shards.regenerate(out, plan, options)  # rejects.jsonl of every part, merged
    rejects_file = out / shards.REJECTS
    rejects = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    message = no_sample_message(sources, n_tasks, rejects, manifest.get("dropped_flat", 0), rejects_file,
                                options.get("min_sharpness"))
    shards.regenerate(out, plan, options, error=message)
    return IngestError(message)


def no_sample_message(sources: Mapping[str, Path], n_tasks: int, rejects: list[dict[str, Any]], dropped: int,
                      rejects_file: Path, min_sharpness: float | None = None) -> str:
    """Why no sample was written: no inputs, every input rejected (with the most common reason), or
    every patch flatter than --min-sharpness."""
    where = ", ".join(f"{OPTION_OF.get(n, n)} {p}" for n, p in sources.items())
    see = f"see {rejects_file}"
    roots = {str(Path(p)) for p in sources.values()}
    if n_tasks == 0 and all(r["file"] in roots for r in rejects):
        why = "; ".join(r["reason"] for r in rejects)
        return f"no sample written: no inputs found under {where}" + (f" ({why})" if why else "")
    if n_tasks == 0:
        head = f"no sample written: all {len(rejects)} inputs under {where} rejected while listing ({see})"
    elif rejects and not dropped:
        head = f"no sample written: {n_tasks} inputs, all rejected ({see})"
    elif dropped and not rejects:
        head = (f"no sample written: all {dropped} patches of the {n_tasks} inputs are flatter than "
                f"--min-sharpness {min_sharpness}")
    elif dropped:
        head = (f"no sample written: {n_tasks} inputs, {len(rejects)} rejected ({see}), the {dropped} patches "
                f"of the others all flatter than --min-sharpness {min_sharpness}")
    else:
        head = f"no sample written: the sources gave no sample for their {n_tasks} inputs under {where}"
    if not rejects:
        return head
    reason, count = Counter(r["reason"] for r in rejects).most_common(1)[0]
    example = next(r["file"] for r in rejects if r["reason"] == reason)
    return f"{head}; most common reason ({count} of {len(rejects)}): {reason} (e.g. {example})"


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
