"""Camera RAW decoding with fixed, recorded settings, and EXIF reading (exifread, rawpy as fallback)."""

from __future__ import annotations

import re
import stat
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from defocuskit.io.fd2 import captured_fd2
from defocuskit.io.formats import ImageError, is_raw

# The LibRaw configuration RAW files are decoded with (`raw_settings`: DNG_SETTINGS for a DNG).
# Camera white balance, no auto-brightening, 16-bit output, sRGB primaries with the sRGB tone curve
# (gamma 2.4 with a linear toe of slope 12.92), AHD demosaicing, orientation as the camera recorded it.
RAW_SETTINGS: dict[str, Any] = {
    "use_camera_wb": True,
    "use_auto_wb": False,
    "no_auto_bright": True,
    "output_bps": 16,
    "output_color": "sRGB",
    "gamma": (2.4, 12.92),
    "demosaic_algorithm": "AHD",
    "user_flip": None,  # None: LibRaw applies the camera's orientation flag
    "half_size": False,
    # LibRaw's default: where a shot's brightest raw value lies within 75 % of the white level LibRaw knows for the
    # camera, that value is taken as white (its tables can state a level above where a sensor clips, which turns
    # clipped highlights magenta), so such a shot decodes up to 4/3 brighter than the same light in another shot of
    # its bracket whose brightest value lies lower; ingest's per-pair gain match takes most of that out
    "adjust_maximum_thr": 0.75,
}
# A DNG states its white level (WhiteLevel, where the writer found the sensor to clip): every DNG is decoded
# against it, so the same light decodes to the same level in every shot of a bracket, whatever else is in frame.
DNG_SETTINGS: dict[str, Any] = {**RAW_SETTINGS, "adjust_maximum_thr": 0.0}

EXIF_KEYS = ("f_number", "exposure_s", "iso", "focal_length_mm", "sensor_width_mm", "camera", "lens",
             "focus_distance_m", "datetime", "f_number_text")

_EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"
# Tags are looked up in the EXIF sub-IFD first, then in IFD0 (TIFF/EP and some DNG writers put them there).
_TAGS = {
    "f_number": ("EXIF FNumber", "Image FNumber"),
    "exposure_s": ("EXIF ExposureTime", "Image ExposureTime"),
    "iso": ("EXIF ISOSpeedRatings", "EXIF PhotographicSensitivity", "Image ISOSpeedRatings",
            "Image PhotographicSensitivity"),
    "focal_length_mm": ("EXIF FocalLength", "Image FocalLength"),
    "lens": ("EXIF LensModel", "Image LensModel"),
    "focus_distance_m": ("EXIF SubjectDistance", "Image SubjectDistance"),
    "datetime": ("EXIF DateTimeOriginal", "Image DateTimeOriginal", "EXIF DateTimeDigitized", "Image DateTime"),
}
# The sensor width, which EXIF does not record as such, from one of (EXIF 2.3, CIPA DC-008):
# - FocalLengthIn35mmFilm (0xA405): the focal length giving the same angle of view on a 36 x 24 mm frame, so
#   width = 36 mm x FocalLength / FocalLengthIn35mmFilm (exact for a 3:2 sensor; makers that match the diagonal
#   give a 4:3 phone sensor a width a few per cent too wide); it does not change when the image is resized;
# - FocalPlaneXResolution (0xA20E) pixels per FocalPlaneResolutionUnit (0xA210: 2 inch, 3 cm, 4 mm, 5 um) with
#   the image width PixelXDimension (0xA002, exifread's ExifImageWidth): width = pixels / resolution.
_SENSOR_TAGS = {
    "equivalent": ("EXIF FocalLengthIn35mmFilm", "Image FocalLengthIn35mmFilm"),
    "resolution": ("EXIF FocalPlaneXResolution", "Image FocalPlaneXResolution"),
    "unit": ("EXIF FocalPlaneResolutionUnit", "Image FocalPlaneResolutionUnit"),
    "width": ("EXIF ExifImageWidth",),
}
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
FULL_FRAME_WIDTH_MM = 36.0
SENSOR_WIDTH_RANGE_MM = (1.0, 100.0)  # a phone's few mm to medium format; outside it the tags are wrong
# an FNumber some writers store as text: '2.8', 'f2.8', 'f/2.8', 'F/2.8'
_F_NUMBER_TEXT = re.compile(r"(?:[fF]/?)?(\d+(?:\.\d*)?|\.\d+)")
_MAGIC = (b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"\x89PNG", b"BM", b"RIFF")
LIBRAW_SAID_CHARS = 160  # LibRaw's own words in a reason are cut to this


def libraw_stderr(path: str | Path) -> AbstractContextManager[list[str]]:
    """Keep what LibRaw prints to the process's stderr about `path` ("<path>: Unexpected end of file", "<path>: Corrupt
    data near 0x...", beside the exception rawpy raises or a decode that succeeds; rawpy cannot turn it off) off the
    console while rawpy works on it inside the block: on leaving it, LibRaw's lines about `path`, their "<path>: "
    taken off, are in the yielded list for the caller to fold into its one-line reason or drop; any other line
    written meanwhile is passed on to stderr (io.fd2.captured_fd2, one capture at a time)."""
    prefix = f"{path}: "

    def select(line: str) -> str | None:
        return line[len(prefix):].strip() if line.startswith(prefix) else None

    return captured_fd2(select)


def libraw_reason(exc: Exception, said: Sequence[str] = ()) -> str:
    """A one-line reason for rawpy's `exc`: what LibRaw printed about the file first (`said`, from
    `libraw_stderr`; shortened), then the exception's type and message."""
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode(errors="replace")
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    words = "; ".join(dict.fromkeys(" ".join(line.split()) for line in said if line.strip()))
    if len(words) > LIBRAW_SAID_CHARS:
        words = words[:LIBRAW_SAID_CHARS - 3].rstrip() + "..."
    return f"{words}; {reason}" if words else reason


def raw_settings(path: str | Path) -> dict[str, Any]:
    """The LibRaw settings the RAW file `path` is decoded with: DNG_SETTINGS for a .dng, else RAW_SETTINGS."""
    return DNG_SETTINGS if Path(path).suffix.lower() == ".dng" else RAW_SETTINGS


def decode_option(paths: list[str | Path]) -> dict[str, Any]:
    """A task option naming the settings its RAW files among `paths` are decoded with where they differ from
    RAW_SETTINGS (a DNG's), for the task's fingerprint: shards written before DNGs had their own are decoded again
    on a rerun. {} where there are none."""
    changed = {k: v for p in paths if is_raw(p) for k, v in raw_settings(p).items() if RAW_SETTINGS[k] != v}
    return {"raw_decode": changed} if changed else {}


def settings_record(paths: list[str | Path]) -> dict[str, Any]:
    """The settings the RAW files among `paths` are decoded with, for manifest.json: by kind ("dng", "raw")."""
    kinds = {"dng" if raw_settings(p) is DNG_SETTINGS else "raw" for p in paths if is_raw(p)}
    return {kind: dict(DNG_SETTINGS if kind == "dng" else RAW_SETTINGS) for kind in sorted(kinds)}


def _rawpy_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    import rawpy

    kwargs = dict(settings)
    kwargs["output_color"] = getattr(rawpy.ColorSpace, settings["output_color"])
    kwargs["demosaic_algorithm"] = getattr(rawpy.DemosaicAlgorithm, settings["demosaic_algorithm"])
    return kwargs


def decode_raw(path: str | Path) -> np.ndarray:
    """Decode a camera RAW file to an RGB uint16 array (H, W, 3) with `raw_settings(path)`."""
    import rawpy

    path = Path(path)
    check_readable(path)
    try:
        with libraw_stderr(path) as said, rawpy.imread(str(path)) as raw:
            rgb = raw.postprocess(**_rawpy_kwargs(raw_settings(path)))
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as exc:
        reason = f"cannot decode RAW: corrupt, truncated or not a RAW file ({libraw_reason(exc, said)})"
        raise ImageError(path, reason) from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint16 or rgb.size == 0:
        raise ImageError(path, f"RAW decoded to an unexpected array {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


def io_reason(exc: OSError) -> str:
    """A short reason for an OSError met while reading a file or listing a folder."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot read ({exc.strerror or exc})"


def check_readable(path: str | Path) -> None:
    """Raise ImageError unless `path` is a regular file that can be opened for reading."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ImageError(path, "not a regular file")
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ImageError(path, io_reason(exc)) from None


def _number(tag: Any) -> float | None:
    """The first value of a numeric tag as a float (a rational divided out), or None. exifread gives a DOUBLE or
    FLOAT tag (what Pillow writes for a Python float: `exif[FNumber] = 2.8`) as a list of 1-tuples, `[(2.8,)]`."""
    values = getattr(tag, "values", tag)
    while isinstance(values, (list, tuple)):
        if not values:
            return None
        values = values[0]
    try:
        num = getattr(values, "numerator", None)
        den = getattr(values, "denominator", None)
        if den is not None and den == 0:
            return None
        value = float(num) / float(den) if num is not None and den is not None else float(values)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return value if np.isfinite(value) else None


def _text(tag: Any) -> str | None:
    if tag is None:
        return None
    value = tag.values if hasattr(tag, "values") else tag
    if isinstance(value, (list, tuple)):
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def _text_f_number(tag: Any, exif: dict[str, Any]) -> None:
    """An FNumber stored as text: its f-number when it is unambiguously one, else the text in f_number_text."""
    text = _text(tag)
    if text is None:
        return
    match = _F_NUMBER_TEXT.fullmatch(text)
    value = float(match.group(1)) if match else None
    if value is not None and value > 0 and np.isfinite(value):
        exif["f_number"] = value
    elif value is None:
        exif["f_number_text"] = text


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], _EXIF_TIME_FORMAT)
    except ValueError:
        return None


def _first(tags: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if name in tags:
            return tags[name]
    return None


def _camera(make: str | None, model: str | None) -> str | None:
    if make and model:
        return model if model.lower().startswith(make.lower()) else f"{make} {model}"
    return model or make


def _exif_tags(path: Path) -> dict:
    import logging

    import exifread

    logging.getLogger("exifread").setLevel(logging.ERROR)  # "PNG file does not have exif data.": no EXIF is no fault
    try:
        with open(path, "rb") as f:
            return exifread.process_file(f, details=False)
    except OSError as exc:
        raise ImageError(path, io_reason(exc)) from exc
    except Exception as exc:  # exifread raises assorted errors on corrupt headers
        raise ImageError(path, f"corrupt EXIF header ({type(exc).__name__}: {exc})") from exc


def sensor_width_mm(tags: dict, focal_length_mm: float | None, width_px: float | None = None) -> float | None:
    """The sensor width (mm) the EXIF `tags` (exifread's) imply (see _SENSOR_TAGS): the sensor's long side, which
    a photo's long side spans, portrait or landscape; None where they do not give a plausible one; `width_px`: the
    image width where the tags lack PixelXDimension."""
    low, high = SENSOR_WIDTH_RANGE_MM
    equivalent = _first(tags, _SENSOR_TAGS["equivalent"])
    equivalent = _number(equivalent) if equivalent is not None else None
    if focal_length_mm and equivalent and equivalent > 0:
        width = FULL_FRAME_WIDTH_MM * float(focal_length_mm) / equivalent
        if low <= width <= high:
            return round(width, 4)
    resolution, unit = (_first(tags, _SENSOR_TAGS[k]) for k in ("resolution", "unit"))
    resolution = _number(resolution) if resolution is not None else None
    unit_mm = _UNIT_MM.get(round(_number(unit) or 0)) if unit is not None else _UNIT_MM[2]  # the standard's default
    pixels = _first(tags, _SENSOR_TAGS["width"])
    pixels = _number(pixels) if pixels is not None else width_px
    if resolution and resolution > 0 and unit_mm and pixels and pixels > 0:
        width = float(pixels) / resolution * unit_mm
        if low <= width <= high:
            return round(width, 4)
    return None


def _rawpy_fallback(path: Path, exif: dict[str, Any], tags: dict) -> None:
    """Fill missing EXIF fields from LibRaw's parsed metadata (rawpy's `other`, `lens` and `sizes`)."""
    import rawpy

    try:
        with libraw_stderr(path) as said, rawpy.imread(str(path)) as raw:
            other = raw.other
            lens = raw.lens
            width_px = raw.sizes.width
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        reason = f"LibRaw cannot open it: corrupt, truncated or not a RAW file ({libraw_reason(exc, said)})"
        raise ImageError(path, reason) from exc
    fallback = {
        "f_number": other.aperture,
        "exposure_s": other.shutter_speed,
        "iso": other.iso_speed,
        "focal_length_mm": other.focal_length,
    }
    for key, value in fallback.items():
        if exif[key] is None and value and np.isfinite(value) and value > 0:
            exif[key] = round(float(value)) if key == "iso" else round(float(value), 6)
    if exif["lens"] is None and lens.model:
        exif["lens"] = lens.model.strip() or None
    if exif["datetime"] is None and other.timestamp is not None and other.timestamp.year > 1970:
        exif["datetime"] = other.timestamp
    if exif["sensor_width_mm"] is None:
        exif["sensor_width_mm"] = sensor_width_mm(tags, exif["focal_length_mm"], width_px)


def read_exif(path: str | Path) -> dict[str, Any]:
    """The shot's EXIF: f_number, exposure_s, iso, focal_length_mm, sensor_width_mm (from the tags of
    `sensor_width_mm`), camera,
    lens, focus_distance_m, datetime.

    Missing values are None; rationals are floats; datetime is a `datetime`. An FNumber stored as text
    ('f/2.8', 'F2.8', '2.8') is read as its number; text that is not one is kept in f_number_text (else None).
    RAW files fall back to LibRaw's metadata for missing fields. Raises ImageError for missing or unreadable
    files (permissions included) and corrupt headers.
    """
    path = Path(path)
    check_readable(path)
    if not is_raw(path):
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError as exc:
            raise ImageError(path, io_reason(exc)) from None
        if not head.startswith(_MAGIC):
            raise ImageError(path, "not an image file (unrecognized header)")
    tags = _exif_tags(path)
    exif: dict[str, Any] = dict.fromkeys(EXIF_KEYS)
    for key in ("f_number", "exposure_s", "iso", "focal_length_mm", "focus_distance_m"):
        tag = _first(tags, _TAGS[key])
        exif[key] = _number(tag) if tag is not None else None
        if exif[key] is not None and exif[key] <= 0:
            exif[key] = None
    tag = _first(tags, _TAGS["f_number"])
    if tag is not None and isinstance(getattr(tag, "values", None), str):
        exif["f_number"] = None
        _text_f_number(tag, exif)
    if exif["iso"] is not None:
        exif["iso"] = round(exif["iso"])
    exif["lens"] = _text(_first(tags, _TAGS["lens"]))
    exif["camera"] = _camera(_text(tags.get("Image Make")), _text(tags.get("Image Model")))
    exif["datetime"] = _parse_time(_text(_first(tags, _TAGS["datetime"])))
    exif["sensor_width_mm"] = sensor_width_mm(tags, exif["focal_length_mm"])
    if is_raw(path):
        _rawpy_fallback(path, exif, tags)
    return exif
