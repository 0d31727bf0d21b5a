"""The public Python API: `defocuskit.load(...)` gives a DeblurModel that deblurs numpy images and torch tensors.

    import defocuskit
    model = defocuskit.load("runs/nafnet-tiny/model.safetensors")   # a model file, a save_pretrained folder, a Hub id
    sharp = model.deblur(image)   # numpy (H, W, C) / (H, W): uint8, uint16, float in [0, 1]; (B)CHW tensors

Images come back in the container, dtype, shape and (tensors) device they came in.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defocuskit.api.checks import check_token, sampler_text
from defocuskit.api.coc import coc_band as _coc_band
from defocuskit.api.coc import coc_sources as _coc_sources
from defocuskit.api.coc import lens_f_number as _lens_f_number
from defocuskit.api.coc import work_source as _work_source
from defocuskit.api.hub_layout import HubLayout
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.data.postprocess import max_side_size
from defocuskit.imaging import optics
from defocuskit.imaging.focus_gate import focus_gate as gated
from defocuskit.imaging.focus_gate import gate_and_map, resolve_smooth
from defocuskit.inference.arrays import (
    Image,
    from_unit,
    give_back,
    output_dtype,
    read_raw,
    to_unit,
)
from defocuskit.inference.bands import restore_in_bands
from defocuskit.inference.coc_source import checked_camera as _camera
from defocuskit.inference.coc_source import map_work_side
from defocuskit.inference.ensemble import check_ensemble
from defocuskit.inference.keywords import real, tiling_keywords, whole
from defocuskit.inference.load import load_model
from defocuskit.inference.release import import_to_temporary
from defocuskit.inference.restore import (
    resolve_sampler,
    restore_in_channels,
    sampler_settings,
)
from defocuskit.inference.scale import (
    API_REMEDY,
    own_work_side,
    read_at_side,
    scale_note,
    side_for,
    trained_blur,
    trained_long_side,
    work_side_restore,
)
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io import hub
from defocuskit.io.devices import resolve_device
from defocuskit.io.paths import path_argument

# ------------------------------------------------------------------------------------ the model

class DeblurModel(HubLayout):
    """An exported defocuskit model, loaded and ready: `deblur` images (or `coc_map` for a defocus-map model),
    `save_pretrained` / `push_to_hub` in the Hub layout (api.hub_layout). Build it with `defocuskit.load`."""

    def __init__(self, model_file: str | Path, *, device: str = "auto", config: dict[str, Any] | None = None,
                 source: str | None = None, keep: Any = None):
        self._keep = keep  # what must live as long as the model (the temporary folder of an imported checkpoint)
        self.device = resolve_device(device, "device=")
        self.path = Path(model_file)
        self.source = source or str(self.path)
        self._state = hub.file_state(self.path)  # before reading: the file this model is, for save_pretrained
        self._method, self._recipe, self._net = load_model(self.path, device=self.device)
        if config is not None and config.get("method") != self._method.name:
            raise ValueError(f"{self.source}: config.json names a '{config.get('method')}' model, but "
                             f"{self.path.name} holds a '{self._method.name}' model")
        self._saved = config or {}  # a save_pretrained folder's config.json: eval rows, datasets, license carry over
        self._default = self._recipe.sampler.resolved()
        self._trained = trained_long_side(self.path)  # the training images' long side (px), where recorded
        self._blur = trained_blur(self.path)  # how wide its training inputs' blur reads (px), where recorded
        self._map_side = (map_work_side(self.source, self._recipe.inference.work_side, self._trained, self._blur)
                          if self.output == "defocus_map" else None)  # the long side a map model reads images at

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs: Any) -> DeblurModel:
        """The same as `defocuskit.load(source, ...)`."""
        return load(source, **kwargs)

    def __repr__(self) -> str:
        return f"DeblurModel(method={self.method!r}, source={self.source!r}, device={self.device!r})"

    @property
    def method(self) -> str:
        """The method's name (hidd, rddm, nafnet, defocus-map, ...)."""
        return self._method.name

    @property
    def recipe(self) -> dict[str, Any]:
        """The resolved training recipe, as plain data."""
        return recipe_to_dict(self._recipe)

    @property
    def output(self) -> str:
        """"image" (deblur), or "defocus_map" (coc_map: a circle-of-confusion estimator)."""
        return self._method.output

    @property
    def channels(self) -> int:
        """The channels the network was trained on (1: colour images go through channel by channel)."""
        return int(self._recipe.data.channels)

    @property
    def focus_gate(self) -> float | None:
        """The model's own focus gate in pixels (its recipe's inference.focus_gate: `deblur` weighs its change by a CoC
        map unless told focus_gate=0), or None."""
        return self._recipe.inference.focus_gate

    @property
    def coc_bound(self) -> float | None:
        """A defocus-map model's f-number bound (its recipe's inference.coc_bound): at f/N its map reads at most
        coc_bound x the image's long side / N pixels where the f-number is given (imaging.optics.bound_coc); or None."""
        return self._recipe.inference.resolved_bound

    @property
    def work_side(self) -> int | str | None:
        """The long side the model deblurs an image at unless told work_side= (its recipe's inference.work_side:
        "auto", "trained" or pixels; a defocus-map model: where it reads an image's map, given back at the image's
        size), or None: the image's own."""
        return self._recipe.inference.work_side

    @property
    def sampler(self) -> dict[str, Any]:
        """The default sampler settings as they run (what `deblur` uses without sampler options)."""
        return self.sampler_info()["settings"]

    @property
    def nfe(self) -> int:
        """Network evaluations per tile with the default sampler."""
        return self.sampler_info()["nfe"]

    def sampler_info(self, *, sampler: str | None = None, steps: int | None = None, **settings: Any) -> dict[str, Any]:
        """The sampler as `deblur` with these options would run it: settings, nfe, needs (and timesteps where set)."""
        return sampler_settings(self._sampler_cfg(sampler, steps, settings), self._recipe.objective)

    def _sampler_cfg(self, sampler: str | None, steps: int | None, settings: dict[str, Any]) -> Any:
        if sampler is None and steps is None and not settings:
            return self._default
        cfg = self._recipe.sampler
        known = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
        listing = ", ".join(sorted(known)) or "none"
        for key, value in settings.items():
            if key not in known:
                raise ValueError(f"{key}={value!r}: the '{self.method}' sampler has no setting '{key}' "
                                 f"(known: {listing})")
        if (steps := whole("steps", steps)) is not None and "steps" not in known:
            raise ValueError(f"steps={steps}: the '{self.method}' sampler has no 'steps' setting (known: {listing})")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be positive, got {steps}")
        if sampler is not None and "name" not in known:
            raise ValueError(f"sampler={sampler!r}: the '{self.method}' model has no named samplers")
        sets = [f"sampler.{k}={sampler_text(k, v)}" for k, v in settings.items()]
        return resolve_sampler(self._recipe, steps, name=sampler, sets=sets).resolved()

    def deblur(self, image: Image, *, steps: int | None = None, sampler: str | None = None, seed: int = 0,
               tile: int | None = None, overlap: int | None = None, max_tile_pixels: int | None = None,
               batch: int | None = None, coc: Image | DeblurModel | str | None = None, f_number: float | None = None,
               sensor_width_mm: float | None = None, focal_length_mm: float | None = None,
               focus_distance_m: float | None = None, coc_bound: float | None = None, focus_gate: float | None = None,
               ensemble: int = 1, progress: bool = False, gate_smooth: float | None = None,
               work_side: int | str | None = None, **sampler_settings: Any) -> Image:
        """Deblur `image`; returns the same container type, dtype, shape and device (integers rounded, floats clipped
        to [0, 1]).

        `image`: numpy (H, W, 3), (H, W, 1) or (H, W) as uint8, uint16 or float in [0, 1]; a torch tensor
        (C, H, W) or (B, C, H, W) (channels always in dim -3), float in [0, 1] or uint8. A batch is deblurred
        image by image, each as a single call would. `steps`, `sampler` (a name) and any sampler setting as a
        keyword (`zeta=0.5`) change the sampler, checked like `--set sampler.KEY=VALUE`. A sampler that
        needs a circle-of-confusion map takes `coc`: a map in pixels ((H, W), (1, H, W) or (B, 1, H, W)) or a
        defocus-map DeblurModel, "edge" (training-free, imaging.blur_estimate), or `f_number` (one CoC per image:
        the thin lens's of a background at infinity, optics.coc_from_metadata, for the camera of `sensor_width_mm`
        (the camera's sensor width, spanned by the image's long side, portrait or landscape, as deblur's
        --sensor-width; 1 to 100; default 36, full frame: an APS-C or phone image then gets a CoC too small by its
        crop factor), `focal_length_mm` (1 to 2000; default 50) and
        `focus_distance_m` (0.01 to 10000, beyond the focal length; default 2)); `f_number` beside a defocus-map
        model bounds its map (`coc_map`), and `coc_bound` K (as
        `--coc-bound`; 0: none; None: a map model's own) bounds a map model's or "edge" to K x the long side / N (an
        `f_number` with no K, or a K without `f_number`, would not be used: refused).
        `focus_gate` (pixels) weighs the model's change by the `coc` map, min(1, |CoC| / focus_gate) per pixel
        (imaging.focus_gate): what the map reads as in focus is returned as given but for the change's low-pass (a
        Gaussian of `gate_smooth` px, default 16, kept everywhere; 0: returned exactly as given; refused where no gate
        runs); not given, the model's own (its recipe's inference.focus_gate, by the "edge" estimate where no `coc` or
        `f_number` is given; `model.focus_gate`); 0: no gate. `ensemble` 4 or 8
        averages the outputs for the image's flips (and transposes), turned back (inference.ensemble). `tile`,
        `overlap`, `max_tile_pixels`, `batch` (tiles per pass) default to inference.restore.restore_image's (a
        convolutional model runs whole images within a memory budget); `seed` seeds the sampler noise. An image above
        $DEFOCUSKIT_BAND_PIXELS (default about 33.5 MP) is restored in bands of rows with 64 rows of context
        each side (defocuskit.inference.bands), so no float copy of it is made; band k draws noise from seed + k.
        `work_side` (pixels; "trained": the training images' long side, `train_long_side_px`; "auto": where the
        image's blur reads as wide as the training inputs', inference.scale.blur_matched_side): a larger image is
        deblurred at that long side (CoC map and gate there, a `coc` map shrunk with it) and given back at its own
        size, the model's change upsampled onto it (as `deblur --work-side`; a float copy of the image is made); not
        given, the model's own (`model.work_side`, its recipe's inference.work_side); 0: the image's own size.
        An image deblurred at over twice the training images' long side gets a UserWarning (inference.scale).
        """
        if self.output != "image":
            raise ValueError(f"this '{self.method}' model estimates circle-of-confusion maps, not sharp images: "
                             "use model.coc_map(image)")
        cfg = self._sampler_cfg(sampler, steps, sampler_settings)
        needs_coc = "coc" in cfg.needs()
        raw, layout = read_raw(image)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed= must be an integer, got {seed!r}")
        check_ensemble(whole("ensemble", ensemble))
        options = tiling_keywords(tile, overlap, max_tile_pixels, batch, progress)  # judged before any work
        has_map = coc is not None or f_number is not None
        focus_gate, gate_smooth = real("focus_gate", focus_gate), real("gate_smooth", gate_smooth)
        if gate_smooth is not None and not 0 <= gate_smooth < math.inf:  # NaN too, used by a gate or not
            raise ValueError(f"gate_smooth= must be a number of pixels >= 0 (the focus gate's smooth_px), got "
                             f"{gate_smooth}")
        focus_gate, own_map = gate_and_map(focus_gate, self.focus_gate, has_map, needs_coc)  # a bad value fails here
        coc = own_map or coc
        gate_smooth = resolve_smooth(gate_smooth, focus_gate, "gate_smooth=", "focus_gate=")  # given, no gate: refused
        if not needs_coc and focus_gate is None and (coc is not None or f_number is not None):
            given = "coc" if coc is not None else "f_number"
            raise ValueError(f"{given}= is for samplers that need a circle-of-confusion map (or focus_gate=); the "
                             f"'{self.method}' model with these settings does not use one")
        if (needs_coc or focus_gate is not None) and coc is None and f_number is None:
            what = (f"the '{self.method}' model with these sampler settings needs" if needs_coc
                    else "focus_gate= needs")
            raise ValueError(f"{what} a circle-of-confusion map: pass coc= (a map in pixels, a defocus-map model "
                             "from defocuskit.load, or \"edge\") or f_number=")
        lens = _camera({"sensor_width_mm": sensor_width_mm, "focal_length_mm": focal_length_mm,
                        "focus_distance_m": focus_distance_m})
        sources = _coc_sources(coc, f_number, raw.shape[:3], coc_bound, lens)
        dtype = output_dtype(layout)
        work, side_note = own_work_side(work_side, self.work_side, self._trained, self._blur, self.source, "work_side=")
        if side_note:  # its recipe's work side needs what the file does not record
            warnings.warn(side_note, UserWarning, stacklevel=2)
        size = max_side_size(*raw.shape[1:3], work) if work != "auto" else None  # (width, height) deblurred at
        note = scale_note("image", max(size or raw.shape[1:3]), self._trained, API_REMEDY) if work != "auto" else None
        if note:
            warnings.warn(note, UserWarning, stacklevel=2)

        def run(source: Any, band: np.ndarray, index: int, r0: int, r1: int) -> np.ndarray:
            coc_band = _coc_band(source, band, r0, r1)
            out = self._restore(band, cfg, coc_band if needs_coc else None, seed=seed + index, ensemble=ensemble,
                                **options)
            return out if focus_gate is None else gated(band, out, coc_band, focus_gate, gate_smooth)

        if size is None and work != "auto":
            banded = _banded(raw, layout, lambda i, *band: run(sources[i], *band), lambda y: from_unit(y, dtype))
            return give_back(banded, layout)
        outs = []
        for x, source in zip(raw, sources):
            full = to_unit(x, str(layout.dtype))
            side = side_for(work, full, self._blur)  # "auto": where its blur reads as the training inputs'
            small = max_side_size(*full.shape[:2], side)
            small = source if small is None else _work_source(source, full.shape[:2], small)  # in its pixels
            outs.append(from_unit(work_side_restore(lambda s, small=small: restore_in_bands(
                s, lambda a: a, lambda *band: run(small, *band), lambda y: y), full, side), dtype))
        return give_back(np.stack(outs), layout)

    def coc_map(self, image: Image, *, f_number: float | None = None, tile: int | None = None,
                overlap: int | None = None, max_tile_pixels: int | None = None, batch: int | None = None,
                progress: bool = False) -> Image:
        """A defocus-map model's circle-of-confusion map of `image`, in pixels, float32: (H, W) numpy for a numpy
        image; for a tensor (1, H, W) or (B, 1, H, W) on its device. `f_number`: the shot's, which cuts the map to
        the model's `coc_bound` x the long side / f_number (refused for a model without a bound)."""
        if self.output != "defocus_map":
            raise ValueError(f"this '{self.method}' model deblurs images: use model.deblur(image); coc_map needs a "
                             "defocus-map model (recipes/defocus-map.yaml)")
        if f_number is not None and _lens_f_number(f_number) and self.coc_bound is None:  # was checked, then dropped
            raise ValueError(f"f_number={f_number!r}: bounds the map by the model's coc_bound, and this "
                             f"'{self.method}' model has none (its recipe's inference.coc_bound); leave it out")
        raw, layout = read_raw(image)
        options = tiling_keywords(tile, overlap, max_tile_pixels, batch, progress)
        maps = _banded(raw, layout, lambda i, band, index, r0, r1: self._estimate(band, **options)[:, :, None],
                       lambda y: y)[..., 0]
        if f_number is not None:
            maps = optics.bound_coc(maps, _lens_f_number(f_number), self.coc_bound, max(maps.shape[1:]))
        if layout.kind == "numpy":
            return maps[0]
        t = torch.from_numpy(maps[:, None])
        return (t[0] if len(layout.shape) == 3 else t).to(layout.device)

    def _restore(self, x: np.ndarray, cfg: Any, coc: np.ndarray | None, *, seed: int = 0, progress: bool = False,
                 ensemble: int = 1, **tiling: int | None) -> np.ndarray:
        """One (H, W, C) float image through restore_in_channels: gray in, gray out (a colour model sees RGB)."""
        options = TilingOptions(**{k: v for k, v in tiling.items() if v is not None})  # else the defaults
        return restore_in_channels(self._method, self._recipe, self._net, x, tiling=options, seed=seed,
                                   device=self.device, progress=progress, sampler_cfg=cfg, coc=coc, ensemble=ensemble)

    def _estimate(self, x: np.ndarray, **options: Any) -> np.ndarray:
        """The (H, W) float32 CoC map (pixels, >= 0) of one float (H, W, C) image by this defocus-map model, read at
        its work side where its recipe sets one (`work_side`), given back at the image's size."""
        def read(image: np.ndarray) -> np.ndarray:
            out = self._restore(image, self._default, None, **options)[:, :, 0]
            return np.clip(out, 0.0, None).astype(np.float32)

        return read_at_side(read, x, side_for(self._map_side, x, self._blur))


def _banded(raw: np.ndarray, layout: Any, run: Any, store: Any) -> np.ndarray:
    """(B, H, W, C_out) results of the (B, H, W, C) samples `raw`, each image restored band by band
    (inference.bands): `run(image index, floats, band index, read_top, read_bottom)`, `store(kept floats)`;
    one image is not copied again to stack it."""
    parts = [restore_in_bands(x, lambda a: to_unit(a, str(layout.dtype)),
                              lambda band, index, r0, r1, i=i: run(i, band, index, r0, r1), store)
             for i, x in enumerate(raw)]
    return parts[0][None] if len(parts) == 1 else np.stack(parts)


def load(source: str | Path, *, method: str | None = None, device: str = "auto", revision: str | None = None,
         token: str | bool | None = None, cache_dir: str | Path | None = None) -> DeblurModel:
    """Load a model: a `.safetensors` model file, a folder written by save_pretrained, or (where no local path has
    that name) a Hub repo id (`owner/name`, at `revision`, fetched with huggingface_hub into its cache); with
    `method=`, a published checkpoint (.pth) of that ported method, imported into a temporary model file.
    `device`: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps."""
    if not isinstance(source, (str, Path)):
        raise TypeError(f"load: a path or a Hub repo id, got {type(source).__name__}")
    if isinstance(source, str) and not source.strip():
        raise ValueError("load: an empty name; give a model file, a save_pretrained folder or a Hub repo id")
    if cache_dir is not None:  # "" downloaded into the working folder
        cache_dir = path_argument("cache_dir", cache_dir, "the huggingface_hub cache folder")
    check_token(token)
    if isinstance(revision, str) and not revision.strip():  # was fetched as the empty revision, or refused for a file
        raise ValueError("load: revision= is an empty name; give a branch, tag or commit of the Hub repo, or leave it "
                         "out")
    if method is not None:  # as `defocuskit import-weights`
        model_file, folder = import_to_temporary(method, source)
        return DeblurModel(model_file, device=device, source=str(source), keep=folder)
    model_file, config = hub.resolve_model(source, revision=revision, token=token, cache_dir=cache_dir)
    return DeblurModel(model_file, device=device, config=config, source=str(source))
