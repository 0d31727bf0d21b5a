"""The low-pass of an image batch, and a target whose low-pass is another image's: a loss on it learns the detail a
restoration recovers and leaves the light of the input as it is (exposure, tone, glare)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel (radius ceil(3 sigma), replicate padding)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def with_lowpass_of(x: torch.Tensor, source: torch.Tensor, sigma: float) -> torch.Tensor:
    """`x` (B, C, H, W) with its low-pass (a Gaussian of `sigma` px) replaced by `source`'s: x - G(x) + G(source)."""
    if x.shape != source.shape:
        raise ValueError(f"with_lowpass_of: shapes differ, {tuple(x.shape)} and {tuple(source.shape)}")
    return x - gaussian_blur(x, sigma) + gaussian_blur(source, sigma)
