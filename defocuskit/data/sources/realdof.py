"""RealDOF (Lee et al., CVPR 2021): `{source,target}/*.png`, 50 pairs, paired by sorted order, test only.

Layout: `source/` and `target/` must exist, else the source fails (LayoutError) before any work. Hidden
files (`._1.png`, macOS AppleDouble) and subfolders holding images get reject lines and are not counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from defocuskit.data.pairs import key_part, load_task, relpath
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.pairs import folder_images

NAME = "realdof"
TITLE = "RealDOF"
EXPECTED = "source/ and target/"
EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
USES = "source/*.png, target/*.png"


def _images(folder: Path) -> tuple[list[Path], list[Rejected]]:
    """The images lying directly in `folder`, sorted by name, and reject lines for the hidden ones."""
    images, rejects = folder_images(NAME, folder, USES)
    return [p for p in images if p.suffix.lower() in EXTENSIONS], rejects


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being a RealDOF folder, or None."""
    lacking = layout.missing(Path(root), ("source", "target"))
    return f"no {' or '.join(lacking)}" if lacking else None


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One test pair per source/target image, in sorted order."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    (sources, rejects), (targets, more) = _images(root / "source"), _images(root / "target")
    yield from rejects + more
    if not sources and not targets:
        yield Rejected(NAME, str(root), "no source/ and target/ images found")
        return
    if len(sources) != len(targets):
        yield Rejected(NAME, str(root),
                       f"{len(sources)} source vs {len(targets)} target images: cannot pair by sorted order")
        return
    for blur, sharp in zip(sources, targets):
        scene = key_part(blur.stem)
        meta = {"blur_type": "defocus", "origin": [relpath(blur, root), relpath(sharp, root)]}
        yield Task(NAME, "test", scene, f"{NAME}/test/{scene}", {"blur": str(blur), "sharp": str(sharp)}, meta, {})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the (already aligned) pair."""
    return load_task(task, opts)


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED,
                       layout_problem=layout_problem)
