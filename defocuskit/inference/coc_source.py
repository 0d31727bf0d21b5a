"""Where the circle-of-confusion map for physics data consistency comes from (`--coc`).

- `map`: a trained defocus-map model (`--coc-model FILE`) estimates it from the blurred image.
- `oracle`: the shard's `coc.png` (synthetic data); for studies of the sampler alone: the report says so.
- `fnumber`: one CoC for the whole image from the f-number and the optics in the metadata
  (optics.coc_from_metadata: a background at infinity).
- `edge`: training-free, from the blurred image alone (imaging.blur_estimate.estimate_coc: edge blur by
  re-blurring, Zhuo & Sim 2011, spread edge-aware to every pixel); no model file.

An estimated map (`map`, `edge`) is bounded where the image's f-number N is known: at most K x the long side / N
pixels (imaging.optics.bound_coc), K the map model's `inference.coc_bound` or `--coc-bound K` (0: no bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from defocuskit.config.typed import did_you_mean
from defocuskit.imaging import optics

COC_SOURCES = ("map", "oracle", "fnumber", "edge")

DESCRIPTIONS = {
    "map": "estimated from the blurred image by the defocus-map model {model}",
    "oracle": "ORACLE: the shard's ground-truth coc.png (a study of the sampler alone, not a blind result)",
    "fnumber": "one CoC per image from its f-number: " + optics.COC_FROM_METADATA,
    "edge": "estimated from the blurred image alone, training-free: edge blur by re-blurring (Zhuo & Sim 2011) "
            "spread edge-aware to every pixel (imaging.blur_estimate.estimate_coc)",
}


def edge_coc(image: np.ndarray) -> np.ndarray:
    """The training-free edge estimate (imaging.blur_estimate.estimate_coc) of a float (H, W, 3) or gray (H, W, 1)
    image, gray read as RGB, as every CoC source reads it: the same map from deblur, eval and the Python API."""
    from defocuskit.imaging.blur_estimate import estimate_coc  # OpenCV only when the source is used

    return estimate_coc(np.repeat(image, 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image)


class CocError(ValueError):
    """A CoC source that cannot give a map; the message names the option and the sample or file."""


@dataclass
class CocSource:
    """A chosen CoC source; call it on one image to get its (H, W) map in pixels."""

    kind: str
    model_path: Path | None = None
    device: str = "cpu"
    bound: float | None = None  # K of optics.bound_coc (map and edge only), None: no bound
    _model: Any = field(default=None, repr=False)
    _last: Any = field(default=None, repr=False)  # (name, image id, map): one estimate per image, for every runner

    @classmethod
    def create(cls, kind: str | None, model_path: Path | None = None, device: str = "cpu",
               bound: float | None = None) -> CocSource | None:
        """Check the options and load the map model once; None when no source is asked for. `bound` (--coc-bound):
        K of an estimated map's f-number bound, 0 for none; None: the map model's own `inference.coc_bound`."""
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
            return cls(kind, None, device, given)
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
        return cls(kind, Path(model_path), device, own if bound is None else given, (method, recipe, model))

    def describe(self) -> dict[str, Any]:
        """What the reports say of this source."""
        text = DESCRIPTIONS[self.kind].format(model=self.model_path)
        if self.bound is not None:
            text += (f"; at f/N at most {self.bound:g} x the long side / N pixels where the f-number is known "
                     "(the thin lens: CoC at f/N = CoC at f/1 / N)")
        return {"source": self.kind, "model": str(self.model_path) if self.model_path else None, "description": text,
                "bound": self.bound}

    def bounded(self, coc: np.ndarray, meta: dict[str, Any] | None) -> np.ndarray:
        """`coc` cut to this source's f-number bound where `meta` gives a positive f_number, else `coc`."""
        f_number = (meta or {}).get("f_number")
        if self.bound is None or not isinstance(f_number, (int, float)) or not f_number > 0:
            return coc
        return optics.bound_coc(coc, float(f_number), self.bound, max(coc.shape[:2]))

    def __call__(self, image: np.ndarray, meta: dict[str, Any] | None = None, coc_png: np.ndarray | None = None,
                 name: str = "image") -> np.ndarray:
        """The (H, W) float32 CoC map in pixels for a float (H, W, C) image; `name` is used in errors."""
        h, w = image.shape[:2]
        if self.kind == "oracle":
            if coc_png is None:
                raise CocError(f"--coc oracle: {name} has no coc.png (only synthetic shards carry the true CoC; "
                               "use --coc map, --coc edge or --coc fnumber)")
            coc = np.asarray(coc_png, np.float32)
            if coc.shape != (h, w):
                raise CocError(f"--coc oracle: {name}: coc.png is {coc.shape[1]}x{coc.shape[0]}, the image {w}x{h}")
            return coc
        if self.kind == "fnumber":
            try:
                value = optics.coc_from_metadata(dict(meta or {}, key=name), w)
            except ValueError as exc:
                raise CocError(f"--coc fnumber: {exc} (give --f-number, or use --coc map)") from None
            return np.full((h, w), value, np.float32)
        if self._last is not None and self._last[0] == name and self._last[1] is image:
            return self.bounded(self._last[2], meta)
        if self.kind == "edge":
            coc = edge_coc(image)
        else:
            from defocuskit.inference.restore import restore_image

            method, recipe, model = self._model
            coc = restore_image(method, recipe, model, image, device=self.device, progress=False)[:, :, 0]
            coc = np.clip(coc, 0.0, None).astype(np.float32)
        self._last = (name, image, coc)
        return self.bounded(coc, meta)
