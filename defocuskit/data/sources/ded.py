"""DED (the light-field defocus estimation and deblurring set of DED-Net / DID-ANet): Lytro Illum, f/2.0.

Layout: `sharp/<prefix>_<n>.jpg` (the all-in-focus ground truth), `image/image_<n>.jpg` (the defocused
shot) and `filtered/defocus_filterd_<n>.png` (sic; a filtered defocus map, recorded in origin only, not
used as a CoC map), paired by the number <n>; scene subfolders, where present, are kept. No official
split: opts.split_by decides. Hidden files (`._sharp_1.jpg`, macOS AppleDouble) get reject lines and
take no number; of two files of one number in a folder (`image_01.jpg` beside `image_1.jpg`, `sharp_2.png`
beside `sharp_2.jpg`) the first by name is used and the other gets a reject line; so do images in another
format (`sharp_4.tif`) or with no number in the name, images in folders DED does not have and images lying in the root.

Layout: `sharp/` and `image/` must exist, else the source fails (LayoutError) before any work; a parent folder
holding exactly one such folder is read as that one, origins (relative to the folder given) then starting with its
name (a parent of several names them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import key_part, load_task, relpath, split_for
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.pairs import HIDDEN_FILE
from defocuskit.io.formats import IMAGE_EXTENSIONS

NAME = "ded"
TITLE = "DED"
EXPECTED = "sharp/, image/ and optionally filtered/"
F_NUMBER = 2.0  # Lytro Illum, fixed aperture
CAMERA = "Lytro Illum"
IMAGES = {".jpg", ".jpeg", ".png"}
FOLDERS = ("sharp", "image", "filtered")
USES = "sharp/, image/ (.jpg, .jpeg, .png) and filtered/ (.png)"
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _number(path: Path) -> str | None:
    match = _NUMBER.search(path.stem)
    return str(int(match.group(1))) if match else None


def _index(folder: Path, suffixes: set[str]) -> tuple[dict[tuple[str, str], Path], list[Rejected]]:
    """(scene subfolder, number) -> file, for every image under `folder` outside hidden folders (of two files
    of one number, the first by name); and reject lines for the other images there (hidden, another format, no
    number, the unused twin)."""
    found: dict[tuple[str, str], Path] = {}
    rejects: list[Rejected] = []
    if not folder.is_dir():
        return found, rejects
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parent.parts):
            continue  # inside a hidden folder: not searched
        if path.name.startswith("."):
            rejects.append(Rejected(NAME, str(path), HIDDEN_FILE))
        elif path.suffix.lower() not in suffixes:
            rejects.append(Rejected(NAME, str(path), f"a {path.suffix} file: DED reads {USES}"))
        elif (n := _number(path)) is None:
            rejects.append(Rejected(NAME, str(path), "no number in the name: DED pairs its files by the number"))
        elif (where := (path.parent.relative_to(folder).as_posix(), n)) in found:
            rejects.append(Rejected(NAME, str(path), f"another file of the same number is used: {found[where].name}"))
        else:
            found[where] = path
    return found, rejects


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being a DED folder (sharp/ and image/ in it), or None."""
    lacking = layout.missing(data, ("sharp", "image"))
    return f"no {' or '.join(lacking)}" if lacking else None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per sharp image that has a defocused image of the same number."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = root_of(root)
    yield from layout.unused_images(NAME, data, FOLDERS, USES, depth=2)
    (sharp, rejects), (image, more) = _index(data / "sharp", IMAGES), _index(data / "image", IMAGES)
    filtered, hidden_maps = _index(data / "filtered", {".png"})
    yield from rejects + more + hidden_maps
    if not sharp:
        yield Rejected(NAME, str(data / "sharp"), "no sharp images found")
        return
    for (sub, n), blur in sorted(image.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        if (sub, n) not in sharp:
            yield Rejected(NAME, str(blur), f"no sharp image numbered {n} under sharp/")
    for (sub, n), ref in sorted(sharp.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        blur = image.get((sub, n))
        if blur is None:
            yield Rejected(NAME, str(ref), f"no defocused image image/{sub + '/' if sub != '.' else ''}image_{n}.jpg")
            continue
        scene = key_part(n if sub == "." else f"{sub}/{n}")
        origin = [relpath(blur, root), relpath(ref, root)]
        if (sub, n) in filtered:
            origin.append(relpath(filtered[(sub, n)], root))
        meta = {"f_number": F_NUMBER, "camera": CAMERA, "blur_type": "defocus", "origin": origin}
        split = split_for(NAME, scene, opts)
        yield Task(NAME, split, scene, f"{NAME}/{scene}", {"blur": str(blur), "sharp": str(ref)}, meta, {})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the 8-bit pair (rendered from one light field: aligned)."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       root_of=root_of)
