"""The metadata schema of a shard sample's `json` member (shard format 2): its keys, their types and how each
stores "unknown"; `data.metadata` converts to and from it (what the schema means: that module's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = 2  # shard format: 1 = metadata with null for unknown; 2 = this fixed schema, no null
UNKNOWN_NUMBER = -1
UNKNOWN_TEXT = ""
IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
F_NUMBER_RANGE = (0.7, 64.0)  # the lenses that exist: Zeiss Planar f/0.7 ... large-format f/64
F_NUMBER_KEYS = ("f_number", "ref_f_number")
UNSET = object()  # a Field without a default of its own


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
    default: Any = UNSET
    known: Callable[[Mapping[str, Any]], bool] | None = None

    def unknown(self) -> Any:
        """The stored value of an unknown."""
        if self.default is not UNSET:
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
