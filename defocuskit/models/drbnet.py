"""DRBNet (Ruan, Chen, Li and Lam, "Learning to Deblur using Light Field Generated and Real Defocus Images", CVPR
2022; released code lingyanruan/DRBNet, models/DRBNet.py `DRBNet_single`), written for defocuskit.

An encoder of four levels of three 3x3 conv-LeakyReLU (widths w, 2w, 4w, 8w; the first conv of levels 2-4 with
stride 2), a bottleneck (conv, two residual blocks, conv) and a decoder of three transposed-conv upsamplings, each
added to the encoder's skip and followed by two residual blocks (residual units without an activation after the
addition, unlike IFAN's). At each of the four decoder scales (1/8, 1/4, 1/2, 1) a dynamic residual block (DRB)
refines an image estimate e:

    img  = the input area-downsampled to 1/8 (first scale), else the previous estimate area-upsampled x2
    feat = cat(decoder features, three conv-LeakyReLU of img)
    e    = img + FAC(img, kernel(feat)) + residual(feat)

where kernel(feat) is a per-pixel k x k filter (k = 7, shared by the colour channels: `filter_layers.fac`) and
residual(feat) a 3-channel correction (its last 1x1 conv followed by LeakyReLU, as released). The released forward
returns only the last estimate, clipped to [-1, 1]; the network works on images in [-1, 1] (run.py: x * 2 - 1).
This port returns all four estimates (`forward`, coarse to fine, unclipped) so that training can supervise each
scale; methods/drbnet.py maps [0, 1] images in and out and clips as the release does.

Parameter names follow the release where the structure is the same; levels are lists (`encoder`, `ups`,
`decoders`, `drbs`): methods/drbnet.py maps the release's names onto these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.filter_layers import ResBlock, conv_act, fac, upconv


class DynamicResidualBlock(nn.Module):
    """One scale's DRB: image features, a per-pixel kernel head and a residual head on cat(decoder features, image
    features). Widths: `out` the decoder's (and image features') channels, `mid` the image features' middle
    width, `wide` the heads' first width, `small` (2w) the residual head's second width and the image features'
    first."""

    def __init__(self, channels: int, out: int, mid: int, wide: int, small: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.features = nn.Sequential(conv_act(channels, small), conv_act(small, mid), conv_act(mid, out))
        self.kernel = nn.Sequential(conv_act(2 * out, wide), conv_act(wide, mid),
                                    nn.Conv2d(mid, k * k, 1))  # upconvN_kernel: no activation on the kernel
        self.residual = nn.Sequential(conv_act(2 * out, wide), conv_act(wide, small),
                                      conv_act(small, channels, 1))  # upconvN_res: its last 1x1 conv activated

    def forward(self, image: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        feat = torch.cat([decoded, self.features(image)], dim=1)
        return image + fac(image, self.kernel(feat), self.k) + self.residual(feat)


class DRBNet(nn.Module):
    """The released single-image DRBNet (see the module docstring).

    forward(x in [-1, 1], (B, C, H, W), H and W multiples of 8) -> [estimate at 1/8, 1/4, 1/2, 1], unclipped.
    """

    multiple = 8

    def __init__(self, channels: int = 3, width: int = 32, kernel_size: int = 7) -> None:
        super().__init__()
        w = width
        widths = [w, 2 * w, 4 * w, 8 * w]  # ch1 ... ch4 of DRBNet.py
        ins = [channels, *widths[:-1]]
        self.encoder = nn.ModuleList(nn.Sequential(conv_act(ins[i], widths[i], 3, 1 if i == 0 else 2),
                                                   conv_act(widths[i], widths[i]), conv_act(widths[i], widths[i]))
                                     for i in range(4))
        deep = widths[-1]
        self.bottleneck = nn.Sequential(conv_act(deep, deep), ResBlock(deep, post_act=False),
                                        ResBlock(deep, post_act=False), conv_act(deep, deep))  # conv4_4
        self.ups = nn.ModuleList(upconv(widths[i + 1], widths[i]) for i in (2, 1, 0))
        self.decoders = nn.ModuleList(nn.Sequential(ResBlock(widths[i], post_act=False),
                                                    ResBlock(widths[i], post_act=False)) for i in (2, 1, 0))
        # per scale (1/8 ... 1): decoder width, image-feature middle width, heads' first width (DRBNet.py)
        outs, mids, wides = [8 * w, 4 * w, 2 * w, w], [4 * w, 4 * w, 2 * w, 2 * w], [8 * w, 4 * w, 2 * w, 2 * w]
        self.drbs = nn.ModuleList(DynamicResidualBlock(channels, o, m, d, 2 * w, kernel_size)
                                  for o, m, d in zip(outs, mids, wides))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"DRBNet needs H and W to be multiples of {self.multiple}, got {h}x{w}")
        skips = []
        f = x
        for level in self.encoder:
            f = level(f)
            skips.append(f)
        f = self.bottleneck(skips.pop())
        estimate = self.drbs[0](F.interpolate(x, scale_factor=1 / 8, mode="area"), f)
        estimates = [estimate]
        for up, dec, drb in zip(self.ups, self.decoders, self.drbs[1:]):
            f = dec(up(f) + skips.pop())
            estimate = drb(F.interpolate(estimate, scale_factor=2, mode="area"), f)
            estimates.append(estimate)
        return estimates
