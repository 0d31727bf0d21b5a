"""What ingest writes about its work besides the shards: each shard's record (sample counts by source and
f-number, rejects, flat patches dropped) and the error of a plan that yields no sample."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defocuskit.data import shards
from defocuskit.data.manifest import REJECTS, regenerate
from defocuskit.data.plan import Group
from defocuskit.data.sample import IngestError
from defocuskit.data.sources import option_of
from defocuskit.data.stamps import content_hash


def shard_record(g: Group, counts: Counter, rejects: list[dict[str, Any]], dropped: int = 0,
                 blurred: int | None = None, tar: Path | None = None) -> dict[str, Any]:
    """The record of a completed shard: `counts` maps (source, f-number key) to samples written, `blurred` how many
    of them hold a blurred image (blur.png), `tar` the sealed tar (its size and content hash are recorded:
    `tar_intact`)."""
    by_source, by_f = Counter(), Counter()
    for (src, f), n in counts.items():
        by_source[src] += n
        by_f[f] += n
    return {
        "name": g.name, "split": g.split, "fingerprint": g.fingerprint, "tasks": len(g.tasks),
        "samples": sum(counts.values()), "by_source": dict(sorted(by_source.items())),
        "by_f_number": dict(sorted(by_f.items(), key=lambda kv: shards.f_sort_key(kv[0]))),
        "table": [{"source": s, "f_number": f, "samples": n} for (s, f), n in sorted(counts.items())],
        "rejects": rejects, "dropped": dropped, "blurred": blurred,
        **(tar_stamp(tar) if tar is not None else {}),
    }


def tar_stamp(tar: Path) -> dict[str, Any]:
    """What `tar_intact` compares, for a shard's record: the sealed tar's size ("tar_bytes", which the manifest lists
    as "bytes" for the readers to check) and the hash of its size, first and last MiB ("tar_hash")."""
    size = tar.stat().st_size
    return {"tar_bytes": size, "tar_hash": content_hash(str(tar), size)}


def tar_intact(record: Mapping[str, Any], tar: Path) -> bool:
    """Whether the shard `tar` is as the run that wrote it left it, as far as its recorded size and content hash
    tell (a tar cut short or grown since, or replaced by another, of the same size too, is not: a rerun writes it
    anew); what a record of an older run lacks (the size, the hash) is not compared."""
    size, digest = record.get("tar_bytes"), record.get("tar_hash")
    try:
        if isinstance(size, int) and tar.stat().st_size != size:
            return False
        return not isinstance(digest, str) or content_hash(str(tar), tar.stat().st_size) == digest
    except OSError:
        return False


def no_sample_error(out: Path, plan: Mapping[str, str], options: Mapping[str, Any], sources: Mapping[str, Path],
                    n_tasks: int, n_sharp_only: int = 0) -> IngestError:
    """The error of a plan that yields no sample (or only `n_sharp_only` references without a blurred image),
    written into the manifest ("complete": false)."""
    manifest = regenerate(out, plan, options)  # rejects.jsonl of every part, merged
    rejects_file = out / REJECTS
    rejects = [json.loads(line) for line in rejects_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if n_sharp_only:  # every blurred shot rejected: the references alone were kept
        message = f"no blurred shot written: only {n_sharp_only} sharp reference(s) kept, nothing to deblur or score"
        if rejects:
            message += f"; {len(rejects)} input(s) rejected ({_most_common(rejects)}; see {rejects_file})"
    else:
        message = no_sample_message(sources, n_tasks, rejects, manifest.get("dropped_flat", 0), rejects_file,
                                    options.get("min_sharpness"))
    regenerate(out, plan, options, error=message)
    return IngestError(message)


def no_sample_message(sources: Mapping[str, Path], n_tasks: int, rejects: list[dict[str, Any]], dropped: int,
                      rejects_file: Path, min_sharpness: float | None = None) -> str:
    """Why no sample was written: no inputs, every input rejected (with the most common reason), or
    every patch flatter than --min-sharpness."""
    where = ", ".join(f"{option_of(n)} {p}" for n, p in sources.items())
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
    return f"{head}; {_most_common(rejects)}" if rejects else head


def _most_common(rejects: list[dict[str, Any]]) -> str:
    """The reason most rejects share, counted as one kind of reason whatever file names and numbers it holds."""
    kinds = [reason_kind(r) for r in rejects]
    kind, count = Counter(kinds).most_common(1)[0]
    example = rejects[kinds.index(kind)]
    return f"most common reason ({count} of {len(rejects)}): {example['reason']} (e.g. {example['file']})"


def reason_kind(reject: Mapping[str, Any]) -> str:
    """A reject's reason without the name of its file and with every number as '#': the kind of reason it is
    ("0001.png: a colour depth image ..." and "0002.png: ..." are one kind; so are "score 0.74 < 0.8" and "0.36")."""
    reason = str(reject.get("reason", ""))
    name = Path(str(reject.get("file", ""))).name
    if name:
        reason = reason.replace(name, "")
    return re.sub(r"\d+(?:\.\d+)?", "#", reason)
