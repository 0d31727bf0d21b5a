"""Where the circle-of-confusion map for physics data consistency comes from (`--coc`).

- `map`: a trained defocus-map model (`--coc-model FILE`) estimates it from the blurred image.
- `oracle`: the shard's `coc.png` (synthetic data); for studies of the sampler alone: the report says so.
- `fnumber`: one CoC for the whole image from the f-number and the optics in the metadata
  (optics.coc_from_metadata: a background at infinity).
- `edge`: training-free, from the blurred image alone (imaging.blur_estimate.estimate_coc: edge blur by
  re-blurring, Zhuo & Sim 2011, spread edge-aware to every pixel); no model file.
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


class CocError(ValueError):
    """A CoC source that cannot give a map; the message names the option and the sample or file."""


@dataclass
class CocSource:
    """A chosen CoC source; call it on one image to get its (H, W) map in pixels."""

    kind: str
    model_path: Path | None = None
    device: str = "cpu"
    _model: Any = field(default=None, repr=False)
    _last: Any = field(default=None, repr=False)  # (name, image id, map): one estimate per image, for every runner

    @classmethod
    def create(cls, kind: str | None, model_path: Path | None = None, device: str = "cpu") -> CocSource | None:
        """Check the options and load the map model once; None when no source is asked for."""
        if kind is None:
            if model_path is not None:
                raise CocError("--coc-model is given without --coc map")
            return None
        if kind not in COC_SOURCES:
            raise CocError(f"--coc: unknown CoC source '{kind}' (known: {', '.join(COC_SOURCES)})"
                           f"{did_you_mean(kind, COC_SOURCES)}")
        if kind != "map":
            if model_path is not None:
                raise CocError(f"--coc-model is only used with --coc map, not --coc {kind}")
            return cls(kind, None, device)
        if model_path is None:
            raise CocError("--coc map needs --coc-model FILE (a model trained with recipes/defocus-map.yaml)")
        from defocuskit.inference.load import load_model

        try:
            method, recipe, model = load_model(Path(model_path), device=device)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise CocError(f"--coc-model {model_path}: {exc}") from None
        if method.output != "defocus_map":
            raise CocError(f"--coc-model {model_path}: a '{method.name}' model, not a defocus-map estimator")
        return cls(kind, Path(model_path), device, (method, recipe, model))

    def describe(self) -> dict[str, Any]:
        """What the reports say of this source."""
        text = DESCRIPTIONS[self.kind].format(model=self.model_path)
        return {"source": self.kind, "model": str(self.model_path) if self.model_path else None, "description": text}

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
            return self._last[2]
        if self.kind == "edge":  # imported here, as restore below: OpenCV only when the source is used
            from defocuskit.imaging.blur_estimate import estimate_coc

            coc = estimate_coc(image)
            self._last = (name, image, coc)
            return coc
        from defocuskit.inference.restore import restore_image

        method, recipe, model = self._model
        coc = restore_image(method, recipe, model, image, device=self.device, progress=False)[:, :, 0]
        coc = np.clip(coc, 0.0, None).astype(np.float32)
        self._last = (name, image, coc)
        return coc
