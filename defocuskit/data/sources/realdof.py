"""RealDOF (Lee et al., CVPR 2021): `{source,target}/*.png`, 50 pairs, test only.

Pairing: by the number in the file names (the last run of digits, `1.png` with `1_gt.png`, `000_blur.png`
with `000_gt.png`) where every file has one, unique in its folder, and one folder's numbers are all found in the
other; else by stem (a target's `_gt` suffix stripped) on the same terms; a file with no partner then gets a
reject line. Only names with nothing in common are paired by sorted order (digits compared as numbers: `a9`
before `a10`), and then only when the counts agree (else one reject line and no pairs). Of two files of one stem
in a folder (`1.png` beside a `1.jpg` copy) one is used (PNG or TIFF before JPEG) and the other gets a reject line.

Layout: `source/` and `target/` must exist, else the source fails (LayoutError) before any work. Unlike `--dpdd`,
`--vabd`, ..., it does not read the one dataset folder inside a parent folder: a DPDD split folder
(`test_c/{source,target}/`) has RealDOF's layout, so a DPDD folder would be read as RealDOF instead of refused with
"is this DPDD (--dpdd)?". Hidden
files (`._1.png`, macOS AppleDouble), images in a format it does not read (`.bmp`, `.webp`), subfolders
holding images, other folders holding images and images lying in the root get reject lines and are not counted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from defocuskit.data.pairs import key_part, load_task, name_order, relpath
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.pairs import folder_images

NAME = "realdof"
TITLE = "RealDOF"
EXPECTED = "source/ and target/"
EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
USES = "source/, target/ (.png, .jpg, .jpeg, .tif, .tiff)"
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _number(path: Path) -> str | None:
    match = _NUMBER.search(path.stem)
    return str(int(match.group(1))) if match else None


def _stem(path: Path) -> str:
    return path.stem[:-3] if path.stem.lower().endswith("_gt") else path.stem


def _keyed(paths: list[Path], key: Callable[[Path], str | None]) -> dict[str, Path] | None:
    """`paths` by `key`, or None where a file has no key or two share one."""
    found = {k: p for p in paths if (k := key(p)) is not None}
    return found if len(found) == len(paths) else None


def _pair(root: Path, sources: list[Path], targets: list[Path]) -> tuple[list[tuple[Path, Path]], list[Rejected]]:
    """(blur, sharp) pairs by number, else by stem, else by sorted order; reject lines for what stays unpaired."""
    for key, what in ((_number, "numbered"), (_stem, "named")):
        blurs, sharps = _keyed(sources, key), _keyed(targets, key)
        if blurs is None or sharps is None or not (set(blurs) <= set(sharps) or set(sharps) <= set(blurs)):
            continue  # keys that do not cover one folder (a chance overlap of frame numbers) pair nothing
        order = sorted(set(blurs) | set(sharps), key=lambda k: (int(k), k) if what == "numbered" else (0, k))
        pairs = [(blurs[k], sharps[k]) for k in order if k in blurs and k in sharps]
        rejects = [Rejected(NAME, str(blurs[k]), f"no target image {what} {k}") for k in order if k not in sharps]
        rejects += [Rejected(NAME, str(sharps[k]), f"no source image {what} {k}") for k in order if k not in blurs]
        return pairs, rejects
    if len(sources) != len(targets):
        reason = (f"{len(sources)} source vs {len(targets)} target images: names share no number or stem, "
                  "cannot pair by sorted order")
        return [], [Rejected(NAME, str(root), reason)]
    return list(zip(sorted(sources, key=name_order), sorted(targets, key=name_order))), []


def _images(folder: Path) -> tuple[list[Path], list[Rejected]]:
    """The images lying directly in `folder`, sorted by name, and reject lines for those not used (hidden, another
    format)."""
    images, rejects = folder_images(NAME, folder, USES)
    rejects += [Rejected(NAME, str(p), f"a {p.suffix} file: RealDOF reads {USES}") for p in images
                if p.suffix.lower() not in EXTENSIONS]
    used, twins = one_per_stem([p for p in images if p.suffix.lower() in EXTENSIONS])
    return used, rejects + twins


def one_per_stem(paths: list[Path]) -> tuple[list[Path], list[Rejected]]:
    """One file per stem (`1.png` beside a `1.jpg` copy: PNG or TIFF before JPEG, then the first by name), sorted by
    name, and a reject line for each other one: a stem held twice left no number or stem unique, and the pairs fell
    back to sorted order, every later pair shifted by one."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    used, rejects = [], []
    for twins in by_stem.values():
        best, *rest = sorted(twins, key=lambda p: (p.suffix.lower() in (".jpg", ".jpeg"), p.name))
        used.append(best)
        rejects += [Rejected(NAME, str(p), f"another file of the same name is used: {best.name}") for p in rest]
    return sorted(used), rejects


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being a RealDOF folder, or None."""
    lacking = layout.missing(Path(root), ("source", "target"))
    return f"no {' or '.join(lacking)}" if lacking else None


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One test pair per source/target image pair (by number, else stem, else sorted order)."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    yield from layout.unused_images(NAME, root, ("source", "target"), USES, depth=2)
    (sources, rejects), (targets, more) = _images(root / "source"), _images(root / "target")
    yield from rejects + more
    if not sources and not targets:
        yield Rejected(NAME, str(root), "no source/ and target/ images found")
        return
    pairs, rejects = _pair(root, sources, targets)
    yield from rejects
    for blur, sharp in pairs:
        scene = key_part(blur.stem)
        meta = {"blur_type": "defocus", "origin": [relpath(blur, root), relpath(sharp, root)]}
        yield Task(NAME, "test", scene, f"{NAME}/test/{scene}", {"blur": str(blur), "sharp": str(sharp)}, meta, {})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the (already aligned) pair."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED,
                       layout_problem=layout_problem)
