"""EBB! (Ignatov et al., AIM 2020 bokeh challenge): `{train,test}/{input,target}/NNNN.jpg`, Canon 7D, 50 mm.

`input` (f/16) is the sharp reference, `target` (f/1.8) the defocused shot. The pairs are NOT
pixel-aligned (shifts of about a dozen pixels, ~1 % scale): each is registered with ECC affine,
falling back to a feature homography, and gain-matched. An input without a target becomes a
sharp-only sample. depth/ and focal/ are ignored.

Layout: every split folder present needs `input/` and `target/`, else the source fails (LayoutError)
before any work; a parent folder holding exactly one such folder (a download folder holding `EBB/`) is read as
that one, origins (relative to the folder given) then starting with its name (a parent of several names them).
Images in a folder the adapter does not know (e.g. VABD's `8/`) or lying loose in a split folder get reject lines;
so do subfolders of input/ and target/ holding images (`target/target/`) and images in another format there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import images_by_stem, key_part, load_task, relpath
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout

NAME = "ebb"
TITLE = "EBB"
SPLITS = ("train", "test")
FOLDERS = ("input", "target")
IGNORED = ("depth", "focal")
EXPECTED = "{train,test}/{input,target}/"
USES = "input/, target/ (depth/, focal/ ignored)"
F_NUMBER, REF_F_NUMBER = 1.8, 16.0
CAMERA, FOCAL_LENGTH_MM = "Canon 7D", 50.0
# the EOS 7D's APS-C sensor (22.3 x 14.9 mm): its long side, a portrait's 22.3 x its width / height (load_task)
SENSOR_WIDTH_MM = 22.3
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being an EBB folder (its split folders in it), or None."""
    present = [s for s in SPLITS if (data / s).is_dir()]
    if not present:
        return "no train/ or test/ folder"
    for split in present:
        if lacking := layout.missing(data / split, FOLDERS):
            return f"{split}/ has no {' or '.join(lacking)}"
    return None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per input/target pair (matched by name); unmatched inputs are sharp-only tasks."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = root_of(root)
    yield from layout.unused_images(NAME, data, SPLITS, "train/, test/", depth=2)
    for split in (s for s in SPLITS if (data / s).is_dir()):
        yield from layout.unused_images(NAME, data / split, (*FOLDERS, *IGNORED), USES)
        refs, twins = images_by_stem(data / split / "input", EXTENSIONS, NAME)
        targets, target_twins = images_by_stem(data / split / "target", EXTENSIONS, NAME)
        yield from twins + target_twins
        for folder in FOLDERS:
            yield from layout.unread_images(NAME, data / split / folder, EXTENSIONS, USES)
        for stem in sorted(set(targets) - set(refs)):
            yield Rejected(NAME, str(targets[stem]), f"no f/16 reference {split}/input/{stem}.*")
        for stem, ref in refs.items():
            yield _task(root, split, stem, ref, targets.get(stem), opts)


def _task(root: Path, split: str, stem: str, ref: Path, blur: Path | None, opts: IngestOptions) -> Task:
    scene = key_part(stem)
    base = {"camera": CAMERA, "focal_length_mm": FOCAL_LENGTH_MM, "sensor_width_mm": SENSOR_WIDTH_MM,
            "blur_type": "defocus",
            "ref_f_number": REF_F_NUMBER}
    if blur is None:
        return Task(NAME, split, scene, f"{NAME}/{split}/{scene}/f16", {"sharp": str(ref)},
                    {**base, "f_number": REF_F_NUMBER, "origin": [relpath(ref, root)]}, {})
    meta = {**base, "f_number": F_NUMBER, "origin": [relpath(blur, root), relpath(ref, root)]}
    options = {"register": opts.register, "motion": "affine", "fallback": "homography", "gain": True}
    return Task(NAME, split, scene, f"{NAME}/{split}/{scene}", {"blur": str(blur), "sharp": str(ref)}, meta, options)


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode, register the f/1.8 shot onto the f/16 reference and match its gain."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       root_of=root_of)
