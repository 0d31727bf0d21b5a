"""RealBlur (Rim et al., ECCV 2020): real MOTION blur, tagged blur_type "motion" with f_number null.

Layout: `RealBlur-J_ECC_IMCORR_centroid_itensity_ref/sceneNNN/{gt/gt_K.png, blur/blur_K.png}` and
`RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref/...` (the misspelling is real); splits come from
`RealBlur_{J,R}_{train,test}_list.txt`, one "gt_path blur_path" line per pair, relative to the root (read as
UTF-8 or, by its byte-order mark, UTF-16; CRLF line ends too; a list that cannot be read is a reject line).
The pairs are registered by the authors already. Images in no list get reject lines: one per scene folder
none of whose images is listed, one per other image (a folder beside the `RealBlur-*` ones: one per folder).

Layout: at least one list file must exist, else the source fails (LayoutError) before any work; a parent folder
holding exactly one such folder (a download folder holding `RealBlur/`) is read as that one, origins then starting
with its name (a parent of several, `RealBlur_J/` and `RealBlur_R/` each with its lists, names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import key_part, load_task
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.pairs import HIDDEN_FILE
from defocuskit.io.formats import IMAGE_EXTENSIONS
from defocuskit.io.raw import io_reason

NAME = "realblur"
TITLE = "RealBlur"
EXPECTED = "RealBlur_{J,R}_{train,test}_list.txt beside RealBlur-{J,R}_..._itensity_ref/"
VARIANTS = ("J", "R")
SPLITS = ("train", "test")
USES = "the images its RealBlur_{J,R}_{train,test}_list.txt name"


def _read_list(list_file: Path) -> str:
    """The text of a list file: UTF-8 (a byte-order mark dropped), or UTF-16 by its byte-order mark."""
    data = list_file.read_bytes()
    return data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")


def _pairs(list_file: Path) -> Iterator[tuple[int, str, str] | Rejected]:
    try:
        text = _read_list(list_file)
    except OSError as exc:
        yield Rejected(NAME, str(list_file), f"cannot read the list: {io_reason(exc)}")
        return
    except UnicodeDecodeError as exc:
        yield Rejected(NAME, str(list_file), f"not a text list (UTF-8 or UTF-16): {exc.reason} at byte {exc.start}")
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            yield Rejected(NAME, f"{list_file}:{lineno}", f"expected 'gt_path blur_path', got {line.strip()!r}")
            continue
        yield lineno, fields[0], fields[1]


def _list_files(root: Path) -> list[tuple[str, str, Path]]:
    return [(v, s, Path(root) / f"RealBlur_{v}_{s}_list.txt") for v in VARIANTS for s in SPLITS]


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being a RealBlur folder (its lists in it), or None."""
    if not any(f.is_file() for _, _, f in _list_files(data)):
        return "no RealBlur_{J,R}_{train,test}_list.txt"
    return None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per list line of every RealBlur_{J,R}_{train,test}_list.txt present."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = root_of(root)
    inside = "" if data == root else f"{data.name}/"  # origin stays relative to the folder given
    lists = _list_files(data)
    seen: dict[str, str] = {}  # key -> where it was first listed
    listed: set[Path] = set()
    for variant, split, list_file in lists:
        if not list_file.is_file():
            continue
        for item in _pairs(list_file):
            if isinstance(item, Rejected):
                yield item
                continue
            lineno, gt_rel, blur_rel = item
            gt, blur = data / gt_rel, data / blur_rel
            missing = [p for p in (gt, blur) if not p.is_file()]
            if missing:
                yield Rejected(NAME, str(missing[0]), f"listed in {list_file.name}:{lineno} but missing")
                continue
            scene = key_part(gt.parent.parent.name)
            key = f"{NAME}/{variant}/{scene}/{key_part(gt.stem)}"
            if key in seen:  # a repeated line, or a pair in both splits' lists: the first listing is used
                yield Rejected(NAME, f"{list_file}:{lineno}", f"{gt_rel} listed again; the first listing is used "
                                                              f"({seen[key]})")
                continue
            seen[key] = f"{list_file.name}:{lineno}"
            listed.update((gt.resolve(), blur.resolve()))
            meta = {"f_number": None, "blur_type": "motion", "origin": [inside + blur_rel, inside + gt_rel]}
            yield Task(NAME, split, f"{variant}/{scene}", key, {"blur": str(blur), "sharp": str(gt)}, meta, {})
    yield from _unlisted(data, listed)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parent.parts))


def _unlisted(root: Path, listed: set[Path]) -> Iterator[Rejected]:
    """Reject lines for the images no list names: per scene folder of a `RealBlur-*` folder where none is
    listed, else per image; per other folder holding images, and per image lying in the root."""
    variants = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.startswith("RealBlur-")]
    yield from layout.unused_images(NAME, root, [d.name for d in variants], USES, depth=3)
    for scene in (s for d in variants for s in sorted(d.iterdir()) if s.is_dir() and not s.name.startswith(".")):
        images = _images_under(scene)
        unlisted = [p for p in images if p.resolve() not in listed]
        if unlisted and len(unlisted) == len(images):
            yield Rejected(NAME, str(scene), f"folder not used ({len(images)} images): in no RealBlur list")
        else:
            yield from (Rejected(NAME, str(p), HIDDEN_FILE if p.name.startswith(".") else
                                 "in no RealBlur_{J,R}_{train,test}_list.txt") for p in unlisted)


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the 8-bit pair as is."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED,
                       layout_problem=layout_problem, root_of=root_of)
