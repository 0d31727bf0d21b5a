"""The metadata schema of a shard sample's `json` member (shard format 2), defined once, here.

Every sample of every source carries every key of `SCHEMA`, each with one type, and the groups
`align` and `blurmask` always carry all their sub-keys: a reader that infers types from a few samples
(`datasets.load_dataset("webdataset")` infers from the first five) gets the same columns from any
shard, and no JSON null is ever written, so no column can be inferred as the null type.

Unknown values (what a format-1 shard wrote as null):

- a number that is never negative (f-numbers, focal length, exposure, ISO, distances, gain, scores in
  [0, 1], sizes, counts): -1 (-1.0 for a float key, so the JSON type stays a float);
- text: "" (empty string);
- `origin` (the input paths): [] (ingest always fills it, with the task's files where a source gave none);
- fixed-length number lists: -1 in every place (`align.resized_from`: [-1, -1] = not resized);
- the two signed registration diagnostics hold 0 and their group says whether they mean anything:
  `align.raw_score` only where `align.method` is `ecc` or `homography`, `align.matched_blur_px`
  only where `align.quality_tiles` > 0;
- `align.method` is "none" and `align.matrix` the identity where nothing was warped.

-1 rather than NaN: NaN is not strict JSON (jq, JavaScript and strict parsers reject the file), while
-1 is valid JSON and cannot be mistaken for a value of a quantity that is never negative. Check
`value >= 0` (or use `to_python`, which gives None) before averaging.

One key is optional (`OPTIONAL_KEYS`): `patch_of`, what a training patch (ingest --patch) was cut from, is stored in
every patch and in no whole image; where it is absent its Python view (and an `hf_features` row's) is None.

`to_stored` turns a source's Python view (None where unknown) into the stored form and rejects keys
that are not in the schema and values of the wrong type, naming the key and the value; `to_python`
turns any stored form back into the Python view (None where unknown, every key present), format-1
samples (null values, missing keys) included, so the readers of decoded samples never see -1 or "".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = 2  # shard format: 1 = metadata with null for unknown; 2 = this fixed schema, no null
UNKNOWN_NUMBER = -1
UNKNOWN_TEXT = ""
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
F_NUMBER_RANGE = (0.7, 64.0)  # the lenses that exist: Zeiss Planar f/0.7 ... large-format f/64
F_NUMBER_KEYS = ("f_number", "ref_f_number")
_UNSET = object()


class MetadataError(ValueError):
    """Sample metadata that does not fit the shard schema; the message names the key and the value."""


@dataclass(frozen=True)
class Field:
    """One metadata key: its kind, what it holds, and how "unknown" is stored.

    kind: "str", "float", "int", "strs" (list of text), "floats" / "ints" (`length` numbers), "matrix"
    (3 x 3 floats). `default` replaces the kind's unknown value where "unknown" has a meaning of its own
    (method "none", identity matrix: nothing warped); such a value stays as it is in the Python view.
    `known` marks a signed key (stored 0 when unknown): it tells from the key's group whether it is known.
    """

    kind: str
    doc: str
    length: int = 0
    default: Any = _UNSET
    known: Callable[[Mapping[str, Any]], bool] | None = None

    def unknown(self) -> Any:
        """The stored value of an unknown."""
        if self.default is not _UNSET:
            return _copy(self.default)
        if self.kind == "str":
            return UNKNOWN_TEXT
        if self.kind in ("float", "int"):
            zero = 0 if self.known else UNKNOWN_NUMBER
            return float(zero) if self.kind == "float" else zero
        if self.kind == "strs":
            return []
        if self.kind in ("floats", "ints"):
            zero = 0 if self.known else UNKNOWN_NUMBER
            return [float(zero) if self.kind == "floats" else zero] * self.length
        raise ValueError(f"field kind {self.kind!r} has no unknown value")


def _copy(value: Any) -> Any:
    """A fresh list of a tuple default (the identity matrix), so no two samples share one."""
    return [list(row) for row in value] if isinstance(value, tuple) else value


def _registered(group: Mapping[str, Any]) -> bool:
    return group.get("method") in ("ecc", "homography")


def _judged(group: Mapping[str, Any]) -> bool:
    tiles = group.get("quality_tiles")
    return isinstance(tiles, (int, float)) and not isinstance(tiles, bool) and tiles > 0


def _refine_judged(group: Mapping[str, Any]) -> bool:
    px = group.get("refined_px")
    return isinstance(px, (list, tuple)) and len(px) == 2 and isinstance(px[0], (int, float)) and px[0] >= 0


ALIGN: dict[str, Field] = {
    "method": Field("str", "ecc, homography, injected (synthetic misalignment) or none (nothing warped)",
                    default="none"),
    "motion": Field("str", "ECC motion model (affine, ...; bracket: shift + rotation on the shared detail) "
                           "or homography"),
    "score": Field("float", "registration score in [0, 1] (blur-aware; what --min-align-score judges)"),
    "raw_score": Field("float", "ECC correlation of the pre-blurred images, in [-1, 1]", known=_registered),
    "consistency": Field("float", "share of textured evidence supporting the fit, in [0, 1]"),
    "displaced": Field("float", "share of textured evidence found displaced elsewhere, in [0, 1]"),
    "quality_tiles": Field("int", "textured tiles the score judged"),
    "matched_blur_px": Field("floats", "[median, 90th percentile] Gaussian sigma matching the two shots "
                                       "(positive where the reference was blurred)", length=2, known=_judged),
    "matrix": Field("matrix", "3 x 3 (an affine fit gets the row 0 0 1): reference -> moving (registered), "
                              "the warp applied to sharp.png (injected), identity (none)", default=IDENTITY),
    "coverage": Field("float", "share of the reference covered by the warped shot, in [0, 1]"),
    "border": Field("str", "how pixels outside the warped shot were filled (reflect)"),
    "inliers": Field("int", "feature matches supporting a homography"),
    "refined_px": Field("floats", "[median, 90th percentile] length in px of the smooth residual warp applied after "
                                  "the fit (--refine-warp; [0, 0]: judged and not applied)", length=2),
    "refine_corr": Field("floats", "[before, after] correlation of the shared detail that judged the residual warp",
                         length=2, known=_refine_judged),
    "resized_from": Field("ints", "[width, height] of the blurred shot before it was resized to the reference",
                          length=2),
}

BLURMASK: dict[str, Field] = {
    "white_is": Field("str", "what white in the dataset's masks marks: blurred or sharp"),
    "decided_by": Field("str", "auto (from the photos) or option (--cuhk-white-is)"),
    "evidence": Field("float", "share of the photos that agreed with the automatic decision"),
}

PATCH_OF: dict[str, Field] = {
    "height": Field("int", "height in pixels of the image the patch was cut from, as ingested (after --max-side)"),
    "width": Field("int", "width in pixels of the image the patch was cut from"),
    "y": Field("int", "row of the patch's top-left pixel in that image"),
    "x": Field("int", "column of the patch's top-left pixel in that image"),
}

GROUPS: dict[str, dict[str, Field]] = {"align": ALIGN, "blurmask": BLURMASK, "patch_of": PATCH_OF}

SCHEMA: dict[str, Field | dict[str, Field]] = {
    "source": Field("str", "the source (dpdd, raw, synthetic, ...)"),
    "split": Field("str", "train, test, ..."),
    "scene": Field("str", "the scene within its source"),
    "f_number": Field("float", "f-number of the blurred shot (of the reference in a sharp-only sample)"),
    "ref_f_number": Field("float", "f-number of the sharp reference"),
    "focal_length_mm": Field("float", "focal length in mm"),
    "sensor_width_mm": Field("float", "width in mm of the sensor area the image covers (the thin lens's pixel pitch = "
                                      "this / width; a camera's sensor width, from EXIF or its specification, spans "
                                      "the photo's long side, so a portrait's is the sensor's short side: "
                                      "optics.sensor_width_across; unknown: optics.coc_from_metadata assumes 36 mm, "
                                      "full frame)"),
    "exposure_s": Field("float", "exposure time in seconds"),
    "iso": Field("int", "ISO sensitivity"),
    "camera": Field("str", "camera make and model"),
    "lens": Field("str", "lens model"),
    "focus_distance_m": Field("float", "focus (subject) distance in metres"),
    "blur_type": Field("str", "defocus or motion"),
    "bit_depth": Field("int", "8 or 16: bits per channel of the PNG members"),
    "height": Field("int", "image height in pixels"),
    "width": Field("int", "image width in pixels"),
    "align": ALIGN,
    "gain": Field("float", "photometric scale applied to the blurred shot"),
    "origin": Field("strs", "input paths relative to the source root"),
    "pairing": Field("str", "--pairs: the rule that paired the sample (stem or order)"),
    "blurmask": BLURMASK,
    "coc_source": Field("str", "what wrote coc.png where not the source itself (jdrl-reblur: defocuskit pseudo-coc)"),
    "coc_model": Field("str", "the model file that wrote coc.png (pseudo-coc)"),
    "patch_of": PATCH_OF,  # a training patch's source image (optics.source_long_side); absent in a whole image
}
OPTIONAL_KEYS: tuple[str, ...] = ("patch_of",)  # stored only where known (every patch), else left out

META_KEYS: tuple[str, ...] = tuple(SCHEMA)


def empty_meta(**known: Any) -> dict[str, Any]:
    """A metadata dict (Python view) with every schema key, None unless given; KeyError for other keys."""
    unknown = set(known) - set(META_KEYS)
    if unknown:
        raise KeyError(f"not shard metadata keys: {sorted(unknown)}")
    meta = dict.fromkeys(META_KEYS)
    meta.update(known)
    return meta


# ------------------------------------------------------------------------------------------ writing


def _fail(path: str, value: Any, what: str) -> MetadataError:
    return MetadataError(f"metadata {path}: {what}, got {value!r} ({type(value).__name__})")


def _number(path: str, value: Any, field: Field, integer: bool) -> int | float:
    """One number of the stored form; None, NaN and -1 (of a key that is never negative) are unknown."""
    if value is None:
        zero = 0 if field.known else UNKNOWN_NUMBER
        return zero if integer else float(zero)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, value, "expected a number (or None when unknown)")
    if isinstance(value, float) and math.isnan(value):
        return _number(path, None, field, integer)
    if not math.isfinite(value):
        raise _fail(path, value, "expected a finite number")
    if field.known is None and value < 0 and value != UNKNOWN_NUMBER:
        raise _fail(path, value, "expected a number >= 0 (or None when unknown)")
    if integer:
        if value != int(value):
            raise _fail(path, value, "expected a whole number")
        return int(value)
    return float(value)


def _stored(path: str, field: Field, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None:
        return field.unknown()
    kind = field.kind
    if kind == "str":
        if not isinstance(value, str):
            raise _fail(path, value, "expected text (or None when unknown)")
        return value
    if kind in ("float", "int"):
        return _number(path, value, field, kind == "int")
    if kind == "strs":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise _fail(path, value, "expected a list of text")
        return list(value)
    if kind in ("floats", "ints"):
        if not isinstance(value, (list, tuple)) or len(value) != field.length:
            raise _fail(path, value, f"expected a list of {field.length} numbers")
        return [_number(f"{path}[{i}]", v, field, kind == "ints") for i, v in enumerate(value)]
    if kind == "matrix":
        if isinstance(value, (list, tuple)) and len(value) == 2:
            value = [*value, [0.0, 0.0, 1.0]]  # an affine 2 x 3 is the 3 x 3 with the row 0 0 1
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                isinstance(r, (list, tuple)) and len(r) == 3 for r in value):
            raise _fail(path, value, "expected a 3 x 3 (or affine 2 x 3) matrix")
        rows = []
        for i, row in enumerate(value):
            cells = []
            for j, v in enumerate(row):
                v = v.item() if isinstance(v, np.generic) else v
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise _fail(f"{path}[{i}][{j}]", v, "expected a finite number")
                cells.append(float(v))
            rows.append(cells)
        return rows
    raise ValueError(f"field kind {kind!r} unknown")


def _stored_group(name: str, fields: dict[str, Field], value: Any) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise _fail(name, value, f"expected a group {{{', '.join(fields)}}} (or None)")
    extra = sorted(set(value) - set(fields))
    if extra:
        raise MetadataError(f"metadata {name}: sub-keys {extra} are not in the shard schema "
                            f"(defocuskit.data.metadata.{name.upper()}: {', '.join(fields)})")
    return {k: _stored(f"{name}.{k}", f, value.get(k)) for k, f in fields.items()}


def to_stored(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a sample's metadata: every schema key in schema order, typed, no None.

    Accepts the Python view (None where unknown, numpy arrays and scalars allowed) and the stored form
    itself (to_stored(to_stored(m)) == to_stored(m)). MetadataError names a key outside the schema or a
    value of the wrong type (an f-number outside F_NUMBER_RANGE included), which readers would refuse."""
    extra = sorted(set(meta) - set(SCHEMA))
    if extra:
        raise MetadataError(f"metadata keys {extra} are not in the shard schema (defocuskit.data.metadata.SCHEMA)")
    out: dict[str, Any] = {}
    for key, field in SCHEMA.items():
        if key in OPTIONAL_KEYS and meta.get(key) is None:
            continue
        if isinstance(field, dict):
            out[key] = _stored_group(key, field, meta.get(key))
        else:
            out[key] = _stored(key, field, meta.get(key))
        low, high = F_NUMBER_RANGE
        if key in F_NUMBER_KEYS and out[key] != UNKNOWN_NUMBER and not low <= out[key] <= high:
            raise _fail(key, meta.get(key), f"expected an f-number lenses have, f/{low:g} to f/{high:g} (or None when "
                                            "unknown)")
    if wrong := patch_wrong(out):
        raise MetadataError(f"metadata {wrong}")
    return out


def patch_wrong(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a sample's `patch_of` (stored form or Python view), else None: it holds the source image's
    height and width (> 0) and the patch's corner y, x (>= 0), and the sample's `height` x `width` lies inside."""
    src, ph, pw = meta.get("patch_of"), meta.get("height"), meta.get("width")
    h, w, y, x = [src.get(k) for k in PATCH_OF] if isinstance(src, Mapping) else [None] * 4
    if src is not None and not (all(type(v) is int for v in (h, w, y, x)) and min(h, w) > 0 and min(y, x) >= 0):
        return f"patch_of: expected the source image's height, width (> 0) and the patch's corner y, x, got {src!r}"
    if src is not None and type(ph) is int and type(pw) is int and min(ph, pw) > 0 and (y + ph > h or x + pw > w):
        return f"patch_of: a {pw}x{ph} patch at (x {x}, y {y}) does not lie inside a {w}x{h} image, got {src!r}"
    return None


# ------------------------------------------------------------------------------------------ reading


def _is_unknown(field: Field, value: Any, group: Mapping[str, Any]) -> bool:
    if value is None:
        return True
    if field.known is not None:
        return not field.known(group)
    if field.default is not _UNSET:
        return False
    if field.kind == "str":
        return value == UNKNOWN_TEXT
    if field.kind in ("float", "int"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == UNKNOWN_NUMBER
    if field.kind == "strs":
        return isinstance(value, list) and not value
    if field.kind in ("floats", "ints"):
        return isinstance(value, list) and all(v == UNKNOWN_NUMBER for v in value)
    return False


def _python_group(fields: dict[str, Field], value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value  # None (format 1: no such group) or an odd value, left as it is
    out = {k: (None if _is_unknown(f, value.get(k), value) else value.get(k)) for k, f in fields.items()}
    out.update({k: v for k, v in value.items() if k not in fields})
    return None if all(v is None for v in out.values()) else out


def _wrong_number(key: str, field: Field, value: Any) -> str | None:
    """What is wrong with a known value of a number key (not a number, negative, not an f-number), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"json: {key} is {value!r}, not a number"
    low, high = F_NUMBER_RANGE
    if key in F_NUMBER_KEYS and not low <= value <= high:
        return f"json: {key} is {value!r}, not an f-number lenses have (f/{low:g} to f/{high:g}; -1 when unknown)"
    if not math.isfinite(value):
        return f"json: {key} is {value!r}, not a finite number"
    if field.known is None and value < 0:
        return f"json: {key} is {value!r}, not a number >= 0 ({UNKNOWN_NUMBER} when unknown)"
    return None


def to_python(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Python view of stored metadata (any format): every schema key, None where unknown; a group
    with no known value is None; keys outside the schema are kept as they are. Stored metadata that is not
    a JSON object, a number key holding something else (`"f_number": "abc"`), a negative other than the unknown
    -1, an f-number outside F_NUMBER_RANGE, or a `patch_of` that `patch_wrong` refuses: a MetadataError naming it."""
    if stored is not None and not isinstance(stored, Mapping):
        raise MetadataError(f"the json member is a {_json_type(stored)}, not a JSON object")
    stored = stored or {}
    out: dict[str, Any] = {}
    for key, field in SCHEMA.items():
        value = stored.get(key)
        if isinstance(field, dict):
            out[key] = _python_group(field, value)
            continue
        if isinstance(value, float) and math.isnan(value):
            value = None  # what the writer stores as unknown (-1), as Python's json reads a NaN
        out[key] = None if _is_unknown(field, value, stored) else value
        wrong = _wrong_number(key, field, out[key]) if field.kind in ("float", "int") and out[key] is not None else None
        if wrong:
            raise MetadataError(wrong)
    if wrong := patch_wrong(out):
        raise MetadataError(f"json: {wrong}")
    out.update({k: v for k, v in stored.items() if k not in SCHEMA})
    return out


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (list, string, number, ...)."""
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def known_count(stored: Mapping[str, Any]) -> int:
    """How many top-level keys hold a known value (any format): the writer puts richer samples first."""
    return sum(v is not None for v in to_python(stored).values())


# Sources whose blurred shot and reference are rendered from one image (ingest --render, --synthetic): pixel-aligned
# unless a misalignment was injected (align method "injected").
RENDERED_SOURCES = ("render", "synthetic")


def pixel_aligned(meta: Mapping[str, Any]) -> bool:
    """Whether a sample's blurred shot and reference are aligned by construction (rendered, nothing injected);
    registered, as-shot and injected pairs are not."""
    align = meta.get("align") or {}
    return meta.get("source") in RENDERED_SOURCES and align.get("method") == "none"
