"""The user's own aperture brackets (--raw-dir): camera RAW files and PNG/JPEG/TIFF, one scene per folder.

Each folder is a scene (with opts.scene_gap_s, a folder's shots sorted by capture time are split into
scenes at larger gaps; where capture times run against the file numbers, a clock reset, it raises
IngestError rather than guess). The f-number of a shot comes from, in this order: a row of opts.f_number_csv
(overrides EXIF), EXIF FNumber (LibRaw's metadata as a fallback for RAW files), opts.f_number_pattern
matched against the file name; a shot with none is rejected. Per scene, the shot with the largest
f-number is the reference (ties: earliest, then by name): it becomes a sharp-only sample, and every
shot at a smaller f-number a pair registered (opts.register) and gain-matched onto it. A scene needs
two f-numbers: a single shot, or shots that all share one f-number, are rejected (none of them is an
all-in-focus reference), as are further shots at the reference's f-number. The reference must be
readable: a PNG/JPEG/TIFF one is decoded once while listing (a RAW file was opened by LibRaw already,
`read_exif`), and one that cannot be (truncated, corrupt) gets one reject line saying why, the next shot
in that order serving instead under the same rules (it needs a shot at a smaller f-number), so a damaged
reference loses one file, not its scene.

Where a RAW file and a TIFF/PNG/JPEG share a stem, only the RAW file is used (then TIFF, PNG, JPEG).
Every image file that is not used gets a reject line with the reason: unreadable files and folders
(permissions), hidden files, image formats the source cannot decode (HEIC, AVIF, ...), the unused twin
of a shot. Files that are not images (.xmp/.txt sidecars, videos) and hidden folders' contents are
ignored without one (a hidden folder itself gets one line).

Keys are `raw/<scene>/<stem>`: a folder or file name that is not already a safe key component (it
holds dots or white space) is written in its safe form plus '-' and six hex digits of the SHA-256 of the
(NFC-normalised) original name, so `a b.JPG`, `a_b.JPG` and `a.b.jpeg` stay three samples, with the
same keys on every run and machine. The root's own shots are the scene named after the root, and a folder split
by opts.scene_gap_s has the scenes `<folder>/t00`, `t01`, ...: where a subfolder's scene already has such a
name (`photos/photos/`, `x/t00/`), the made-up one gets '-' and a short hash, so two scenes never share keys.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from defocuskit.data.pairs import (
    bracket_motion,
    key_part,
    load_task,
    relpath,
    split_for,
)
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, RejectError, Sample, Task
from defocuskit.data.sources import DatasetSource
from defocuskit.data.sources.counters import camera_counter, counter_order
from defocuskit.data.sources.fnumbers import (
    GivenFNumbers,
    given_f_numbers,
    resolve_f_number,
)
from defocuskit.io.formats import RASTER_EXTENSIONS, RAW_EXTENSIONS, ImageError, is_raw
from defocuskit.io.images import check_image
from defocuskit.io.raw import check_readable, decode_option, io_reason, read_exif, settings_record

NAME = "raw"
# preference when stems collide: RAW (0) first, then lossless, then JPEG
RASTER = {".tif": 1, ".tiff": 1, ".png": 2, ".jpg": 3, ".jpeg": 3, ".webp": 4, ".bmp": 4}
SHOT_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS
# photo formats the sources cannot decode: rejected by name rather than ignored (a GIF: 256 colours, often animated)
UNSUPPORTED_EXTENSIONS = {".heic", ".heif", ".hif", ".avif", ".jxl", ".jp2", ".j2k", ".gif"}
_SHOT_META = ("f_number", "exposure_s", "iso", "focal_length_mm", "sensor_width_mm", "camera", "lens",
              "focus_distance_m")


@dataclass(frozen=True)
class Shot:
    path: Path
    exif: dict[str, Any]

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.exif["datetime"] or datetime.max, self.path.name)

    @property
    def f_number(self) -> float:
        return self.exif["f_number"]


# ------------------------------------------------------------------------------------------ keys


def safe_name(name: str) -> str:
    """`name` as a key component (`pairs.key_part`: itself when safe, else its safe form and a short hash)."""
    return key_part(name)


def _free(part: str, taken: set[str]) -> str:
    """A made-up scene name component (the root's name, a time group's `t00`), or where a subfolder's scene
    already has it (`taken`), that name with '-' and a short hash, until it is free."""
    while part in taken:
        part = f"{part}-{hashlib.sha256(part.encode()).hexdigest()[:6]}"
    return part


def _scene_name(folder: Path, root: Path, taken: set[str]) -> str:
    rel = folder.relative_to(root).parts
    if not rel:  # the root's own shots: named after it as given ('.' made absolute; a link is not followed to its
        return _free(safe_name(Path(os.path.abspath(root)).name), taken)  # target's name), unless a subfolder has it
    return "/".join(safe_name(part) for part in rel)


def _key(scene: str, shot: Shot) -> str:
    return f"{NAME}/{scene}/{safe_name(shot.path.stem)}"


# ---------------------------------------------------------------------------------------- listing


def _reject(path: Path, reason: str) -> Rejected:
    return Rejected(NAME, str(path), reason)


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _classify(entry: os.DirEntry) -> tuple[str, Rejected | None]:
    """("dir" | "file" | "skip", a reject line for an image file that is not used)."""
    path = Path(entry.path)
    suffix = path.suffix.lower()
    image = suffix in SHOT_EXTENSIONS or suffix in UNSUPPORTED_EXTENSIONS
    try:
        is_dir = entry.is_dir()
        is_file = not is_dir and entry.is_file()
    except OSError as exc:
        return "skip", _reject(path, f"cannot read: {io_reason(exc)}")
    if entry.name.startswith("."):
        if is_dir:
            return "skip", _reject(path, "hidden folder (name starts with '.'): not searched")
        return "skip", _reject(path, "hidden file (name starts with '.'): not used") if image else None
    if is_dir:
        return "dir", None
    if not image:
        return "skip", None  # sidecars (.xmp, .txt), videos and the like: not photos
    if not is_file:
        return "skip", _reject(path, "not a regular file (a broken link?)")
    if suffix in UNSUPPORTED_EXTENSIONS:
        return "skip", _reject(path, f"unsupported image format ({suffix}): convert it to TIFF, PNG or JPEG")
    return "file", None


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[tuple[Path, list[Path], set[str]] | Rejected]:
    """Depth first, sorted by name: each folder with its shot files and its subfolders' scene name components,
    and reject lines for what is skipped."""
    try:
        st = folder.stat()
        entries = _entries(folder)
    except OSError as exc:
        yield _reject(folder, f"cannot list folder: {io_reason(exc)}")
        return
    if (st.st_dev, st.st_ino) in seen:  # a link back to a folder already searched
        return
    seen.add((st.st_dev, st.st_ino))
    files, subfolders = [], []
    for entry in entries:
        kind, rejected = _classify(entry)
        if rejected is not None:
            yield rejected
        if kind == "file":
            files.append(Path(entry.path))
        elif kind == "dir":
            subfolders.append(Path(entry.path))
    if files:
        yield folder, files, {safe_name(sub.name) for sub in subfolders}
    for sub in subfolders:
        yield from _walk(sub, seen)


def _rank(path: Path) -> tuple[int, str]:
    return (0 if is_raw(path) else RASTER.get(path.suffix.lower(), 5), path.name)


def shot_stem(path: Path) -> str:
    """The shot a file holds, by its name: its stem with case folded, and an export's second extension dropped
    (`IMG_2.CR2`, `img_2.jpg` and `IMG_2.CR2.jpg` are one shot)."""
    stem = path.stem
    if Path(stem).suffix.lower() in SHOT_EXTENSIONS:
        stem = Path(stem).stem
    return stem.casefold()


def _one_per_stem(files: list[Path]) -> tuple[list[Path], list[Rejected]]:
    """One file per shot (`shot_stem`: RAW, then TIFF, PNG, JPEG), sorted by name; the others as reject lines."""
    stems: dict[str, list[Path]] = {}
    for path in files:
        stems.setdefault(shot_stem(path), []).append(path)
    used, rejects = [], []
    for twins in stems.values():
        best, *rest = sorted(twins, key=_rank)
        used.append(best)
        rejects += [_reject(p, f"another file of the same shot is used: {best.name}") for p in rest]
    return sorted(used), rejects


def _read_shots(files: list[Path], root: Path, opts: IngestOptions,
                given: GivenFNumbers) -> Iterator[Shot | Rejected]:
    for path in files:
        try:
            exif = read_exif(path)
        except ImageError as exc:
            yield _reject(path, f"unreadable file or EXIF header: {exc.reason}")
            continue
        except OSError as exc:
            yield _reject(path, f"unreadable file: {io_reason(exc)}")
            continue
        reason = resolve_f_number(path, exif, root, given)
        if reason is not None:
            yield _reject(path, reason)
        elif opts.scene_gap_s is not None and exif["datetime"] is None:
            yield _reject(path, "capture time unknown: no EXIF DateTimeOriginal (needed by scene_gap_s)")
        else:
            yield Shot(path, exif)


def _by_time_gaps(shots: list[Shot], gap_s: float) -> list[list[Shot]]:
    """Split shots sorted by capture time wherever consecutive shots are more than gap_s apart."""
    groups: list[list[Shot]] = []
    for shot in sorted(shots, key=lambda s: s.order):
        if groups and (shot.exif["datetime"] - groups[-1][-1].exif["datetime"]).total_seconds() <= gap_s:
            groups[-1].append(shot)
        else:
            groups.append([shot])
    return groups


def check_time_order(folder: Path, shots: list[Shot]) -> None:
    """IngestError naming two files when capture times run against the file numbers (same prefix, in the order the
    camera numbered them: `counters.counter_order`, across the counter's wrap from 9999 to 0001): a camera clock
    reset (or a second camera) between shots, so capture-time gaps cannot tell the scenes apart."""
    numbered: dict[str, list[tuple[str, Shot]]] = {}
    for shot in sorted(shots, key=lambda s: s.path.name):  # equal counters (IMG_2, img_02) in name order
        if counter := camera_counter(shot_stem(shot.path)):
            numbered.setdefault(counter[0], []).append((counter[1], shot))
    for run in numbered.values():
        latest: Shot | None = None  # the latest-taken shot among those numbered before
        for shot in counter_order(run):  # a counter's wrap (9999 -> 0001) is no clock reset
            if latest is not None and shot.exif["datetime"] < latest.exif["datetime"]:
                raise IngestError(
                    f"--scene-gap: {shot.path} (taken {shot.exif['datetime']}) is numbered after {latest.path.name} "
                    f"(taken {latest.exif['datetime']}) but was taken before it (a camera clock reset?), so capture "
                    f"times cannot tell the scenes of {folder.name or folder} apart: put each scene in its own "
                    "subfolder, or drop --scene-gap")
            if latest is None or shot.exif["datetime"] > latest.exif["datetime"]:
                latest = shot


def _scene_rejects(scene: str, shots: list[Shot]) -> list[Rejected] | None:
    """Reject lines for every shot of a scene that has no reference to pair with, else None."""
    if len(shots) == 1:
        return [_reject(shots[0].path, f"scene {scene!r} has one usable shot: no pair to make")]
    f_numbers = {s.f_number for s in shots}
    if len(f_numbers) == 1:
        reason = f"no reference: all {len(shots)} shots of scene {scene!r} at f/{shots[0].f_number:g}"
        return [_reject(s.path, reason) for s in sorted(shots, key=lambda s: s.path.name)]
    return None


def _unreadable(shot: Shot) -> str | None:
    """Why the image of `shot` cannot be read (truncated, corrupt), else None. A RAW file is not decoded again:
    LibRaw opened it when its EXIF was read (`read_exif`), as `check_image` does, and opening checks that the
    raw data lies within the file (a DNG cut short fails there, uncompressed or lossless-JPEG)."""
    if is_raw(shot.path):
        return None
    try:
        check_image(shot.path)
    except ImageError as exc:
        return exc.reason
    return None


def _reference(shots: list[Shot]) -> tuple[Shot | None, list[tuple[Shot, str]]]:
    """The reference of a scene of two or more f-numbers: its first readable shot by largest f-number (ties:
    earliest, then by name) among those with a shot at a smaller f-number, or None; and the shots passed over,
    each with why it cannot be read."""
    widest = min(s.f_number for s in shots)
    passed: list[tuple[Shot, str]] = []
    for shot in sorted(shots, key=lambda s: (-s.f_number, *s.order)):
        if shot.f_number == widest:
            break
        reason = _unreadable(shot)
        if reason is None:
            return shot, passed
        passed.append((shot, reason))
    return None, passed


def _unreadable_rejects(scene: str, ref: Shot | None, passed: list[tuple[Shot, str]],
                        shots: list[Shot]) -> list[Rejected]:
    """One reject line per shot passed over as the reference (naming what serves instead), and where none
    serves, one per remaining shot of the scene saying so."""
    if ref is not None:
        instead = f"{ref.path.name} (f/{ref.f_number:g}) is the reference instead"
        return [_reject(s.path, f"{why}: cannot be the reference of scene {scene!r}; {instead}") for s, why in passed]
    narrower = f"no shot of scene {scene!r} narrower than f/{min(s.f_number for s in shots):g} can be read"
    names = ", ".join(s.path.name for s, _ in passed)
    left = sorted((s for s in shots if all(s is not p for p, _ in passed)), key=lambda s: s.path.name)
    return ([_reject(s.path, f"{why}: cannot be the reference, and {narrower}") for s, why in passed]
            + [_reject(s.path, f"no reference: {narrower} ({names})") for s in left])


def _scene_tasks(scene: str, shots: list[Shot], root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    rejects = _scene_rejects(scene, shots)
    if rejects is not None:
        yield from rejects
        return
    ref, passed = _reference(shots)
    yield from _unreadable_rejects(scene, ref, passed, shots)
    if ref is None:
        return
    split = split_for(NAME, scene, opts)
    ref_f = ref.f_number

    def meta(shot: Shot, origin: list[str]) -> dict[str, Any]:
        known = {k: shot.exif[k] for k in _SHOT_META}
        return {**known, "ref_f_number": ref_f, "blur_type": "defocus", "origin": origin}

    yield Task(NAME, split, scene, _key(scene, ref), {"sharp": str(ref.path)},
               meta(ref, [relpath(ref.path, root)]), decode_option([ref.path]))
    fallback = "homography" if opts.register == "ecc" else None
    options = {"register": opts.register, "motion": bracket_motion(opts), "fallback": fallback, "gain": True}
    for shot in sorted(shots, key=lambda s: s.path.name):
        if shot is ref or any(shot is p for p, _ in passed):
            continue
        if shot.f_number == ref_f:
            reason = f"same f-number as the reference {ref.path.name} (f/{ref_f:g}): not a defocus pair"
            yield _reject(shot.path, reason)
            continue
        yield Task(NAME, split, scene, _key(scene, shot), {"blur": str(shot.path), "sharp": str(ref.path)},
                   meta(shot, [relpath(shot.path, root), relpath(ref.path, root)]),
                   {**options, **decode_option([shot.path, ref.path])})


def _folder_items(folder: Path, files: list[Path], taken: set[str], root: Path, opts: IngestOptions,
                  given: GivenFNumbers) -> Iterator[Task | Rejected]:
    """One folder's reject lines and tasks (one scene, or several with opts.scene_gap_s)."""
    used, twins = _one_per_stem(files)
    yield from twins
    shots: list[Shot] = []
    for item in _read_shots(used, root, opts, given):
        if isinstance(item, Rejected):
            yield item
        else:
            shots.append(item)
    if not shots:
        return
    scene = _scene_name(folder, root, taken)
    if opts.scene_gap_s is not None:
        check_time_order(folder, shots)
    groups = [shots] if opts.scene_gap_s is None else _by_time_gaps(shots, opts.scene_gap_s)
    for i, group in enumerate(groups):
        name = scene if len(groups) == 1 else f"{scene}/{_free(f't{i:02d}', taken)}"
        yield from _scene_tasks(name, group, root, opts)


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """Per scene: the reference as a sharp-only task, then one pair task per other shot; reject lines
    for every image file not used. Raises IngestError for a bad f-number CSV or pattern, and with
    opts.scene_gap_s for capture times that run against the file numbers (`check_time_order`)."""
    root = Path(root)
    given = given_f_numbers(root, opts)
    found = False
    for item in _walk(root, set()):
        if isinstance(item, Rejected):
            yield item
            continue
        found = True
        yield from _folder_items(*item, root, opts, given)
    if not found:
        yield _reject(root, "no RAW, TIFF, PNG or JPEG files found")


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode (RAW -> 16-bit with io.raw.raw_settings, JPEG -> 8-bit); pairs are registered and gain-matched.
    A file that cannot be read (permissions) raises RejectError naming it."""
    for path in task.files.values():
        try:
            check_readable(path)
        except ImageError as exc:
            raise RejectError(exc.path, exc.reason) from None
    return load_task(task, opts)


def manifest_options(tasks: list[Task]) -> dict[str, Any]:
    """manifest.json's options entry: the LibRaw settings the RAW files were decoded with, by kind."""
    record = settings_record([p for t in tasks for p in t.files.values()])
    return {"raw_decode": record} if record else {}


SOURCE = DatasetSource(NAME, list_tasks, load, manifest_options=manifest_options)
