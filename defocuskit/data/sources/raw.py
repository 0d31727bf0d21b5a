"""The user's own aperture brackets (--raw-dir): camera RAW files and JPEG/TIFF, one scene per folder.

Each folder is a scene (with opts.scene_gap_s, a folder's shots sorted by capture time are split into
scenes at larger gaps). The f-number comes from EXIF FNumber (LibRaw's metadata as a fallback); a shot
without one is rejected. Per scene, the shot with the largest f-number is the reference (ties: earliest,
then by name): it becomes a sharp-only sample, and every other shot a pair registered (opts.register)
and gain-matched onto it. Where a RAW file and a JPEG/TIFF share a stem, only the RAW file is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from defocuskit.data.pairs import key_part, load_task, relpath, split_for
from defocuskit.data.raw import read_exif
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task
from defocuskit.images import RAW_EXTENSIONS, ImageError, is_raw

NAME = "raw"
RASTER = {".jpg": 2, ".jpeg": 2, ".tif": 1, ".tiff": 1}  # preference when stems collide: RAW (0) first
SHOT_EXTENSIONS = RAW_EXTENSIONS | set(RASTER)
_SHOT_META = ("f_number", "exposure_s", "iso", "focal_length_mm", "camera", "lens", "focus_distance_m")


@dataclass(frozen=True)
class Shot:
    path: Path
    exif: dict[str, Any]

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.exif["datetime"] or datetime.max, self.path.name)


def _rank(path: Path) -> int:
    return 0 if is_raw(path) else RASTER[path.suffix.lower()]


def _folders(root: Path) -> dict[Path, list[Path]]:
    """Shot files per folder, one per stem (RAW preferred), sorted by name."""
    folders: dict[Path, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SHOT_EXTENSIONS or path.name.startswith("."):
            continue
        stems = folders.setdefault(path.parent, {})
        best = stems.get(path.stem)
        if best is None or (_rank(path), path.name) < (_rank(best), best.name):
            stems[path.stem] = path
    return {folder: sorted(stems.values()) for folder, stems in sorted(folders.items())}


def _scene_name(folder: Path, root: Path) -> str:
    rel = folder.relative_to(root).parts or (root.resolve().name,)
    return "/".join(key_part(part) for part in rel)


def _by_time_gaps(shots: list[Shot], gap_s: float) -> list[list[Shot]]:
    """Split shots sorted by capture time wherever consecutive shots are more than gap_s apart."""
    groups: list[list[Shot]] = []
    for shot in sorted(shots, key=lambda s: s.order):
        if groups and (shot.exif["datetime"] - groups[-1][-1].exif["datetime"]).total_seconds() <= gap_s:
            groups[-1].append(shot)
        else:
            groups.append([shot])
    return groups


def _read_shots(files: list[Path], opts: IngestOptions) -> Iterator[Shot | Rejected]:
    for path in files:
        try:
            exif = read_exif(path)
        except ImageError as exc:
            yield Rejected(NAME, str(path), f"unreadable file or EXIF header: {exc.reason}")
            continue
        if exif["f_number"] is None:
            yield Rejected(NAME, str(path), "f-number unknown: no EXIF FNumber")
        elif opts.scene_gap_s is not None and exif["datetime"] is None:
            yield Rejected(NAME, str(path), "capture time unknown: no EXIF DateTimeOriginal (needed by scene_gap_s)")
        else:
            yield Shot(path, exif)


def _scene_tasks(scene: str, shots: list[Shot], root: Path, opts: IngestOptions) -> Iterator[Task]:
    split = split_for(NAME, scene, opts)
    ref = min(shots, key=lambda s: (-s.exif["f_number"], *s.order))
    ref_f = ref.exif["f_number"]

    def meta(shot: Shot, origin: list[str]) -> dict[str, Any]:
        known = {k: shot.exif[k] for k in _SHOT_META}
        return {**known, "ref_f_number": ref_f, "blur_type": "defocus", "origin": origin}

    yield Task(NAME, split, scene, f"{NAME}/{scene}/{key_part(ref.path.stem)}", {"sharp": str(ref.path)},
               meta(ref, [relpath(ref.path, root)]), {})
    fallback = "homography" if opts.register == "ecc" else None
    options = {"register": opts.register, "motion": "affine", "fallback": fallback, "gain": True}
    for shot in sorted(shots, key=lambda s: s.path.name):
        if shot is ref:
            continue
        yield Task(NAME, split, scene, f"{NAME}/{scene}/{key_part(shot.path.stem)}",
                   {"blur": str(shot.path), "sharp": str(ref.path)},
                   meta(shot, [relpath(shot.path, root), relpath(ref.path, root)]), dict(options))


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """Per scene: the reference as a sharp-only task, then one pair task per other shot."""
    root = Path(root)
    folders = _folders(root)
    if not folders:
        yield Rejected(NAME, str(root), "no RAW, JPEG or TIFF files found")
        return
    for folder, files in folders.items():
        shots: list[Shot] = []
        for item in _read_shots(files, opts):
            if isinstance(item, Rejected):
                yield item
            else:
                shots.append(item)
        if not shots:
            continue
        scene = _scene_name(folder, root)
        groups = [shots] if opts.scene_gap_s is None else _by_time_gaps(shots, opts.scene_gap_s)
        for i, group in enumerate(groups):
            name = scene if len(groups) == 1 else f"{scene}/t{i:02d}"
            yield from _scene_tasks(name, group, root, opts)


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode (RAW -> 16-bit with RAW_SETTINGS, JPEG -> 8-bit); pairs are registered and gain-matched."""
    return load_task(task, opts)
