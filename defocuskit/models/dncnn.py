"""DnCNN (Zhang et al., "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image Denoising", TIP 2017).

A plain stack of 3x3 convolutions with no pooling, Conv+ReLU, (depth - 2) x Conv+BN+ReLU, Conv, that
predicts the residual y - x of a degraded image y; the network returns y - residual. Zero padding keeps
every feature map at the input's size, so any image size goes in and the same size comes out.
`conv_stack` is that stack on its own: FFDNet (`defocuskit.models.ffdnet`) reuses it.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_stack(in_channels: int, out_channels: int, depth: int, features: int,
               zero_last: bool = False) -> nn.Sequential:
    """The `depth`-layer 3x3 stack Conv+ReLU, (depth - 2) x (Conv+BN+ReLU), Conv, He-initialised
    (with `zero_last`, the last conv starts at zero: the stack outputs 0 until trained)."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2 (first and last layer), got {depth}")
    if min(in_channels, out_channels, features) < 1:
        raise ValueError(f"channels and features must be positive, got {in_channels}, {out_channels}, {features}")
    # DnCNN Sec. III-B: layer 1 is Conv+ReLU, 64 filters of 3x3xc; zero padding keeps the size at every layer
    layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        # layers 2 .. D-1: Conv+BN+ReLU (Sec. III-B); no conv bias, BN's shift takes its place
        layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
                   nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(features, out_channels, 3, padding=1))  # layer D: c filters of 3x3x64 (Sec. III-B)
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # He et al. 2015 initialisation (DnCNN Sec. IV-A)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_last:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


class DnCNN(nn.Module):
    """DnCNN with residual learning: forward(y) = y - R(y), R = `body` (Sec. III-B)."""

    def __init__(self, channels: int = 3, depth: int = 17, features: int = 64, identity_init: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.depth = depth
        self.body = conv_stack(channels, channels, depth, features, zero_last=identity_init)

    def residual(self, y: torch.Tensor) -> torch.Tensor:
        """R(y): the predicted residual y - x (here blur - sharp)."""
        return self.body(y)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.body(y)  # residual learning: the clean estimate is y - R(y) (Sec. III-B, Eq. 1)
