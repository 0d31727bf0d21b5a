"""SDD (Li, Ren, Shu, Zuo, "Learning Single Image Defocus Deblurring with Misaligned Training Pairs",
arXiv:2211.14502; code and data at github.com/liyucs/JDRL): `{train_patches,test}/{gt,blur}/`.

The layout as the authors' release defines it (repository liyucs/JDRL: README.md as of commit c9c420e,
the code files as of 9f598f6):
  - README.md: "SDD: 512*512 image patches have been provided in './SDD/train_patches'"; the test set is
    run with `python test.py --test_path './SDD/test/'`; train and test sets download as one archive.
  - train.py: `--data_path_single` defaults to `./SDD/train_patches/`, `--test_path` to `./SDD/test/`.
  - solver/solver.py (`prepare_data`) and test_model/test_model.py (`creat_list`): a split folder holds
    `gt/` (the all-in-focus ground truth) and `blur/` (the defocused shot); every file of `gt/` is paired
    with the file of the SAME NAME in `blur/` (the code builds the blur path from the gt file name).
  - dataset.py and test_model.py read both with cv2.imread and divide by 2**8 - 1: 8-bit images.
  - The paper (abstract) describes SDD as a dataset "with typical misalignments" between the blurry image
    and its ground truth; test_model.py scores SDD against the ground truth warped onto the output by
    optical flow (PWC-Net), not against the ground truth as stored.
Not established from those sources, so left null: the camera, the lens, the f-numbers of the two shots
(f_number and ref_f_number come from EXIF where the files carry it, else null), the file extension (any
image format is read), how the training patches were cut and named (each patch is its own scene here).

Splits: `train_patches/` -> train, `test/` -> test. Keys `sdd/<split>/<file stem>`. A parent folder holding
exactly one such folder (`./` holding `SDD/`, as the JDRL code expects) is read as that one, origins (relative to the
folder given) then starting with its name (a parent of several names them). Pairs are registered per
opts.register (ECC affine with a homography fallback by default, gain-matched, as EBB); JDRL trains on the pairs as
shot: use `--register none`.

Layout: at least one of `train_patches/`, `test/`, each present one with `gt/` and `blur/`, else the source
fails (LayoutError) before any work. A file without its same-name partner, images in other folders or in
subfolders of `gt/`, `blur/`, hidden files and unsupported formats get reject lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import load_task
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.fnumbers import GivenFNumbers
from defocuskit.data.sources.pairs import (
    folder_images,
    pair_names,
    pair_options,
    shot_meta,
)
from defocuskit.io.formats import ImageError

NAME = "sdd"
TITLE = "SDD"
SPLITS = (("train_patches", "train"), ("test", "test"))
GT, BLUR = "gt", "blur"
EXPECTED = "{train_patches,test}/{gt,blur}/"
USES = "gt/, blur/"
PAIRED_BY = "SDD pairs gt/ and blur/ by identical file name"


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being an SDD folder (its split folders in it), or None."""
    present = [d for d, _ in SPLITS if (data / d).is_dir()]
    if not present:
        return "no train_patches/ or test/ folder"
    for folder in present:
        if lacking := layout.missing(data / folder, (GT, BLUR)):
            return f"{folder}/ has no {' or '.join(lacking)}"
    return None


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being an SDD folder or the parent of one, or None; of a parent holding an `SDD/` that
    is not one (and no SDD folder), what that `SDD/` lacks."""
    root = Path(root)
    problem = layout.parent_problem(NAME, root, _problem)
    if (problem is not None and (root / "SDD").is_dir() and not any((root / d).is_dir() for d, _ in SPLITS)
            and not layout.roots_inside(root, _problem)):
        return f"in SDD/: {_problem(root / 'SDD')}"
    return problem


_, root_of = layout.parent_rule(NAME, _problem)  # the SDD folder `root` names: itself, or the one in it


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per gt/blur pair of the same file name; reject lines for every image not used."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    options = pair_options(opts)
    data = root_of(root)
    yield from layout.unused_images(NAME, data, [d for d, _ in SPLITS], "train_patches/, test/", depth=2)
    for folder, split in SPLITS:
        if (data / folder).is_dir():
            yield from layout.unused_images(NAME, data / folder, (GT, BLUR), USES)
            yield from _split_tasks(root, data / folder, split, options)


def _split_tasks(root: Path, folder: Path, split: str, options: dict) -> Iterator[Task | Rejected]:
    gts, rejects = folder_images(NAME, folder / GT, USES)
    blurs, more = folder_images(NAME, folder / BLUR, USES)
    yield from rejects + more
    gt_of, blur_of = {p.name: p for p in gts}, {p.name: p for p in blurs}
    for name in sorted(set(blur_of) - set(gt_of)):
        yield Rejected(NAME, str(blur_of[name]), f"no {folder.name}/{GT}/{name}: {PAIRED_BY}")
    for name in sorted(set(gt_of) - set(blur_of)):
        yield Rejected(NAME, str(gt_of[name]), f"no {folder.name}/{BLUR}/{name}: {PAIRED_BY}")
    paired = sorted(set(gt_of) & set(blur_of))
    names = pair_names([blur_of[n] for n in paired])
    for name in paired:
        blur, gt = blur_of[name], gt_of[name]
        scene = names[blur]
        key = f"{NAME}/{split}/{scene}"
        try:
            meta = shot_meta(blur, gt, root, GivenFNumbers())
        except ImageError as exc:
            yield Rejected(NAME, str(exc.path), f"unreadable file or EXIF header: {exc.reason}", key)
            continue
        yield Task(NAME, split, scene, key, {"blur": str(blur), "sharp": str(gt)}, meta, dict(options))


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode; the blurred shot is registered onto the ground truth (unless `--register none`) and gain-matched."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       root_of=root_of)
