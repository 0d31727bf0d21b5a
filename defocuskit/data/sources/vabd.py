"""VABD (Chen et al., arXiv:2410.14400): `{train,test}/{input,8,2_8,1_8}/NNNN.JPG`, Canon EOS 70D, 50 mm.

`input` is the f/16 all-in-focus reference; the folder names give the defocused shots' f-numbers.
One pair per defocused aperture plus the reference as a sharp-only sample. The stacks are nearly
aligned (about 1 px of shift and the lens's focus breathing) and differ a little in exposure:
each pair is registered (opts.register, ECC affine by default) and gain-matched. depth/ and focal/
are ignored.

Layout: every split folder present needs `input/` and at least one aperture folder, else the source
fails (LayoutError) before any work; a parent folder holding exactly one such folder (a download folder
holding `VABD/`) is read as that one, origins (relative to the folder given) then starting with its name (a parent
of several names them). Images in a folder the adapter does not know (e.g. EBB's `target/`) or lying loose in a
split folder get reject lines; so do subfolders of input/ and the aperture folders holding images (`8/8/`) and
images in another format there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import (
    bracket_motion,
    images_by_stem,
    key_part,
    load_task,
    relpath,
)
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout

NAME = "vabd"
TITLE = "VABD"
SPLITS = ("train", "test")
REF_FOLDER, REF_F_NUMBER = "input", 16.0
APERTURES = {"8": 8.0, "2_8": 2.8, "1_8": 1.8}
IGNORED = ("depth", "focal")
EXPECTED = "{train,test}/{input,8,2_8,1_8}/"
USES = "input/, 8/, 2_8/, 1_8/ (depth/, focal/ ignored)"
CAMERA, FOCAL_LENGTH_MM = "Canon EOS 70D", 50.0
# the EOS 70D's APS-C sensor (22.5 x 15.0 mm): its long side, a portrait's 22.5 x its width / height (load_task);
# the JPEGs carry no EXIF
SENSOR_WIDTH_MM = 22.5
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being a VABD folder (its split folders in it), or None."""
    present = [s for s in SPLITS if (data / s).is_dir()]
    if not present:
        return "no train/ or test/ folder"
    for split in present:
        if not (data / split / REF_FOLDER).is_dir():
            return f"{split}/ has no {REF_FOLDER}/ (the f/16 references)"
        if not any((data / split / folder).is_dir() for folder in APERTURES):
            return f"{split}/ has none of 8/, 2_8/, 1_8/ (the defocused shots)"
    return None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """Per scene: the f/16 reference as a sharp-only task, then one pair task per defocused aperture."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = root_of(root)
    yield from layout.unused_images(NAME, data, SPLITS, "train/, test/", depth=2)
    for split in (s for s in SPLITS if (data / s).is_dir()):
        yield from layout.unused_images(NAME, data / split, (REF_FOLDER, *APERTURES, *IGNORED), USES)
        refs, twins = images_by_stem(data / split / REF_FOLDER, EXTENSIONS, NAME)
        yield from twins
        yield from layout.unread_images(NAME, data / split / REF_FOLDER, EXTENSIONS, USES)
        shots = {}
        for folder in APERTURES:
            shots[folder], twins = images_by_stem(data / split / folder, EXTENSIONS, NAME)
            yield from twins
            yield from layout.unread_images(NAME, data / split / folder, EXTENSIONS, USES)
        for folder, files in shots.items():
            for stem in sorted(set(files) - set(refs)):
                yield Rejected(NAME, str(files[stem]), f"no f/16 reference {split}/{REF_FOLDER}/{stem}.*")
        for stem, ref in refs.items():
            yield from _scene_tasks(root, split, stem, ref, shots, opts)


def _scene_tasks(root: Path, split: str, stem: str, ref: Path, shots: dict[str, dict[str, Path]],
                 opts: IngestOptions) -> Iterator[Task]:
    scene = key_part(stem)
    base = {"camera": CAMERA, "focal_length_mm": FOCAL_LENGTH_MM, "sensor_width_mm": SENSOR_WIDTH_MM,
            "blur_type": "defocus",
            "ref_f_number": REF_F_NUMBER}
    yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}/f16", {"sharp": str(ref)},
               {**base, "f_number": REF_F_NUMBER, "origin": [relpath(ref, root)]}, {})
    for folder, f_number in APERTURES.items():
        blur = shots[folder].get(stem)
        if blur is None:
            continue
        meta = {**base, "f_number": f_number, "origin": [relpath(blur, root), relpath(ref, root)]}
        options = {"register": opts.register, "motion": bracket_motion(opts), "gain": True}
        yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}/f{folder}",
                   {"blur": str(blur), "sharp": str(ref)}, meta, options)


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode; pairs are registered onto the reference and gain-matched."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       root_of=root_of)
