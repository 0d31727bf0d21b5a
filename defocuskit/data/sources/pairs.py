"""Your own blur/sharp pairs (--pairs DIR): `DIR/{blur,sharp}/`, or `DIR/{train,test}/{blur,sharp}/`.

For pairs shot apart (hand-held, refocused, swapped lenses) that are NOT pixel-aligned. `blur/` holds the
defocused shots, `sharp/` the all-in-focus references. With `train/` and `test/` folders those are the
splits; with `blur/` and `sharp/` directly in DIR, opts.split_by decides (`pairs.split_for`: a seeded
hash of the pair's name, or everything in one split).

Pairing, per folder pair (recorded in each sample's metadata as `pairing`):
  - "stem": when every file stem of `blur/` is a file stem of `sharp/` and the other way round
    (`blur/IMG_1.jpg` with `sharp/IMG_1.png`);
  - "order": else, when both folders hold the same number of images and neither folder's stems are all
    stems of the other (names that differ, `IMG_1.jpg` with `DSC_7.jpg`): the n-th file of `blur/` with the
    n-th of `sharp/`, both sorted by name with runs of digits compared as numbers (`pairs.name_order`: `9.png`,
    `10.png` with `9_gt.png`, `10_gt.png`; plain name order lined up `10.png` with `10_gt.png` only by chance), or,
    where every name is one camera's counter, round the counter's wrap (`counters.paired_order`: `IMG_9999` and
    its reference `IMG_0001` stay a pair, and come before `IMG_0002`);
  - else "stem" for the stems the two folders share; every other image gets a reject line.
A file stem held twice in one folder (`a.jpg`, `a.png`) cannot be paired by stem: both get a reject line (sorted
order would have shifted every later pair by one).

f-numbers (`f_number` of the blurred shot, `ref_f_number` of the reference) come, as for --raw-dir, from a
row of opts.f_number_csv (files relative to DIR), else EXIF FNumber, else opts.f_number_pattern on the
file name, else null (allowed: eval groups it as "none"). Exposure, ISO, focal length, camera and lens
of the blurred shot come from its EXIF where present.

Each pair is registered per opts.register (default ECC affine with a feature-homography fallback, as
EBB) and gain-matched; `--register none` keeps it as shot (no warp, no gain). Keys: `pairs/<name>`, or
`pairs/<split>/<name>` with explicit splits; `<name>` is the blurred file's stem in its safe form.

Layout: `blur/` and `sharp/` in DIR, or in each of `train/`, `test/` present, else the source fails
(LayoutError) before any work. Every image not used gets a reject line: unpaired files, images in
other folders or in subfolders of `blur/` and `sharp/`, hidden files, HEIC/AVIF/JPEG XL/GIF.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from defocuskit.data.pairs import (
    AS_SHOT,
    HIDDEN_FILE,
    REGISTER_CHOICES,
    load_task,
    relpath,
    split_for,
)
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.counters import paired_order
from defocuskit.data.sources.fnumbers import (
    GivenFNumbers,
    given_f_numbers,
    implausible,
    parse_f_number,
)
from defocuskit.data.sources.raw import UNSUPPORTED_EXTENSIONS, manifest_options, safe_name
from defocuskit.io.formats import IMAGE_EXTENSIONS, ImageError
from defocuskit.io.raw import decode_option, io_reason, read_exif

NAME = "pairs"
TITLE = "blur/sharp pairs"
SPLITS = ("train", "test")
FOLDERS = ("blur", "sharp")
EXPECTED = "{blur,sharp}/ or {train,test}/{blur,sharp}/"
USES = "blur/, sharp/"
_SHOT_META = ("exposure_s", "iso", "focal_length_mm", "sensor_width_mm", "camera", "lens", "focus_distance_m")


@dataclass
class Pairing:
    """How two folders' images pair up: (blur, sharp) pairs, the rule used, and the images left over."""

    pairs: list[tuple[Path, Path]]
    mode: str  # "stem" or "order"
    rejects: list[tuple[Path, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ layout


def _split_folders(root: Path) -> list[str]:
    return [s for s in SPLITS if (root / s).is_dir()]


def _flat(root: Path) -> bool:
    """True when DIR holds blur/ or sharp/ itself (no explicit splits)."""
    return any((root / f).is_dir() for f in FOLDERS)


def layout_problem(root: Path) -> str | None:
    """What keeps `root` from being a folder of blur/sharp pairs, or None."""
    root = Path(root)
    splits = _split_folders(root)
    if _flat(root):
        if splits:
            return f"both blur/, sharp/ and {', '.join(s + '/' for s in splits)}: use one of the two layouts"
        lacking = layout.missing(root, FOLDERS)
        return f"no {' or '.join(lacking)}" if lacking else None
    if not splits:
        return "no blur/ and sharp/ folders (nor train/ or test/ holding them)"
    for split in splits:
        if lacking := layout.missing(root / split, FOLDERS):
            return f"{split}/ has no {' or '.join(lacking)}"
    return None


# ------------------------------------------------------------------------------------------- files


def folder_images(source: str, folder: Path, uses: str) -> tuple[list[Path], list[Rejected]]:
    """The images lying directly in `folder`, sorted by name, and reject lines for the images there that
    cannot be used (hidden, unsupported format) and for subfolders holding images."""
    try:
        files = sorted(p for p in folder.iterdir() if not p.is_dir())
    except OSError as exc:
        return [], [Rejected(source, str(folder), f"cannot list folder: {io_reason(exc)}")]
    images, rejects = [], list(layout.nested_images(source, folder, uses))
    for path in files:
        suffix = path.suffix.lower()
        if suffix in UNSUPPORTED_EXTENSIONS:
            rejects.append(Rejected(source, str(path), f"unsupported image format ({suffix}): "
                                                       "convert it to TIFF, PNG or JPEG"))
        elif suffix not in IMAGE_EXTENSIONS:
            continue  # sidecars, notes: not images
        elif path.name.startswith("."):
            rejects.append(Rejected(source, str(path), HIDDEN_FILE))
        else:
            images.append(path)
    return images, rejects


def pair_files(blurs: list[Path], sharps: list[Path]) -> Pairing:
    """Pair two folders' images: by file stem when the stems match one to one or one folder's stems are all in
    the other, else by sorted order (`paired_order`) when the counts match, else by the stems they share (the rest
    left over with the reason)."""
    blur_stems, sharp_stems = Counter(p.stem for p in blurs), Counter(p.stem for p in sharps)
    unique = max(blur_stems.values(), default=1) == 1 and max(sharp_stems.values(), default=1) == 1
    if unique and set(blur_stems) == set(sharp_stems):
        by_stem = {p.stem: p for p in sharps}
        return Pairing([(b, by_stem[b.stem]) for b in sorted(blurs)], "stem")
    named_alike = bool(blur_stems) and bool(sharp_stems) and (set(blur_stems) <= set(sharp_stems)
                                                               or set(sharp_stems) <= set(blur_stems))
    if len(blurs) == len(sharps) and not named_alike:
        return Pairing(list(zip(*paired_order([blurs, sharps]))), "order")  # across a camera counter's wrap
    return _pair_shared_stems(blurs, sharps, blur_stems, sharp_stems, named_alike)


def _pair_shared_stems(blurs: list[Path], sharps: list[Path], blur_stems: Counter, sharp_stems: Counter,
                       named_alike: bool) -> Pairing:
    why = (f"blur/ and sharp/ hold different numbers of images ({len(blurs)} vs {len(sharps)}), "
           "so they are paired by file stem" if len(blurs) != len(sharps) or not named_alike else
           "one folder's file stems are all in the other, so they are paired by file stem")
    pairing = Pairing([], "stem")
    sharp_of = {p.stem: p for p in sharps}
    for path in sorted(blurs):
        reason = _unpaired(path, blur_stems, sharp_stems, "sharp", why)
        if reason is None:
            pairing.pairs.append((path, sharp_of[path.stem]))
        else:
            pairing.rejects.append((path, reason))
    for path in sorted(sharps):
        if (reason := _unpaired(path, sharp_stems, blur_stems, "blur", why)) is not None:
            pairing.rejects.append((path, reason))
    return pairing


def _unpaired(path: Path, own: Counter, other: Counter, other_folder: str, why: str) -> str | None:
    """Why `path` has no partner of the same stem in the other folder, or None when it has exactly one."""
    if own[path.stem] > 1 or other[path.stem] > 1:
        return f"the file stem {path.stem!r} is held by more than one image: cannot tell which pairs ({why})"
    if path.stem not in other:
        return f"no {other_folder}/{path.stem}.* ({why})"
    return None


def pair_names(paths: list[Path]) -> dict[Path, str]:
    """Key components of the given files: the safe form of the stem, of the whole name where stems repeat."""
    stems = Counter(p.stem for p in paths)
    return {p: safe_name(p.stem if stems[p.stem] == 1 else p.name) for p in paths}


# --------------------------------------------------------------------------------------- metadata


def f_number_of(path: Path, exif: dict[str, Any], root: Path, given: GivenFNumbers) -> float | None:
    """The f-number of a shot: its row of the f-number CSV, else EXIF, else the name pattern, else None.
    Raises ImageError naming the file for an implausible EXIF or pattern value (`fnumbers.implausible`)."""
    listed = given.table.get(relpath(path, root))
    if listed is not None:
        return listed
    if exif.get("f_number") is not None:
        if reason := implausible(float(exif["f_number"]), "EXIF"):
            raise ImageError(path, reason)
        return exif["f_number"]
    match = given.pattern.search(path.name) if given.pattern is not None else None
    value = parse_f_number(match.group(1)) if match and match.group(1) is not None else None
    if value is not None and (reason := implausible(value, f"--f-number-pattern ({match.group(1)!r})")):
        raise ImageError(path, reason)
    return value


def shot_meta(blur: Path, sharp: Path, root: Path, given: GivenFNumbers) -> dict[str, Any]:
    """The listed metadata of a pair: f-numbers, the blurred shot's EXIF, blur_type and origin.
    Raises ImageError for a file whose header cannot be read."""
    blur_exif, sharp_exif = read_exif(blur), read_exif(sharp)
    return {
        **{k: blur_exif.get(k) for k in _SHOT_META},
        "f_number": f_number_of(blur, blur_exif, root, given),
        "ref_f_number": f_number_of(sharp, sharp_exif, root, given),
        "blur_type": "defocus", "origin": [relpath(blur, root), relpath(sharp, root)],
    }


def pair_options(opts: IngestOptions) -> dict[str, Any]:
    """Registration options of a pair task: opts.register (ECC with a homography fallback by default),
    gain matching unless `--register none`. IngestError for an unknown method."""
    if opts.register not in REGISTER_CHOICES:
        raise IngestError(f"--register must be one of {', '.join(REGISTER_CHOICES)}, not {opts.register!r}")
    fallback = "homography" if opts.register == "ecc" else None
    return {"register": opts.register, "motion": "affine", "fallback": fallback, "gain": opts.register != AS_SHOT}


# ---------------------------------------------------------------------------------------- listing


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One pair task per blur/sharp pair; reject lines for every image not used. Raises IngestError for a
    bad f-number CSV or pattern, or an unknown registration method."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    options = pair_options(opts)
    given = given_f_numbers(root, opts)
    if _flat(root):
        yield from layout.unused_images(NAME, root, FOLDERS, USES, depth=2)
        yield from _folder_tasks(root, root, None, opts, options, given)
        return
    yield from layout.unused_images(NAME, root, SPLITS, "train/, test/", depth=2)
    for split in _split_folders(root):
        yield from layout.unused_images(NAME, root / split, FOLDERS, USES)
        yield from _folder_tasks(root, root / split, split, opts, options, given)


def _folder_tasks(root: Path, folder: Path, split: str | None, opts: IngestOptions, options: dict[str, Any],
                  given: GivenFNumbers) -> Iterator[Task | Rejected]:
    """The tasks of one blur/ + sharp/ folder pair; `split` None: opts.split_by decides per pair."""
    blurs, rejects = folder_images(NAME, folder / "blur", USES)
    sharps, more = folder_images(NAME, folder / "sharp", USES)
    yield from rejects + more
    pairing = pair_files(blurs, sharps)
    yield from (Rejected(NAME, str(path), reason) for path, reason in pairing.rejects)
    names = pair_names([b for b, _ in pairing.pairs])
    for blur, sharp in pairing.pairs:
        name = names[blur]
        key = f"{NAME}/{name}" if split is None else f"{NAME}/{split}/{name}"
        try:
            meta = shot_meta(blur, sharp, root, given)
        except ImageError as exc:
            reason = (exc.reason if exc.reason.startswith("f-number")
                      else f"unreadable file or EXIF header: {exc.reason}")
            yield Rejected(NAME, str(exc.path), reason, key)
            continue
        meta["pairing"] = pairing.mode
        yield Task(NAME, split or split_for(NAME, name, opts), name, key,
                   {"blur": str(blur), "sharp": str(sharp)}, meta, {**options, **decode_option([blur, sharp])})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode, register the blurred shot onto the reference (unless `--register none`) and match its gain;
    the pairing rule goes into the metadata."""
    samples = load_task(task, opts)
    for sample in samples:
        sample.meta["pairing"] = task.meta.get("pairing")
    return samples


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED, layout_problem=layout_problem,
                       manifest_options=manifest_options)  # the LibRaw settings of its RAW files, as --raw-dir's
