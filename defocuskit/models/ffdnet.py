"""FFDNet (Zhang, Zuo and Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN based Image Denoising",
TIP 2018).

The image is reshaped into four half-size sub-images per channel (pixel unshuffle by 2), a one-channel
level map at the sub-image resolution is concatenated, DnCNN's plain Conv+BN+ReLU stack maps the
4C + 1 channels to 4C, and pixel shuffle puts the full-size image back. The paper feeds a noise-level
map; `defocuskit.methods.ffdnet` feeds a blur-level (circle-of-confusion) map. Odd sizes are padded
(replicate) to even on the bottom/right and cropped back, so any size goes in and comes out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.dncnn import conv_stack


class FFDNet(nn.Module):
    """FFDNet: forward(x, level) with x (B, C, H, W) and level (B, 1, H, W) at full resolution.

    `residual=False` is the paper (the network outputs the clean sub-images); True returns
    x - output instead (DnCNN-style residual learning), an option of this port.
    """

    def __init__(self, channels: int = 3, depth: int = 12, features: int = 96, residual: bool = False,
                 identity_init: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.depth = depth
        self.residual = residual
        # Sec. III-A: input 4C sub-images + the level map M, output 4C sub-images, Conv+BN+ReLU in between
        if identity_init and not residual:
            raise ValueError("ffdnet: identity_init needs residual (the zero-initialised net then returns its input)")
        self.body = conv_stack(4 * channels + 1, 4 * channels, depth, features, zero_last=identity_init)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if level.shape[0] != x.shape[0] or level.shape[1] != 1 or level.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"ffdnet: level map {tuple(level.shape)} does not fit the images {tuple(x.shape)} "
                             "(expected (B, 1, H, W))")
        h, w = x.shape[-2:]
        pad = (0, w % 2, 0, h % 2)
        if h % 2 or w % 2:
            x = F.pad(x, pad, mode="replicate")  # the unshuffle needs even sizes; cropped back below
            level = F.pad(level, pad, mode="replicate")
        sub = F.pixel_unshuffle(x, 2)  # Sec. III-A: reversible downsampling into four sub-images
        m = F.avg_pool2d(level.to(sub.dtype), 2)  # the level map M lives on the sub-image grid (Sec. III-A)
        out = F.pixel_shuffle(self.body(torch.cat([sub, m], dim=1)), 2)  # upscaling: the inverse reshape
        if self.residual:
            out = x - out
        return out[..., :h, :w]
