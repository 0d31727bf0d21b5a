"""Defocus-map estimator for small budgets: a few dilated 3x3 convolutions (context aggregation in the manner of
Yu & Koltun 2016) on hand-made blur features, regressing the circle of confusion.

Why it exists: SegFormer (`models/defocus_map.py`) learns nothing within the demo's CPU minutes (a constant map,
per-image correlation about 0 on the synthetic test split), while blur is a local property that a few
convolutions can read from the right input (docs/benchmarks.md, "The defocus map redesigned (issue 20)").

Features (`features`):
- "bands" (the default): the log local energy of five difference-of-Gaussians bands of the luminance (Gaussian
  sigmas 0.5, 1, 2, 4, 8 px; energy averaged by a Gaussian window of sigma 4 px). Defocus removes the fine bands
  first and the coarse ones as the CoC grows, so how the energy falls from band to band is the blur, at every
  CoC up to about 16 px; a contrast change only moves all the bands together. A ridge regression on these
  five numbers per pixel already beats the network on the former input (correlation +0.49 against +0.33).
- "contrast": the image minus its 7x7 mean, times 4 (the former input). High-pass at about 7 px, it leaves
  almost nothing of an edge blurred by more than 4 px, so 5 px and 10 px of CoC look alike (flat).

Body: the features are averaged down by `downsample` (the CoC map is smooth; 4 costs a 16th of the
convolutions), a 3x3 convolution to `width` channels, one block per entry of `dilations`, a 1x1 head, and the
logits upsampled bilinearly to the input size. With `residual` each block is x + ReLU(GroupNorm(conv(x))),
otherwise a plain conv-ReLU stack (the former layout, which `residual: false`, `features: contrast`,
`downsample: 1` reproduce weight for weight).

The interface is `defocus_map.MapEstimator`'s (forward, blur_logit, maps, coc_scale, has_blur_head), plus
`multiple` (1: any size; the input is padded to the downsampling factor inside).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.defocus_map import MapEstimator
from defocuskit.models.lowpass import gaussian_blur

FEATURES = ("bands", "contrast")
CONTRAST_WINDOW = 7  # px: the local mean taken away from the input ("contrast")
CONTRAST_GAIN = 4.0  # local contrast of natural images is small; scaled towards unit range
BAND_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)  # px: band k is G(s_{k-1}) - G(s_k) of the luminance (s_0 = 0)
ENERGY_WINDOW = 4.0  # px: sigma of the Gaussian that averages each band's squared value
ENERGY_FLOOR = 1e-3  # luminance units: the band amplitude below which a region counts as flat (noise floor)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as train/augment.py's one-channel images
GROUPS = 4  # GroupNorm groups of the residual blocks (a divisor of width is used)


def local_contrast(rgb: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """rgb minus its window x window box mean (replicate padding), times CONTRAST_GAIN."""
    r = window // 2
    mean = F.avg_pool2d(F.pad(rgb, (r, r, r, r), mode="replicate"), window, stride=1)
    return CONTRAST_GAIN * (rgb - mean)


def band_energies(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 5, H, W): per band of BAND_SIGMAS, (log(local energy + ENERGY_FLOOR^2) / 2 + 4.5) / 3, which is
    about -0.8 on a flat region and 0.7 on strong texture."""
    y = (rgb * rgb.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    out, finer = [], y
    for sigma in BAND_SIGMAS:
        coarser = gaussian_blur(y, sigma)
        energy = gaussian_blur((finer - coarser).square(), ENERGY_WINDOW)
        out.append((0.5 * torch.log(energy + ENERGY_FLOOR**2) + 4.5) / 3.0)
        finer = coarser
    return torch.cat(out, 1)


class DilatedMapEstimator(MapEstimator):
    """rgb (B, 3, H, W) in [0, 1] -> CoC map (B, 1, H, W) in pixels, coc_scale * softplus(logit); with
    `blur_head` a second output channel, the blur-detection logit."""

    def __init__(self, width: int = 24, dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8, 1),
                 coc_scale: float = 4.0, blur_head: bool = False, features: str = "bands", downsample: int = 4,
                 residual: bool = True) -> None:
        super().__init__()
        if width < 1 or not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"defocus map (dilated): width must be >= 1 and dilations positive, got {width}, "
                             f"{list(dilations)}")
        if features not in FEATURES:
            raise ValueError(f"model.features: '{features}' is not one of {', '.join(FEATURES)}")
        if downsample < 1:
            raise ValueError(f"model.downsample must be >= 1, got {downsample}")
        self.coc_scale = coc_scale
        self.has_blur_head = bool(blur_head)
        self.features, self.downsample, self.residual = features, int(downsample), bool(residual)
        self.multiple = 1  # any size: padded to the downsampling factor inside
        channels = len(BAND_SIGMAS) if features == "bands" else 3
        if residual:
            groups = math.gcd(GROUPS, width)
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True))
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate"),
                              nn.GroupNorm(groups, width), nn.ReLU(inplace=True)) for d in dilations)
        else:  # the former layout: its weight names, so that files trained with it still load
            layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            for d in dilations:
                layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate"),
                           nn.ReLU(inplace=True)]
            self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 2 if blur_head else 1, 1)

    def inputs(self, rgb: torch.Tensor) -> torch.Tensor:
        """The network's input features at the input size (a grey image is read as RGB)."""
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        return band_energies(rgb) if self.features == "bands" else local_contrast(rgb)

    def logits(self, rgb: torch.Tensor, channels: slice) -> torch.Tensor:
        """The head's output `channels`, upsampled bilinearly to the input size."""
        h, w = rgb.shape[-2:]
        x, s = self.inputs(rgb), self.downsample
        if s > 1:
            x = F.avg_pool2d(F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="replicate"), s)
        if self.residual:
            x = self.stem(x)
            for block in self.blocks:
                x = x + block(x)
        else:
            x = self.body(x)
        z = self.head(x)[:, channels]
        if s > 1:
            z = F.interpolate(z, scale_factor=s, mode="bilinear", align_corners=False)[..., :h, :w]
        return z
