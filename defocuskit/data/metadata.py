"""The metadata of a shard sample's `json` member (shard format 2): what its schema (`data.meta_schema`, where the
keys are defined once) means, and the conversions between the stored form and the Python view.

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
from collections.abc import Mapping
from typing import Any

import numpy as np

from defocuskit.data.meta_schema import (  # noqa: F401 (the schema's names, read through this module too)
    ALIGN,
    BLURMASK,
    F_NUMBER_KEYS,
    F_NUMBER_RANGE,
    FORMAT,
    GROUPS,
    IDENTITY,
    META_KEYS,
    OPTIONAL_KEYS,
    PATCH_OF,
    SCHEMA,
    UNKNOWN_NUMBER,
    UNKNOWN_TEXT,
    UNSET,
    Field,
    MetadataError,
    empty_meta,
)

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
    if field.default is not UNSET:
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
