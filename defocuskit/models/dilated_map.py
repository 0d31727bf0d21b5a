"""Defocus-map estimator for small budgets: a plain stack of dilated 3x3 convolutions (context aggregation in the
manner of Yu & Koltun 2016) on the image's local contrast, regressing the circle of confusion at full resolution.

Why it exists: SegFormer (`models/defocus_map.py`) learns nothing within the demo's CPU minutes (a constant map,
per-image correlation about 0 on the synthetic test split), while blur is a local property, how far an edge is
spread, that a few full-resolution convolutions with a receptive field a little wider than the largest CoC can
read (docs/benchmarks.md, "The defocus map: dilated CNN against SegFormer"). The input is the image minus its
7x7 local mean, so that brightness and colour, which say nothing about blur, are not there to memorise.

The interface is `defocus_map.MapEstimator`'s (forward, blur_logit, maps, coc_scale, has_blur_head), plus
`multiple`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.defocus_map import MapEstimator

CONTRAST_WINDOW = 7  # px: the local mean taken away from the input
CONTRAST_GAIN = 4.0  # local contrast of natural images is small; scaled towards unit range


def local_contrast(rgb: torch.Tensor, window: int = CONTRAST_WINDOW) -> torch.Tensor:
    """rgb minus its window x window box mean (replicate padding), times CONTRAST_GAIN."""
    r = window // 2
    mean = F.avg_pool2d(F.pad(rgb, (r, r, r, r), mode="replicate"), window, stride=1)
    return CONTRAST_GAIN * (rgb - mean)


class DilatedMapEstimator(MapEstimator):
    """rgb (B, 3, H, W) in [0, 1] -> CoC map (B, 1, H, W) in pixels, coc_scale * softplus(logit); with
    `blur_head` a second output channel, the blur-detection logit."""

    def __init__(self, width: int = 24, dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16, 1),
                 coc_scale: float = 4.0, blur_head: bool = False) -> None:
        super().__init__()
        if width < 1 or not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"defocus map (dilated): width must be >= 1 and dilations positive, got {width}, "
                             f"{list(dilations)}")
        self.coc_scale = coc_scale
        self.has_blur_head = bool(blur_head)
        self.multiple = 1  # no down-sampling: any size
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True)]
        for d in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=d, dilation=d, padding_mode="replicate"),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 2 if blur_head else 1, 1)

    def logits(self, rgb: torch.Tensor, channels: slice) -> torch.Tensor:
        """The head's output `channels` at full resolution (a grey image is read as RGB)."""
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        return self.head(self.body(local_contrast(rgb)))[:, channels]
