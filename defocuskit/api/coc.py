"""Where `DeblurModel.deblur` gets each image's circle-of-confusion map: `coc=` (a map in pixels, a defocus-map model
or "edge") or `f_number=` (one CoC per image from the thin lens), checked once per call and cut band by band."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from defocuskit.data.metadata import F_NUMBER_RANGE
from defocuskit.data.postprocess import resize_area, size_ratio
from defocuskit.imaging import optics
from defocuskit.inference.arrays import Image, plain_tensor
from defocuskit.inference.keywords import real


@runtime_checkable
class MapModel(Protocol):
    """What the CoC sources use of a DeblurModel given as `coc=`: its kind, bound and per-band estimate."""

    method: str
    output: str
    coc_bound: float | None

    def _estimate(self, x: np.ndarray) -> np.ndarray: ...


def coc_sources(coc: Image | MapModel | None, f_number: float | None, size: tuple[int, int, int],
                bound: float | None = None, lens: dict[str, float] | None = None
                ) -> list[float | np.ndarray | MapModel | tuple | None]:
    """Per image of a (B, H, W) batch where its CoC map comes from: a constant (pixels, from `f_number` and the
    camera `lens`, see camera()), an (H, W) float32 map, a defocus-map model or "edge" to run on each band (as a
    tuple with the f-number, the long side and the bound K where the map is bounded), or None without a source."""
    n, h, w = size
    if lens and (coc is not None or f_number is None):
        raise ValueError(f"{next(iter(lens))}= is for the thin-lens CoC of f_number= (without coc=); "
                         "here it would not be used")
    estimated = isinstance(coc, (MapModel, str))
    if coc is not None and f_number is not None and not estimated:
        raise ValueError("give coc= or f_number=, not both (f_number= beside a defocus-map model or \"edge\" bounds "
                         "its map)")
    if (bound := real("coc_bound", bound)) is not None and not (estimated and 0 <= bound < float("inf")):
        raise ValueError(f"coc_bound={bound!r}: K >= 0 (0: none) of an estimated map's bound, beside coc= a "
                         "defocus-map model or \"edge\"")
    if coc is None and f_number is None:
        return [None] * n
    if f_number is not None:
        lens_f_number(f_number)
    if coc is None:
        meta = dict(lens or {}, f_number=lens_f_number(f_number), key="image")  # a camera's: across the long side
        return [float(optics.coc_from_metadata(meta, optics.sensor_span_px(meta, h, w, given=True)))] * n
    if isinstance(coc, str) and coc != "edge":
        raise ValueError(f"coc={coc!r}: the only named source is \"edge\" (a map, or a defocus-map model)")
    if isinstance(coc, MapModel) and coc.output != "defocus_map":
        raise ValueError(f"coc=: a '{coc.method}' model, not a defocus-map model (recipes/defocus-map.yaml)")
    if estimated:
        k = (coc.coc_bound if isinstance(coc, MapModel) else None) if bound is None else (bound or None)
        if f_number is not None and k is not None:  # its map bounded at the image's f-number
            return [(coc, lens_f_number(f_number), max(h, w), k)] * n
        if f_number is not None:  # no bound: the f-number was checked, then dropped
            raise ValueError(f"f_number={f_number!r}: beside coc= it bounds the map by K (coc_bound=, or a defocus-map "
                             "model's own coc_bound), and none is set here; leave it out, or give coc_bound=K")
        if bound:  # K with no f-number to bound at
            raise ValueError(f"coc_bound={bound!r}: bounds the map at the image's f_number=, and none is given; "
                             "give f_number=, or leave it out")
        return [coc] * n
    if isinstance(coc, torch.Tensor):
        arr = plain_tensor(coc, "coc=").detach().float().cpu().numpy()
    elif isinstance(coc, np.ndarray):  # strings failed inside numpy, complex lost its imaginary part with a warning
        if isinstance(coc, np.ma.MaskedArray) or coc.dtype.kind not in "biuf":
            what = "a masked array (its mask would be lost: pass coc.filled(value))" if isinstance(
                coc, np.ma.MaskedArray) else f"an array of dtype {coc.dtype}"
            raise TypeError(f"coc=: a map of numbers (CoC diameters in pixels), got {what}")
        arr = coc.astype(np.float32)
    else:
        raise TypeError(f"coc=: a numpy array, a torch tensor or a defocus-map DeblurModel, got {type(coc).__name__}")
    if arr.ndim == 2:
        per = arr[None]
    elif arr.ndim == 3 and arr.shape[0] == 1:
        per = arr
    elif arr.ndim == 3 and arr.shape[2] == 1:
        per = arr[:, :, 0][None]
    elif arr.ndim == 4 and arr.shape[1] == 1:
        per = arr[:, 0]
    else:
        raise ValueError(f"coc=: shape {arr.shape}; expected (H, W), (1, H, W) or (B, 1, H, W)")
    if per.shape[1:] != (h, w) or per.shape[0] not in (1, n):
        raise ValueError(f"coc=: shape {arr.shape} does not fit {n} image(s) of {h}x{w} (H x W)")
    if not np.isfinite(per).all() or per.min() < 0:
        raise ValueError("coc=: the map must be finite and >= 0 (circle-of-confusion diameters in pixels)")
    return [per[i if per.shape[0] > 1 else 0] for i in range(n)]


def lens_f_number(f_number: float) -> float:
    """`f_number` as a float; ValueError where no lens has it (NaN and inf too: inf made every CoC zero)."""
    low, high = F_NUMBER_RANGE
    if not low <= real("f_number", f_number) <= high:
        raise ValueError(f"f_number={f_number!r}: not an f-number a lens has (f/{low:g} to f/{high:g})")
    return float(f_number)


def coc_band(source: float | str | np.ndarray | MapModel | tuple | None, band: np.ndarray, r0: int, r1: int
              ) -> np.ndarray | None:
    """The (h, w) CoC map of the band of rows r0:r1 (floats `band`) from its source."""
    if source is None:
        return None
    if isinstance(source, tuple):  # (map model or "edge", f-number, the whole image's long side, K): bounded
        estimate, f_number, long_side, bound = source
        return optics.bound_coc(coc_band(estimate, band, r0, r1), f_number, bound, long_side)
    if isinstance(source, str):  # "edge": gray read as RGB, as deblur and eval read it
        from defocuskit.inference.coc_source import edge_coc

        return edge_coc(band)
    if isinstance(source, MapModel):
        return source._estimate(band)
    if isinstance(source, np.ndarray):
        return source[r0:r1]
    return np.full(band.shape[:2], source, np.float32)


def work_source(source: float | str | np.ndarray | MapModel | tuple | None, shape: tuple[int, int],
                size: tuple[int, int]) -> float | str | np.ndarray | MapModel | tuple | None:
    """A `coc_sources` entry of an image of `shape` (H, W) for that image at `size` (width, height, as work_side
    deblurs it): a constant or a map in the smaller image's pixels, a bounded estimate with its long side; a model or
    "edge" as it is (it estimates from the smaller image)."""
    ratio = size_ratio(shape[0], shape[1], size)  # as ingest's --max-side scales coc.png
    if isinstance(source, tuple):
        estimate, f_number, _, bound = source
        return estimate, f_number, max(size), bound
    if isinstance(source, np.ndarray):
        return resize_area(source, size) * np.float32(ratio)
    if isinstance(source, (int, float)):
        return float(source) * ratio
    return source
