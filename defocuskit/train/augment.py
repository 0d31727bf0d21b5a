"""Crops, augmentation and tensors of one training sample (pure functions of the sample and an RNG).

Crops: a random `image_size` crop at the same place in every member (sharp, blur, coc, blurmask); images smaller
than the crop are first padded by reflection (numpy's "reflect") to the crop size, never dropped.
Augmentation (`data.augment`): one of the 8 flips/90-degree rotations, the same for every member, or with "hflip" a
left-right mirror or none (the releases of RDDM and CycleGAN). With dual-pixel views
(left, right) only the 4 that keep their disparity horizontal (no 90-degree turn), and a transform that
mirrors left and right swaps the two views, so that `left` is always the left half-aperture's view.
Values: uint8 / 255 and uint16 / 65535 to float32 in [0, 1]; `data.channels: 1` gives luminance with
the ITU-R BT.601 weights (0.299, 0.587, 0.114), what OpenCV's and PIL's grayscale conversions use. A gray PNG (a
hand-made shard's) is its own luminance, and RGB with three equal channels for `data.channels: 3`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from defocuskit.config.recipe import DataConfig
from defocuskit.data.metadata import pixel_aligned
from defocuskit.data.reader import sizes_differ
from defocuskit.io.images import to_float
from defocuskit.methods.base import DataKind

BT601 = np.array([0.299, 0.587, 0.114], np.float32)
HFLIP = "hflip"  # data.augment: left-right mirrors only


def _pad_to(arr: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - arr.shape[0]), max(0, size - arr.shape[1])
    if ph == 0 and pw == 0:
        return arr
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="reflect" if min(arr.shape[:2]) > 1 else "edge")


def crop_and_augment(
    images: dict[str, np.ndarray], size: int, augment: bool | str, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The same random `size` crop (reflect-padded if smaller) and dihedral transform (`augment` True), left-right
    mirror ("hflip") or none (False) for every member (members "left" and "right": see the module docstring)."""
    wrong = sizes_differ(images)
    if wrong:
        raise ValueError(wrong)
    images = {k: _pad_to(v, size) for k, v in images.items()}
    h, w = next(iter(images.values())).shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    t = 4 * int(rng.integers(0, 2)) if augment == HFLIP else int(rng.integers(0, 8)) if augment else 0
    views = "left" in images
    if views:
        t &= 6  # identity, 180 degrees, mirror, mirror + 180 degrees: the disparity stays horizontal
    out = {}
    for k, v in images.items():
        v = v[y : y + size, x : x + size]
        if t & 4:
            v = v[:, ::-1]
        out[k] = np.ascontiguousarray(np.rot90(v, t & 3))
    if views and bool(t & 4) != bool(t & 2):  # an odd number of left-right mirrors
        out["left"], out["right"] = out["right"], out["left"]
    return out


def _image(x: np.ndarray, cfg: DataConfig) -> torch.Tensor:
    """An image (H, W[, C]) of any bit depth -> float (C, H, W) in [0, 1], luminance when data.channels is 1; a gray
    image (H, W) is its own luminance, and RGB with three equal channels for data.channels 3 (as inference reads it)."""
    x = to_float(x)
    if x.ndim == 2:
        x = x[..., None] if cfg.channels == 1 else np.repeat(x[..., None], 3, axis=2)
    elif cfg.channels == 1:
        x = (x @ BT601)[..., None]  # ITU-R BT.601 luma weights
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _map_members(images: dict[str, np.ndarray], cfg: DataConfig) -> dict[str, Any]:
    """Kind "map": the same keys for every sample (default collation works on mixed batches)."""
    size = cfg.image_size
    out: dict[str, Any] = {"blur": _image(images["blur"], cfg)}
    coc = images.get("coc")
    out["coc"] = torch.zeros(1, size, size) if coc is None else torch.from_numpy(coc.astype(np.float32))[None]
    mask = images.get("blurmask")  # uint8, 255 = blurred; anything from 128 up counts as blurred
    out["blurmask"] = (torch.zeros(1, size, size) if mask is None
                       else torch.from_numpy((mask >= 128).astype(np.float32))[None])
    out["has_coc"] = torch.tensor(coc is not None)
    out["has_blurmask"] = torch.tensor(mask is not None)
    return out


def to_tensors(sample: dict[str, Any], kind: DataKind, cfg: DataConfig, rng: np.random.Generator,
               views: bool = False) -> dict[str, Any]:
    """A decoded shard sample -> the method's tensors (C, H, W) in [0, 1], coc (1, H, W) in pixels.

    Kind "map" gives every sample blur, coc (zeros where absent), blurmask (1, H, W) in {0, 1} (1 = blurred;
    zeros where absent) and the bool scalars has_coc, has_blurmask. `views` (Method.views) gives every sample
    of a kind with a blurred shot its dual-pixel views left, right (zeros where absent) and the bool has_views.
    Kinds "paired" and "coc" also give the bool aligned (data.metadata.pixel_aligned: rendered, so no flow needed)."""
    if kind == "map":
        names = ["blur"] + [n for n in ("coc", "blurmask") if sample.get(n) is not None]
    else:
        names = {"sharp": ["sharp"], "paired": ["sharp", "blur"], "coc": ["sharp", "blur", "coc"]}[kind]
    views = views and kind in ("paired", "coc")  # the kinds whose samples hold a blurred shot and its reference
    has_views = views and sample.get("left") is not None and sample.get("right") is not None
    if has_views:
        names = [*names, "left", "right"]
    images = crop_and_augment({n: sample[n] for n in names}, cfg.image_size, cfg.augment, rng)
    out: dict[str, Any] = {"key": sample["key"]}
    if kind == "map":
        out.update(_map_members(images, cfg))
    else:
        for n in names:
            out[n] = torch.from_numpy(images[n].astype(np.float32))[None] if n == "coc" else _image(images[n], cfg)
    if views:
        if not has_views:
            out["left"] = out["right"] = torch.zeros_like(out["blur"])
        out["has_views"] = torch.tensor(has_views)
    if kind in ("paired", "coc"):
        out["aligned"] = torch.tensor(pixel_aligned(sample["meta"]))
    f = sample["meta"].get("f_number")
    out["f_number"] = torch.tensor(float("nan") if f is None else float(f), dtype=torch.float32)
    return out
