"""DPDD (Abuolaim & Brown, ECCV 2020): `{train_c,val_c,test_c}/{source,target}/*.png`, 16-bit, f/4 vs f/22.

Source and target file names are consecutive Canon frame numbers (they differ), so pairs are formed by
sorted order within a split, never by name: by the frame counter, round its wrap where a split's frames run from 9999
on to 0001 (`counters.paired_order`; sorted by name, every pair after the wrap would be shifted by one). The
images are aligned already (tripod, same session): no registration. The dual-pixel views of the blurred shots,
`{train,val,test}_l/source/` and `..._r/source/` (the layout IFAN's data loader reads: its configs' l_path /
r_path), are stored as left.png / right.png with `--dual-pixel` (paired with the centre views by sorted order, as
the release does, cut round a wrap at the same place), else ignored; so are stray `*_l` / `*_r` files beside the
centre views.

Layout: at least one split folder, and `source/` and `target/` in each one present, else the source
fails (LayoutError) before any work; a parent folder holding exactly one such folder (`dd_dp_dataset_canon/`
holding `dd_dp_dataset_png/`) is read as that one (a parent of several names them). Hidden files (`._1.png`,
macOS AppleDouble), images in another format than PNG, subfolders holding images and images in folders DPDD does
not have get reject lines and are not counted.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import as_depth, key_part, load_task, relpath
from defocuskit.data.sample import IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.counters import paired_order
from defocuskit.data.sources.pairs import folder_images
from defocuskit.io.images import bit_depth, read_image

NAME = "dpdd"
TITLE = "DPDD"
EXPECTED = "{train_c,val_c,test_c}/{source,target}/"
SPLITS = (("train_c", "train"), ("val_c", "val"), ("test_c", "test"))
F_NUMBER, REF_F_NUMBER = 4.0, 22.0  # DPDD paper: source f/4, target f/22
CAMERA = "Canon EOS 5D Mark IV"


USES = "{train_c,val_c,test_c}/{source,target}/*.png"
VIEW_FOLDERS = tuple(f"{d[:-2]}_{side}" for d, _ in SPLITS for side in ("l", "r"))  # train_l, ...: dual-pixel views


def _pngs(folder: Path) -> tuple[list[Path], list[Rejected]]:
    """The PNG files lying directly in `folder`, sorted by name, and reject lines for the images there that are
    not used (hidden, another format)."""
    images, rejects = folder_images(NAME, folder, USES)
    rejects += [Rejected(NAME, str(p), f"not a PNG: DPDD reads {USES}") for p in images if p.suffix.lower() != ".png"]
    return [p for p in images if p.suffix.lower() == ".png"], rejects


def _centre_views(folder: Path) -> tuple[list[Path], list[Rejected]]:
    images, rejects = _pngs(folder)
    return [p for p in images if not p.stem.lower().endswith(("_l", "_r"))], rejects


def _shot_stem(path: Path) -> str:
    """A file's stem without a dual-pixel view's mark (`1P0A0917_L` -> `1P0A0917`): the part holding its counter."""
    return re.sub(r"_[lLrR]$", "", path.stem)


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being a DPDD folder (the split folders in it), or None."""
    present = [d for d, _ in SPLITS if (data / d).is_dir()]
    if not present:
        return "no train_c/, val_c/ or test_c/ folder"
    for folder in present:
        if lacking := layout.missing(data / folder, ("source", "target")):
            return f"{folder}/ has no {' or '.join(lacking)}"
    return None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per source/target image pair of every split folder present."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = root_of(root)
    yield from layout.unused_images(NAME, data, [d for d, _ in SPLITS] + list(VIEW_FOLDERS), USES, depth=2)
    for folder, split in SPLITS:
        split_dir = data / folder
        if not split_dir.is_dir():
            continue
        yield from layout.unused_images(NAME, split_dir, ("source", "target"), USES)
        (sources, rejects), (targets, more) = _centre_views(split_dir / "source"), _centre_views(split_dir / "target")
        yield from rejects + more
        if len(sources) != len(targets):
            yield Rejected(NAME, str(split_dir),
                           f"{len(sources)} source vs {len(targets)} target images: cannot pair by sorted order")
            continue
        views: Views = [(None, None)] * len(sources)
        if opts.dual_pixel:
            found, rejects = _dual_views(data, folder, len(sources))
            yield from rejects
            if isinstance(found, str):
                yield Rejected(NAME, str(data / f"{folder[:-2]}_l"), found)
                continue
            sources, targets, lefts, rights = paired_order([sources, targets, *found], stem=_shot_stem)
            views = list(zip(lefts, rights))
        else:
            sources, targets = paired_order([sources, targets])
        for (blur, sharp), (left, right) in zip(zip(sources, targets), views):
            scene = key_part(blur.stem)
            files = {"blur": str(blur), "sharp": str(sharp)}
            origin = [relpath(blur, root), relpath(sharp, root)]
            if left is not None and right is not None:
                files.update(left=str(left), right=str(right))
                origin += [relpath(left, root), relpath(right, root)]
            meta = {"f_number": F_NUMBER, "ref_f_number": REF_F_NUMBER, "camera": CAMERA,
                    "blur_type": "defocus", "origin": origin}
            yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}", files, meta, {})


Views = list[tuple[Path | None, Path | None]]


def _dual_views(data: Path, folder: str, n: int) -> tuple[list[list[Path]] | str, list[Rejected]]:
    """The left and the right view files of a split's n blurred shots, or why there are none; and reject lines
    for the hidden files beside them."""
    base = folder[:-2]  # train_c -> train
    lists, rejects = [], []
    for side in ("l", "r"):
        views = data / f"{base}_{side}" / "source"
        if not views.is_dir():
            return f"--dual-pixel: no {base}_{side}/source/ folder beside {folder}/", rejects
        images, more = _pngs(views)
        lists.append(images)
        rejects += more
        if len(lists[-1]) != n:
            return (f"--dual-pixel: {len(lists[-1])} images in {base}_{side}/source/ vs {n} in {folder}/source/: "
                    "cannot pair by sorted order"), rejects
    return lists, rejects


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the 16-bit pair as is (with its dual-pixel views where the task lists them)."""
    samples = load_task(task, opts)
    if "left" not in task.files:
        return samples
    (sample,) = samples
    views = []
    for side in ("left", "right"):
        view = read_image(task.files[side])
        if view.shape != sample.blur.shape:
            raise RejectError(task.files[side], f"dual-pixel view {view.shape[1]}x{view.shape[0]} does not match the "
                                                f"blurred shot {sample.blur.shape[1]}x{sample.blur.shape[0]}")
        views.append(as_depth(view, bit_depth(sample.blur)))
    return [replace(sample, left=views[0], right=views[1])]


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       root_of=root_of)
