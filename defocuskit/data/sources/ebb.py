"""EBB! (Ignatov et al., AIM 2020 bokeh challenge): `{train,test}/{input,target}/NNNN.jpg`, Canon 7D, 50 mm.

`input` (f/16) is the sharp reference, `target` (f/1.8) the defocused shot. The pairs are NOT
pixel-aligned (shifts of about a dozen pixels, ~1 % scale): each is registered with ECC affine,
falling back to a feature homography, and gain-matched. An input without a target becomes a
sharp-only sample. depth/ and focal/ are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import images_by_stem, key_part, load_task, relpath
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task

NAME = "ebb"
F_NUMBER, REF_F_NUMBER = 1.8, 16.0
CAMERA, FOCAL_LENGTH_MM = "Canon 7D", 50.0
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per input/target pair (matched by name); unmatched inputs are sharp-only tasks."""
    root = Path(root)
    splits = [s for s in ("train", "test") if (root / s / "input").is_dir()]
    if not splits:
        yield Rejected(NAME, str(root), "no train/input or test/input folder found")
        return
    for split in splits:
        refs = images_by_stem(root / split / "input", EXTENSIONS)
        targets = images_by_stem(root / split / "target", EXTENSIONS)
        for stem in sorted(set(targets) - set(refs)):
            yield Rejected(NAME, str(targets[stem]), f"no f/16 reference {split}/input/{stem}.*")
        for stem, ref in refs.items():
            scene = key_part(stem)
            base = {"camera": CAMERA, "focal_length_mm": FOCAL_LENGTH_MM, "blur_type": "defocus",
                    "ref_f_number": REF_F_NUMBER}
            blur = targets.get(stem)
            if blur is None:
                yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}/f16", {"sharp": str(ref)},
                           {**base, "f_number": REF_F_NUMBER, "origin": [relpath(ref, root)]}, {})
                continue
            meta = {**base, "f_number": F_NUMBER, "origin": [relpath(blur, root), relpath(ref, root)]}
            options = {"register": opts.register, "motion": "affine", "fallback": "homography", "gain": True}
            yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}", {"blur": str(blur), "sharp": str(ref)},
                       meta, options)


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode, register the f/1.8 shot onto the f/16 reference and match its gain."""
    return load_task(task, opts)
