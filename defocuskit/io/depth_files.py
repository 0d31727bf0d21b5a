"""Depth-map files as their samples: 8/16-bit images as stored, float TIFFs and NumPy `.npy` arrays as their values.

A depth estimator's output is a float map of any range (metres, or a relative or inverse depth such as 0 to 300);
`read_image` reads float samples as 0 to 1 (photos), so the depth maps are read here, keeping the values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defocuskit.io.formats import ImageError
from defocuskit.io.image_headers import judge_size, max_pixels
from defocuskit.io.images import read_image_channels

ARRAY_EXTENSIONS = (".npy",)  # depth arrays read as their values (besides the image formats)


def is_array_file(path: str | Path) -> bool:
    """True for a file read as a NumPy array (`.npy`), not as an image."""
    return Path(path).suffix.lower() in ARRAY_EXTENSIONS


def read_depth_file(path: str | Path) -> np.ndarray:
    """A depth map's samples (H, W, C): uint8 / uint16 images as stored, float32 values for a float TIFF (C of its
    channels) and for a `.npy` array (C = 1). ImageError naming the file: unreadable, NaN or inf, or (`.npy`) not a
    2-D (or (H, W, 1)) array of integers or floats."""
    if is_array_file(path):
        return read_npy(path)
    return read_image_channels(path, float_values=True)


def read_npy(path: str | Path) -> np.ndarray:
    """A `.npy` depth array as float32 (H, W, 1) values (no pickled objects): its shape is judged from the header
    first, against the pixel limit images have (`max_pixels`)."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(path, f"not a readable .npy array (corrupt, truncated, empty or holding Python objects: "
                               f"{str(exc) or type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray):
        raise ImageError(path, "not a .npy array (an .npz archive?): save one depth array with numpy.save")
    shape, dtype = arr.shape, arr.dtype
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)) or dtype.kind not in "iuf":
        raise ImageError(path, f"a depth array of shape {shape} and type {dtype}: a 2-D (H, W) or (H, W, 1) array of "
                               "integers or floats is read")
    if min(shape[:2]) == 0:
        raise ImageError(path, f"an empty depth array (shape {shape})")
    if (limit := max_pixels()) > 0:
        judge_size((shape[1], shape[0]), path, limit)
    try:
        values = np.array(arr, dtype=np.float32).reshape(shape[0], shape[1], 1)
    except (OSError, ValueError) as exc:
        raise ImageError(path, f"cannot read the array ({exc})") from None
    if not np.isfinite(values).all():
        raise ImageError(path, "the depth array holds NaN or inf")
    return values
