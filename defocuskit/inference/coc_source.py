"""Where the circle-of-confusion map for physics data consistency comes from (`--coc`).

- `map`: a trained defocus-map model (`--coc-model FILE`) estimates it from the blurred image.
- `oracle`: the shard's `coc.png` (synthetic data); for studies of the sampler alone: the report says so.
- `fnumber`: one CoC for the whole image from the f-number and the optics in the metadata
  (optics.coc_from_metadata: a background at infinity); the camera options (CAMERA_OPTIONS) used over its values.
  A metadata sensor width spans the image's width (the width it covers, as ingest stores it), a camera's (given, or
  the 36 mm default) its long side (optics.sensor_span_px).
- `edge`: training-free, from the blurred image alone (imaging.blur_estimate.estimate_coc: edge blur by
  re-blurring, Zhuo & Sim 2011, spread edge-aware to every pixel); no model file.

A map model reads each image at its own inference.work_side, where its recipe sets one (`trained`: at its training
images' long side; `auto`: where the image's blur reads as wide as its training inputs' did), the map given back at
the image's size in its pixels (inference.scale.read_at_side); none (the default): at the image's own size.

An estimated map (`map`, `edge`) is bounded where the image's f-number N is known: at most K x the long side / N
pixels (imaging.optics.bound_coc), K the map model's `inference.coc_bound` or `--coc-bound K` (0: no bound). A
training patch's long side, here and for a camera's sensor width, is its photo's (optics.source_long_side).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defocuskit.config.typed import did_you_mean
from defocuskit.imaging import optics
from defocuskit.inference.keywords import real
from defocuskit.io.raw import SENSOR_WIDTH_RANGE_MM

COC_SOURCES = ("map", "oracle", "fnumber", "edge")

# the options (deblur's, eval's) that give the camera of --coc fnumber, by the metadata key they fill (CAMERA)
CAMERA_OPTIONS = {"sensor_width_mm": "--sensor-width", "focal_length_mm": "--focal-length",
                  "focus_distance_m": "--focus-distance"}

# the camera keywords of deblur's f_number= CoC (the shard metadata keys optics.coc_from_metadata reads): (lowest,
# highest, the words of the range); not given: optics' defaults (36 mm full frame, 50 mm, 2 m)
CAMERA: dict[str, tuple[float, float, str]] = {
    "sensor_width_mm": (*SENSOR_WIDTH_RANGE_MM, "a sensor width a camera has, {low:g} to {high:g} mm"),
    "focal_length_mm": (1.0, 2000.0, "a focal length a lens has, {low:g} to {high:g} mm"),
    "focus_distance_m": (0.01, 10000.0, "a focus distance, {low:g} to {high:g} m, beyond the focal length"),
}


DESCRIPTIONS = {
    "map": "estimated from the blurred image by the defocus-map model {model}",
    "oracle": "ORACLE: the shard's ground-truth coc.png (a study of the sampler alone, not a blind result)",
    "fnumber": "one CoC per image from its f-number: " + optics.COC_FROM_METADATA,
    "edge": "estimated from the blurred image alone, training-free: edge blur by re-blurring (Zhuo & Sim 2011) "
            "spread edge-aware to every pixel (imaging.blur_estimate.estimate_coc)",
}


def map_work_side(model: str, own: int | str | None, trained: int | None, blur: float | None) -> int | str | None:
    """A map model's work side in force: its recipe's inference.work_side `own`, resolved against what its file
    records (`trained`: its training images' long side; `blur`: their blur, for "auto"); where the file lacks what
    the work side needs, None (the image's own size), with a UserWarning naming `model`."""
    import warnings

    from defocuskit.inference.scale import own_work_side

    work, note = own_work_side(None, own, trained, blur, model)
    if note:
        warnings.warn(note.replace("deblurs at", "reads its map at").replace("images deblurred", "maps read"),
                      UserWarning, stacklevel=3)
    return work


def edge_coc(image: np.ndarray) -> np.ndarray:
    """The training-free edge estimate (imaging.blur_estimate.estimate_coc) of a float (H, W, 3) or gray (H, W, 1)
    image, gray read as RGB, as every CoC source reads it: the same map from deblur, eval and the Python API."""
    from defocuskit.imaging.blur_estimate import estimate_coc  # OpenCV only when the source is used

    return estimate_coc(np.repeat(image, 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image)


class CocError(ValueError):
    """A CoC source that cannot give a map; the message names the option and the sample or file."""


def checked_camera(given: Mapping[str, object], names: Mapping[str, str] | None = None) -> dict[str, float]:
    """The camera keywords given (not None) as the metadata optics.coc_from_metadata reads, each a finite number in
    its CAMERA range and the focus beyond the focal length; else a one-line ValueError naming the keyword (as
    `names` spells it: the CLI's options, {"sensor_width_mm": "--sensor-width", ...}; default `key=`)."""
    def spelled(key: str) -> str:
        return f"{names[key]} " if names and key in names else f"{key}="

    meta = {}
    for key, value in given.items():
        if (number := real(key, value)) is None:
            continue
        low, high, words = CAMERA[key]
        if not low <= number <= high:
            raise ValueError(f"{spelled(key)}{value!r}: not {words.format(low=low, high=high)}")
        meta[key] = number
    focal = meta.get("focal_length_mm", optics.DEFAULT_FOCAL_LENGTH_MM)
    focus = meta.get("focus_distance_m", optics.DEFAULT_FOCUS_DISTANCE_M)
    if focus * 1000.0 <= focal:
        named = "focus_distance_m" if "focus_distance_m" in meta else "focal_length_mm"
        advice = "" if named == "focus_distance_m" else f"; give {spelled('focus_distance_m').strip()}"
        raise ValueError(f"{spelled(named)}{given[named]!r}: the focus ({focus:g} m) must lie beyond the focal length "
                         f"({focal:g} mm){advice}")
    return meta


def check_camera_use(camera: Mapping[str, float] | None, kind: str | None) -> None:
    """CocError naming the options unless the `camera` given (--sensor-width, ...) has a use: --coc fnumber."""
    if camera and kind != "fnumber":
        raise CocError(f"{', '.join(CAMERA_OPTIONS.get(k, k) for k in camera)}: the camera of --coc fnumber's "
                       f"thin-lens CoC; with {'--coc ' + kind if kind else 'no --coc'} it would not be used")


def unused_f_number(f_number: float) -> CocError:
    """The CocError of `--f-number` given where nothing in the run reads it (deblur.json recorded f_number null)."""
    return CocError(f"--f-number {f_number:g}: nothing in this run uses it (it gives --coc fnumber its thin-lens CoC, "
                    "and bounds an estimated map where a bound K is set: --coc-bound K, or a map model's "
                    "inference.coc_bound); leave it out")


def unused_bound(given: float, kind: str, known: str, fix: str) -> CocError:
    """The CocError of `--coc-bound K` given where no input of the run (`kind`: input, sample) has an f-number
    (`known`: where one is read) to bound its map at: K would not be used (the record said coc_bound null)."""
    return CocError(f"--coc-bound {given:g}: bounds an estimated map at its image's f-number, and no {kind} of this "
                    f"run has one ({known}); it would not be used: {fix}")


def unbounded_note(given: float | None, missing: list[str], total: int, kind: str, shown: int = 10) -> str | None:
    """With `--coc-bound K` given (not a map model's own K, which stays silent): the note naming the `missing` of
    `total` inputs (`kind`: input, sample) that have no f-number, whose maps were used as read, unbounded; else None."""
    if not given or not missing:
        return None
    more = f", and {len(missing) - shown} more" if len(missing) > shown else ""
    return (f"--coc-bound {given:g}: {len(missing)} of {total} {kind}(s) have no f-number, their maps used as read "
            f"(not bounded): {', '.join(missing[:shown])}{more}")


def camera_tally(parts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The `CocSource.tally` of several processes (each scored other samples) as one."""
    total: dict[str, Any] = {"samples": 0, "used_default": dict.fromkeys(CAMERA_OPTIONS, 0),
                             "given_over_metadata": dict.fromkeys(CAMERA_OPTIONS, 0)}
    for part in (p for p in parts if p):
        total["samples"] += part["samples"]
        for what in ("used_default", "given_over_metadata"):
            for key, n in part[what].items():
                total[what][key] += n
    return total


def camera_notes(record: dict[str, Any]) -> list[str]:
    """The report's notes of an fnumber source's `describe()["camera"]` with its tallies: the values that came from
    the defaults, and the metadata values a given one replaced, each with its count of samples."""
    words = {"sensor_width_mm": "sensor width {:g} mm", "focal_length_mm": "focal length {:g} mm",
             "focus_distance_m": "focus distance {:g} m"}
    used = [f"{n} the default {words[k].format(record['defaults'][k])} ({CAMERA_OPTIONS[k]})"
            for k, n in record["used_default"].items() if n]
    notes = [f"--coc fnumber: of {record['samples']} sample(s), " + ", ".join(used)] if used else []
    notes += [f"--coc fnumber: {CAMERA_OPTIONS[k]} {record['given'][k]:g} replaced the metadata's own value in {n} "
              "sample(s)" for k, n in record["given_over_metadata"].items() if n]
    return notes


@dataclass
class CocSource:
    """A chosen CoC source; call it on one image to get its (H, W) map in pixels."""

    kind: str
    model_path: Path | None = None
    device: str = "cpu"
    bound: float | None = None  # K of optics.bound_coc (map and edge only), None: no bound
    camera: dict[str, float] = field(default_factory=dict)  # fnumber: values given over the metadata's (CAMERA_OPTIONS)
    work_side: int | str | None = None  # map: the long side it reads an image at (px or "auto"; None: the image's own)
    blur: float | None = None  # map: how wide its training inputs' blur reads (px; work_side "auto")
    _model: Any = field(default=None, repr=False)
    _last: Any = field(default=None, repr=False)  # (name, rows, image, map): one estimate per image
    # (or band of its rows), for every runner
    _tally: Any = field(default=None, repr=False)  # fnumber: (last name, last image, tally) of the images it served

    @classmethod
    def create(cls, kind: str | None, model_path: Path | None = None, device: str = "cpu",
               bound: float | None = None, camera: Mapping[str, float] | None = None) -> CocSource | None:
        """Check the options and load the map model once; None when no source is asked for. `bound` (--coc-bound):
        K of an estimated map's f-number bound, 0 for none; None: the map model's own `inference.coc_bound`.
        `camera` (fnumber only): sensor_width_mm, focal_length_mm, focus_distance_m as api.coc.camera checked them,
        each used over the sample's metadata value (as deblur's over the EXIF)."""
        check_camera_use(camera, kind)
        try:  # as the CLI and the API check it; here for a caller from Python
            camera = checked_camera(camera or {})
        except ValueError as exc:
            raise CocError(str(exc)) from None
        if kind is None:
            if model_path is not None or bound is not None:
                raise CocError(f"{'--coc-model' if model_path is not None else '--coc-bound'} is given without --coc")
            return None
        if kind not in COC_SOURCES:
            raise CocError(f"--coc: unknown CoC source '{kind}' (known: {', '.join(COC_SOURCES)})"
                           f"{did_you_mean(kind, COC_SOURCES)}")
        if bound is not None and not (0 <= bound < float("inf")):
            raise CocError(f"--coc-bound: expected a fraction of the long side >= 0 (0: no bound), got {bound}")
        if bound is not None and kind not in ("map", "edge"):
            raise CocError(f"--coc-bound bounds an estimated map (--coc map or edge), not --coc {kind}")
        given = None if not bound else float(bound)
        if kind != "map":
            if model_path is not None:
                raise CocError(f"--coc-model is only used with --coc map, not --coc {kind}")
            return cls(kind, None, device, given, camera=dict(camera or {}))
        if model_path is None:
            raise CocError("--coc map needs --coc-model FILE (a model trained with recipes/defocus-map.yaml)")
        from defocuskit.inference.load import load_model

        try:
            method, recipe, model = load_model(Path(model_path), device=device)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise CocError(f"--coc-model {model_path}: {exc}") from None
        if method.output != "defocus_map":
            raise CocError(f"--coc-model {model_path}: a '{method.name}' model, not a defocus-map estimator")
        own = recipe.inference.resolved_bound
        from defocuskit.inference.scale import trained_blur, trained_long_side

        blur = trained_blur(model_path)
        work = map_work_side(f"--coc-model {model_path}", recipe.inference.work_side, trained_long_side(model_path),
                             blur)
        return cls(kind, Path(model_path), device, own if bound is None else given, work_side=work, blur=blur,
                   _model=(method, recipe, model))

    def describe(self, tallies: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """What the reports say of this source; fnumber: the camera given and, with the `tally` of every process,
        how many of the images it served used a default value or had their metadata's replaced by a given one."""
        text = DESCRIPTIONS[self.kind].format(model=self.model_path)
        if self.work_side is not None:
            text += (f"; read at {self.work_side} px on the long side" if isinstance(self.work_side, int) else
                     "; read where each image's blur reads as wide as its training inputs' did") + \
                " (its inference.work_side), the map given back at the image's size"
        if self.bound is not None:
            text += (f"; at f/N at most {self.bound:g} x the long side / N pixels where the f-number is known "
                     "(the thin lens: CoC at f/N = CoC at f/1 / N)")
        entry = {"source": self.kind, "model": str(self.model_path) if self.model_path else None,
                 "description": text, "bound": self.bound,
                 **({"work_side": self.work_side} if self.work_side is not None else {})}
        if self.kind == "fnumber":
            entry["camera"] = {"given": {k: self.camera.get(k) for k in CAMERA_OPTIONS},
                               "defaults": {"sensor_width_mm": optics.DEFAULT_SENSOR_WIDTH_MM,
                                            "focal_length_mm": optics.DEFAULT_FOCAL_LENGTH_MM,
                                            "focus_distance_m": optics.DEFAULT_FOCUS_DISTANCE_M},
                               **(camera_tally(tallies) if tallies is not None else {})}
        return entry

    def tally(self) -> dict[str, Any] | None:
        """fnumber: of the images this process served (each once, however many methods asked), how many used each
        default ("used_default") and how many had a metadata value a given one replaced ("given_over_metadata")."""
        if self.kind != "fnumber":
            return None
        return camera_tally([self._tally[2] if self._tally else None])

    def _count(self, image: np.ndarray, meta: dict[str, Any], name: str, defaults: list[str]) -> None:
        """Count an fnumber image once: the methods of one sample ask for its map in turn with the same array."""
        if self._tally is not None and self._tally[0] == name and self._tally[1] is image:
            return
        tally = self._tally[2] if self._tally else camera_tally([])
        tally["samples"] += 1
        for key in defaults:
            tally["used_default"][key] += 1
        own, own_defaults = optics.camera_of(meta)
        for key, value in self.camera.items():
            tally["given_over_metadata"][key] += int(key not in own_defaults and own[key] != value)
        self._tally = (name, image, tally)

    def bounded(self, coc: np.ndarray, meta: dict[str, Any] | None, long_side: int | None = None) -> np.ndarray:
        """`coc` cut to this source's f-number bound where `meta` gives a positive f_number, else `coc`;
        `long_side`: the photo's (default optics.source_long_side of the map: a band of rows is bounded by its whole
        image's, a training patch by the image it was cut from)."""
        f_number = (meta or {}).get("f_number")
        if self.bound is None or not isinstance(f_number, (int, float)) or not f_number > 0:
            return coc
        side = long_side or optics.source_long_side(meta or {}, *coc.shape[:2])
        return optics.bound_coc(coc, float(f_number), self.bound, side)

    def __call__(self, image: np.ndarray, meta: dict[str, Any] | None = None, coc_png: np.ndarray | None = None,
                 name: str = "image", sensor_px: int | None = None, rows: tuple[int, int] | None = None) -> np.ndarray:
        """The (H, W) float32 CoC map in pixels for a float (H, W, C) image; `name` is used in errors. fnumber:
        `sensor_px` is how many of the image's pixels span the sensor width (deblur: the long side, EXIF's being a
        camera's); default optics.sensor_span_px: the width for the sample's own metadata value, the long side for a
        camera's (--sensor-width given, or the 36 mm default). `rows` (r0, r1): the map of that band of the image's
        rows alone (inference.bands), an estimate made from those rows, as DeblurModel.deblur makes it, with the
        whole image's sensor span and f-number bound."""
        h, w = image.shape[:2]
        r0, r1 = rows or (0, h)
        if self.kind == "oracle":
            if coc_png is None:
                raise CocError(f"--coc oracle: {name} has no coc.png (only synthetic shards carry the true CoC; "
                               "use --coc map, --coc edge or --coc fnumber)")
            coc = np.asarray(coc_png, np.float32)
            if coc.shape != (h, w):
                raise CocError(f"--coc oracle: {name}: coc.png is {coc.shape[1]}x{coc.shape[0]}, the image {w}x{h}")
            return coc[r0:r1]
        if self.kind == "fnumber":
            full = dict(meta or {}, **self.camera, key=name)
            try:
                span = sensor_px or optics.sensor_span_px(meta or {}, h, w, given="sensor_width_mm" in self.camera)
                value = optics.coc_from_metadata(full, span)
            except ValueError as exc:
                raise CocError(f"--coc fnumber: {exc} (give --f-number, or use --coc map)") from None
            self._count(image, meta or {}, name, optics.camera_of(full)[1])
            return np.full((r1 - r0, w), value, np.float32)
        if self._last is not None and self._last[:2] == (name, (r0, r1)) and self._last[2] is image:
            return self.bounded(self._last[3], meta, optics.source_long_side(meta or {}, h, w))
        part = image[r0:r1]
        if self.kind == "edge":
            coc = edge_coc(part)
        else:
            from defocuskit.inference.restore import restore_image
            from defocuskit.inference.scale import read_at_side, side_for

            method, recipe, model = self._model

            def estimate(x: np.ndarray) -> np.ndarray:
                coc = restore_image(method, recipe, model, x, device=self.device, progress=False)[:, :, 0]
                return np.clip(coc, 0.0, None).astype(np.float32)

            coc = read_at_side(estimate, part, side_for(self.work_side, part, self.blur))
        self._last = (name, (r0, r1), image, coc)
        return self.bounded(coc, meta, optics.source_long_side(meta or {}, h, w))
