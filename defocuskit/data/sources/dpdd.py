"""DPDD (Abuolaim & Brown, ECCV 2020): `{train_c,val_c,test_c}/{source,target}/*.png`, 16-bit, f/4 vs f/22.

Source and target file names are consecutive Canon frame numbers (they differ), so pairs are formed by
sorted order within a split, never by name. The dual-pixel views (`*_l`, `*_r` folders or files) are
ignored. The images are aligned already (tripod, same session): no registration.

Layout: at least one split folder, and `source/` and `target/` in each one present, else the source
fails (LayoutError) before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import key_part, list_images, load_task, relpath
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout

NAME = "dpdd"
TITLE = "DPDD"
EXPECTED = "{train_c,val_c,test_c}/{source,target}/"
SPLITS = (("train_c", "train"), ("val_c", "val"), ("test_c", "test"))
F_NUMBER, REF_F_NUMBER = 4.0, 22.0  # DPDD paper: source f/4, target f/22
CAMERA = "Canon EOS 5D Mark IV"


def _dataset_root(root: Path) -> Path:
    """Accept the folder holding the split folders, or its parent `dd_dp_dataset_canon`."""
    if not any((root / d).is_dir() for d, _ in SPLITS) and (root / "dd_dp_dataset_png").is_dir():
        return root / "dd_dp_dataset_png"
    return root


def _centre_views(folder: Path) -> list[Path]:
    return [p for p in list_images(folder, {".png"}) if not p.stem.lower().endswith(("_l", "_r"))]


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being a DPDD folder, or None."""
    data = _dataset_root(Path(root))
    present = [d for d, _ in SPLITS if (data / d).is_dir()]
    if not present:
        return "no train_c/, val_c/ or test_c/ folder"
    for folder in present:
        if lacking := layout.missing(data / folder, ("source", "target")):
            return f"{folder}/ has no {' or '.join(lacking)}"
    return None


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per source/target image pair of every split folder present."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    data = _dataset_root(root)
    for folder, split in SPLITS:
        split_dir = data / folder
        if not split_dir.is_dir():
            continue
        sources, targets = _centre_views(split_dir / "source"), _centre_views(split_dir / "target")
        if len(sources) != len(targets):
            yield Rejected(NAME, str(split_dir),
                           f"{len(sources)} source vs {len(targets)} target images: cannot pair by sorted order")
            continue
        for blur, sharp in zip(sources, targets):
            scene = key_part(blur.stem)
            meta = {
                "f_number": F_NUMBER, "ref_f_number": REF_F_NUMBER, "camera": CAMERA,
                "blur_type": "defocus", "origin": [relpath(blur, root), relpath(sharp, root)],
            }
            yield Task(NAME, split, scene, f"{NAME}/{split}/{scene}",
                       {"blur": str(blur), "sharp": str(sharp)}, meta, {})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the 16-bit pair as is."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem)
