"""The inputs of `defocuskit deblur`: image files named by files, folders or patterns, checked before the first
image, and the optics their EXIF gives (`--coc fnumber`, the f-number bound)."""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from defocuskit.data.metadata import F_NUMBER_RANGE
from defocuskit.io.formats import IMAGE_EXTENSIONS, ImageError
from defocuskit.io.images import check_image
from defocuskit.io.raw import read_exif


def exif_optics(path: Path) -> dict[str, Any]:
    """The optics in the EXIF of `path` (f_number, focal_length_mm, sensor_width_mm, focus_distance_m; None where
    unknown or unreadable), as ingest reads them (io.raw.read_exif)."""
    try:
        exif = read_exif(path)
    except ImageError:
        exif = {}
    return {k: exif.get(k) for k in ("f_number", "focal_length_mm", "sensor_width_mm", "focus_distance_m")}


def implausible(exif: Mapping[str, Any]) -> str | None:
    """Why the EXIF f-number is not used (outside the lenses that exist, F_NUMBER_RANGE: a misread or corrupt tag,
    as ingest rejects the shot), else None."""
    low, high = F_NUMBER_RANGE
    value = exif.get("f_number")
    if value is None or low <= value <= high:
        return None
    return f"its f/{value:g} is implausible: lenses span f/{low:g} to f/{high:g}"


def f_number_meta(path: Path, f_number: float | None, camera: Mapping[str, float] | None = None,
                   exif: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The optics that `--coc fnumber` reads: --f-number and the `camera` values given (--sensor-width, ...), else the
    file's EXIF (`exif`: `exif_optics` of it, read here where not given); an EXIF f-number outside F_NUMBER_RANGE
    is unknown (None), as ingest does not use it."""
    meta = dict(exif_optics(path) if exif is None else exif)
    if implausible(meta):
        meta["f_number"] = None
    if f_number is not None:
        meta["f_number"] = float(f_number)
    meta.update(camera or {})
    return meta


def check_inputs(inputs: list[Path]) -> None:
    """Raise ImageError (one bad file) or ValueError (several, each named with its fault) unless every input reads."""
    errors: list[ImageError] = []
    for p in inputs:
        try:
            check_image(p)
        except ImageError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError(f"{len(errors)} of {len(inputs)} input images cannot be read; nothing was deblurred:\n"
                         + "\n".join(f"  {e}" for e in errors))


def expand_inputs(items: list[str | Path] | tuple[str | Path, ...], outputs: frozenset[Path] = frozenset()
                  ) -> list[Path]:
    """The image files that `deblur` arguments name: a file as given; a folder -> its image files (not
    recursive, sorted); a glob pattern (quoted, so that the shell left it) -> its image files, sorted; neither
    taking the files of `outputs` (resolved paths: the outputs an earlier deblur into --out lists, where --out is
    the folder of the photos themselves).

    Raises ImageError (one bad item) or ValueError (several, each named) for an item that is neither an
    existing file, a folder with images, nor a pattern with image matches.
    """
    def images(paths: list[Path]) -> list[Path]:
        return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith(".") and p.resolve() not in outputs)

    def only_outputs(paths: list[Path]) -> str:
        return " but the outputs of an earlier deblur into --out (its deblur.json lists them)" if any(
            p.resolve() in outputs for p in paths) else ""

    found: list[Path] = []
    errors: list[ImageError] = []
    kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
    for item in items:
        path = Path(item)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = images(listed := list(path.iterdir()))
            found += inside
            if not inside:
                errors.append(ImageError(path, f"a folder without image files{only_outputs(listed)} (looked for "
                                               f"{kinds})"))
        elif path.exists():  # a pipe or a device: there, so not "no such file"
            errors.append(ImageError(path, "not a regular file or folder (a device, pipe or socket)"))
        elif re.search(r"[*?[]", str(item)):
            matched = images(globbed := [Path(m) for m in glob.glob(str(item), recursive=True)])
            found += matched
            if not matched:
                errors.append(ImageError(item, "no such file, and no image file matches it as a pattern"
                                               + only_outputs(globbed)))
        else:
            errors.append(ImageError(path, "no such file or folder"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ValueError(f"{len(errors)} of {len(items)} inputs name no image; nothing was deblurred:\n"
                         + "\n".join(f"  {e}" for e in errors))
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)  # a file named twice (itself and by its folder) is deblurred once
    return list(unique.values())
