"""Plain data between the processes of one launch, encoded as JSON: no pickle, so nothing a peer (or anyone who
reaches the launch's key-value store) sends can run code here.

What it carries: None, bool, int, float (NaN and infinities included), str, list, tuple, set, dict (any of these as
keys), NumPy arrays (no object dtype) and scalars, and instances of the dataclasses the receiver names. Every JSON
object in the encoding is one tagged value, so a plain dict and a tag cannot be confused.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import numpy as np


class WireError(ValueError):
    """Data that is not an encoding of this module, or names a type the receiver does not accept."""


def _dtype(text: Any) -> np.dtype:
    try:
        dtype = np.dtype(str(text))
    except TypeError:
        raise WireError(f"not a NumPy dtype: {text!r}") from None
    if dtype.hasobject:
        raise WireError(f"object arrays are not carried: {text!r}")
    return dtype


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        _dtype(array.dtype.str)
        return {"$array": array.dtype.str, "shape": list(array.shape),
                "data": base64.b64encode(array.tobytes()).decode("ascii")}
    if isinstance(obj, np.generic):  # before float: np.float64 is one, and comes back as itself
        return {"$scalar": _dtype(obj.dtype.str).str, "value": _encode(obj.item())}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_encode(x) for x in obj]
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(x) for x in obj]}
    if isinstance(obj, (set, frozenset)):
        return {"$set": [_encode(x) for x in obj]}
    if isinstance(obj, dict):
        return {"$dict": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"$dataclass": type(obj).__name__,
                "fields": {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    raise TypeError(f"wire: a {type(obj).__name__} cannot be sent between processes")


def encode(obj: Any) -> bytes:
    """`obj` as UTF-8 JSON; TypeError for a value of a kind this module does not carry."""
    return json.dumps(_encode(obj), separators=(",", ":")).encode("utf-8")


def _decode(obj: Any, types: dict[str, type]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode(x, types) for x in obj]
    if not isinstance(obj, dict) or len(obj) == 0:
        raise WireError(f"not an encoded value: {str(obj)[:80]}")
    tag = next(iter(obj))
    if tag == "$array" and set(obj) == {"$array", "shape", "data"}:
        dtype = _dtype(obj["$array"])
        shape = tuple(int(n) for n in obj["shape"])
        return np.frombuffer(base64.b64decode(obj["data"]), dtype=dtype).reshape(shape).copy()
    if tag == "$scalar" and set(obj) == {"$scalar", "value"}:
        return _dtype(obj["$scalar"]).type(_decode(obj["value"], types))
    items = obj[tag]
    if tag == "$tuple" and len(obj) == 1 and isinstance(items, list):
        return tuple(_decode(x, types) for x in items)
    if tag == "$set" and len(obj) == 1 and isinstance(items, list):
        return {_decode(x, types) for x in items}
    if tag == "$dict" and len(obj) == 1 and isinstance(items, list) and all(
            isinstance(kv, list) and len(kv) == 2 for kv in items):
        return {_decode(k, types): _decode(v, types) for k, v in items}
    if tag == "$dataclass" and set(obj) == {"$dataclass", "fields"}:
        cls = types.get(str(obj["$dataclass"]))
        if cls is None:
            raise WireError(f"a {obj['$dataclass']!r} is not among the types accepted here ({', '.join(types)})")
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(obj["fields"], dict) or set(obj["fields"]) != fields:
            raise WireError(f"a {cls.__name__} needs the fields {sorted(fields)}")
        return cls(**{k: _decode(v, types) for k, v in obj["fields"].items()})
    raise WireError(f"not an encoded value: {str(obj)[:80]}")


def decode(data: bytes, types: Iterable[type] = ()) -> Any:
    """The value `encode` made; dataclass instances only of `types`. WireError for anything else."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    try:
        return _decode(parsed, {t.__name__: t for t in types})
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"not an encoded value ({exc})") from None
