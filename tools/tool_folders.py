"""What the benchmark tools may write: a --work folder they made (never a user's), a results file they wrote; and
the real VABD shots of a --shards ID=DIR they may read.

Imported by the tools run as scripts (`python tools/NAME.py`, whose folder is then first on sys.path)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def fresh_work(work: Path, own: tuple[str, ...], mark: str, tool: str, arg: str = "--work") -> None:
    """Make `work` ready for a run of `tool`: a new or empty folder, or one the tool made before (its `mark` file),
    of which only the names in `own` (glob patterns) are removed. Anything else stops the tool in one line naming
    it (as the argument `arg`): a folder of the user's is never removed."""
    if work.exists():
        if not work.is_dir():
            sys.exit(f"error: {arg} {work}: exists and is not a folder; give a new folder")
        if not (work / mark).is_file() and any(work.iterdir()):
            sys.exit(f"error: {arg} {work}: holds files {tool} did not make (no {mark} in it); it is left as it is: "
                     "give a new or empty folder")
    for pattern in own:
        for p in sorted(work.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    work.mkdir(parents=True, exist_ok=True)
    (work / mark).write_text(f"made by tools/{tool}; a rerun replaces only what it makes\n")


def foreign_results(path: Path, keys: set[str], tool: str) -> str | None:
    """Why `path` may not be written by `tool`: a link, a folder, or a file it did not write (JSON with these
    keys); None where it may."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        ours = not path.is_symlink() and set(json.loads(path.read_text(encoding="utf-8"))) == keys
    except (OSError, ValueError, TypeError):
        ours = False
    return None if ours else f"{path}: exists and was not written by {tool}; it is left as it is: give another --out"


def not_new_folder(path: Path) -> str | None:
    """Why `path` cannot become a new folder of a tool's outputs (it exists, or a file stands where a folder above
    it must be); None where it can."""
    if path.exists() or path.is_symlink():
        return f"{path}: exists; give a new folder"
    above = path.absolute().parent
    while not (above.exists() or above.is_symlink()):
        above = above.parent
    return None if above.is_dir() else f"{path}: {above} is a file, not a folder; give a new folder"


def vabd_shards_problem(item: str, calibrated: dict[str, float], stack_names: set[str]) -> str | None:
    """Why `item` (--shards ID=DIR) is not the real shots of a calibrated VABD stack (`calibrated`: the stacks' k;
    `stack_names`: calibrate_renderer.stacks' names): an ID with no k, no shards in DIR, or shards of other
    photographs, whose depth map would describe a different scene; None where it is."""
    from defocuskit.data.reader import iter_samples, shard_urls

    stack_id, _, folder = item.partition("=")
    if stack_id not in calibrated or f"VABD {stack_id}" not in stack_names:
        return (f"{item}: give ID=DIR with ID a VABD stack of --fixtures that tools/calibrate_renderer.py fitted "
                f"({', '.join(calibrated)})")
    try:
        shard_urls(folder, "test")
    except FileNotFoundError as exc:
        return f"{item}: {exc}"
    keys = [sample["key"] for sample in iter_samples(folder, "test")]
    if not keys or any(key.split("/")[:1] != ["vabd"] or stack_id not in key.split("/") for key in keys):
        return (f"{item}: not the real VABD {stack_id} shots (`ingest --vabd`; keys {', '.join(keys[:2]) or 'none'}): "
                "their depth map would describe other photographs")
    return None


def vabd_shots(items: list[str], stacks_by_name: dict[str, dict]):
    """(stack id, stack, sample, shot, reference, f-number) for every blurred sample of each checked --shards ID=DIR,
    shot and reference float32 in [0, 1]."""
    import numpy as np

    from defocuskit.data.reader import iter_samples
    from defocuskit.eval.metrics import to_unit

    for item in items:
        stack_id, _, folder = item.partition("=")
        for sample in iter_samples(folder, "test"):
            if sample["blur"] is not None:
                shot, reference = (to_unit(sample[k]).astype(np.float32) for k in ("blur", "sharp"))
                yield (stack_id, stacks_by_name[f"VABD {stack_id}"], sample, shot, reference,
                       float(sample["meta"]["f_number"]))
