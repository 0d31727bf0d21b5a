"""Images handed to the Python API: numpy arrays and torch tensors checked, read as float in [0, 1] one band of
rows at a time, and given back in the container, dtype, shape and device they came in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from defocuskit.io.images import MAX_PIXELS_ENV, from_float, max_pixels

Image = np.ndarray | torch.Tensor
FLOAT_TOLERANCE = 1e-3  # float inputs may stray this far outside [0, 1] (resampling, rounding); they are clipped
INT_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass(frozen=True)
class Layout:
    """How an input image came: to give the result back the same way."""

    kind: str  # "numpy" or "tensor"
    shape: tuple[int, ...]
    dtype: Any
    device: Any = None


def to_unit(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    """Integer samples scaled by their full range, floats checked to be in [0, 1]: float32."""
    if arr.size == 0:
        raise ValueError(f"image: empty ({arr.shape})")
    scale = INT_SCALES.get(arr.dtype.newbyteorder("="))  # big-endian ('>u2') too
    if scale is not None:
        return arr.astype(np.float32) / np.float32(scale)
    if arr.dtype.kind != "f":
        raise ValueError(f"image: unsupported dtype {dtype_name} (uint8, uint16, or float in [0, 1])")
    x = arr.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"image: {dtype_name} values hold NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        hint = " (8-bit values as floats? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"image: {dtype_name} values must be in [0, 1]; found [{lo:.6g}, {hi:.6g}]{hint}")
    return np.clip(x, 0.0, 1.0)


def check_pixels(height: int, width: int) -> None:
    """ValueError for an image above the pixel limit (io.images.max_pixels), before any copy is made."""
    limit = max_pixels()
    if limit > 0 and height * width > limit:
        raise ValueError(f"image: {width}x{height} ({height * width / 1e6:.0f} MP) is above the limit of "
                         f"{limit / 1e6:.0f} MP; set ${MAX_PIXELS_ENV} to a larger number (or 0) to deblur it")


def plain_tensor(t: torch.Tensor, name: str = "image") -> torch.Tensor:
    """`t` as a dense tensor that holds its values (a negative or conjugate view resolved); TypeError for a nested,
    sparse or complex tensor and ValueError for a meta one, naming the argument `name` ('image', 'coc=')."""
    arg = name.rstrip("=")
    if t.is_nested:
        raise TypeError(f"{name}: a nested tensor; pass a (C, H, W) or (B, C, H, W) tensor: images of one size "
                        "stacked (torch.stack), images of different sizes one call each")
    if t.layout != torch.strided:
        kind = "sparse" if "sparse" in str(t.layout) else "non-dense"
        raise TypeError(f"{name}: a {kind} tensor (layout {t.layout}); pass {arg}.to_dense()")
    if t.is_meta:
        raise ValueError(f"{name}: a tensor on the 'meta' device holds no values; make it on 'cpu' or a GPU")
    if t.is_complex():
        raise TypeError(f"{name}: a complex tensor ({t.dtype}); pass its real part ({arg}.real) or magnitude "
                        f"({arg}.abs())")
    return t.resolve_neg().resolve_conj()


def read_raw(image: Image) -> tuple[np.ndarray, Layout]:
    """(B, H, W, C) samples of `image` in its own dtype (a view where it can be: no float copy) and its layout
    (numpy HxW / HxWxC, tensor CHW / BCHW); `to_unit` of any slice gives float32 in [0, 1]. A numpy subclass is
    read as the plain array it holds (np.matrix: indexed to 4-D it crashed numpy; memmap)."""
    if isinstance(image, np.ma.MaskedArray):  # its mask would be dropped: the masked samples deblurred as data
        raise TypeError("image: a masked array; its mask is not used: pass image.filled(value) or image.data")
    if isinstance(image, np.ndarray) and type(image) is not np.ndarray:
        image = image.view(np.ndarray)
    if isinstance(image, torch.Tensor):
        image = plain_tensor(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and len(image.shape) >= 2:
        channels_last = isinstance(image, np.ndarray)
        h, w = (image.shape[0], image.shape[1]) if channels_last else (image.shape[-2], image.shape[-1])
        check_pixels(int(h), int(w))
    if isinstance(image, np.ndarray):
        shape = image.shape
        if image.ndim == 2:
            arr = image[None, :, :, None]
        elif image.ndim == 3:
            c = shape[2]
            if c not in (1, 3):
                hint = ("; it looks channels-first (C, H, W): pass image.transpose(1, 2, 0)" if shape[0] in (1, 3)
                        else "; drop the alpha channel: image[..., :3]" if c == 4 else "")
                raise ValueError(f"image: numpy shape {shape} has {c} channels in its last axis; expected (H, W, 1), "
                                 f"(H, W, 3) or (H, W){hint}")
            arr = image[None]
        else:
            raise ValueError(f"image: numpy shape {shape}; expected (H, W, C) with C 1 or 3, or (H, W)")
        _check_dtype(arr, str(image.dtype), shape)
        return arr, Layout("numpy", shape, image.dtype)
    if isinstance(image, torch.Tensor):
        shape = tuple(image.shape)
        if image.dim() not in (3, 4):
            hint = "; a grayscale (H, W) tensor: pass image[None]" if image.dim() == 2 else ""
            raise ValueError(f"image: tensor shape {shape}; expected (C, H, W) or (B, C, H, W){hint}")
        c = shape[-3]
        if c not in (1, 3):
            perm = "permute(2, 0, 1)" if image.dim() == 3 else "permute(0, 3, 1, 2)"
            hint = f"; it looks channels-last: pass image.{perm}" if shape[-1] in (1, 3) else ""
            raise ValueError(f"image: tensor shape {shape} has {c} channels in dim -3; expected 1 or 3 "
                             f"(channels first: (C, H, W) or (B, C, H, W)){hint}")
        t = image.detach()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # float16 / bfloat16 have no numpy twin
        arr = t.cpu().numpy()
        arr = (arr[None] if arr.ndim == 3 else arr).transpose(0, 2, 3, 1)
        _check_dtype(arr, str(image.dtype), shape)
        return arr, Layout("tensor", shape, image.dtype, image.device)
    raise TypeError(f"image: a numpy array or a torch tensor, got {type(image).__name__} "
                    "(a PIL image: np.asarray(img))")


def _check_dtype(arr: np.ndarray, dtype_name: str, given: tuple[int, ...]) -> None:
    """The dtype and size checks of `to_unit` that need no conversion, made before any work; `given`: the shape
    as the caller passed it (for the message)."""
    if arr.size == 0:
        raise ValueError(f"image: empty (shape {tuple(given)})")
    if arr.dtype.newbyteorder("=") not in INT_SCALES and arr.dtype.kind != "f":
        raise ValueError(f"image: unsupported dtype {dtype_name} (uint8, uint16, or float in [0, 1])")


def output_dtype(layout: Layout) -> np.dtype:
    """The numpy dtype the results are stored in before they go back in `layout`."""
    if layout.kind == "numpy":
        return np.dtype(layout.dtype)
    if layout.dtype == torch.uint8:
        return np.dtype(np.uint8)
    if layout.dtype == getattr(torch, "uint16", None):
        return np.dtype(np.uint16)
    return np.dtype(np.float32)


def from_unit(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results in `dtype`: clipped to [0, 1], integers rounded."""
    out = np.clip(out, 0.0, 1.0)
    if dtype.newbyteorder("=") in INT_SCALES:  # in the caller's byte order
        return from_float(out, 8 if dtype.itemsize == 1 else 16).astype(dtype, copy=False)
    return out.astype(dtype)


def give_back(values: np.ndarray, layout: Layout) -> Image:
    """(B, H, W, C) results already in `output_dtype(layout)` back in the layout and device of the input."""
    if layout.kind == "numpy":
        return np.ascontiguousarray(values.reshape(layout.shape))
    t = torch.from_numpy(np.ascontiguousarray(values.transpose(0, 3, 1, 2)))
    t = t[0] if len(layout.shape) == 3 else t
    return t.to(device=layout.device, dtype=layout.dtype)
