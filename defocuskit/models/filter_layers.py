"""Building blocks of the per-pixel filtering networks IFAN (Lee et al., CVPR 2021; released code codeslake/IFAN,
models/nn_common.py and models/IAC.py) and DRBNet (Ruan et al., CVPR 2022; lingyanruan/DRBNet, models/DRBNet.py,
whose blocks follow IFAN's), written for defocuskit.

- `conv_act`: a "same"-padded convolution followed by LeakyReLU(0.1) (nn_common.py `conv`), as a Sequential so
  that its weights are named `0.weight`, `0.bias` like the releases'.
- `ResBlock`: `blocks` residual units conv-LeakyReLU-conv added to their input (IFAN: LeakyReLU(0.1) after each
  addition; DRBNet: none), with one more skip over all of them when there are several (nn_common.py
  `ResnetBlock`).
- `separable_filter` / `iac`: IFAN's iterative adaptive convolution. Per pixel and channel, a vertical then a
  horizontal 1-D kernel of size k (replicate padding), a bias, LeakyReLU(0.1), repeated N times with per-pixel
  kernels predicted by the network. The released IAC.py applies the FIRST kernel in both directions (a mistake its
  README names: "isotropic kernels", the published checkpoints are trained so); `second_kernel=True` applies the
  second kernel horizontally, as the paper and the README's advice for training from scratch say.
- `fac`: DRBNet's per-pixel k x k filter shared by the colour channels (models/DRBNet.py `FAC`, replicate padding).

The filters are sums over the k (or k^2) shifted copies of the padded input times the kernel's channel for that
shift: pure PyTorch, no unfolded k-fold copy of the feature map is held.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.1  # LeakyReLU negative slope of both releases


def conv_act(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv2d (padding (kernel - 1) // 2, bias) then LeakyReLU(0.1)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2), nn.LeakyReLU(SLOPE))


def conv(in_ch: int, out_ch: int, kernel: int = 3) -> nn.Conv2d:
    """Conv2d with "same" padding and a bias, no activation (the releases' `conv(..., act=None)`)."""
    return nn.Conv2d(in_ch, out_ch, kernel, 1, (kernel - 1) // 2)


def upconv(in_ch: int, out_ch: int) -> nn.Sequential:
    """ConvTranspose2d (4x4, stride 2, padding 1: twice the size) then LeakyReLU(0.1)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), nn.LeakyReLU(SLOPE))


class ResBlock(nn.Module):
    """`blocks` residual units x <- act(x + conv(lrelu(conv(x)))) (act: LeakyReLU(0.1) where `post_act`, else the
    identity); with more than one unit, the block's input is added once more at the end."""

    def __init__(self, channels: int, blocks: int = 1, kernel: int = 3, post_act: bool = True) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.post_act = post_act
        self.stem = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, kernel, 1, pad), nn.LeakyReLU(SLOPE),
                          nn.Conv2d(channels, channels, kernel, 1, pad)) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x
        for unit in self.stem:
            x = x + unit(x)
            if self.post_act:
                x = F.leaky_relu(x, SLOPE)
        return x + skip if len(self.stem) > 1 else x


def _shifted(x: torch.Tensor, kernel: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """sum_j pad(x)[.., shifted by j along `dim`] * kernel[:, :, j]: a per-pixel, per-channel 1-D filter of size k
    along `dim` (2: vertical, 3: horizontal), replicate padding; kernel (B, C, k, H, W)."""
    pad = (k - 1) // 2
    padded = F.pad(x, (0, 0, pad, pad) if dim == 2 else (pad, pad, 0, 0), mode="replicate")
    size = x.shape[dim]
    return sum(padded.narrow(dim, j, size) * kernel[:, :, j] for j in range(k))


def separable_filter(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor, k: int) -> torch.Tensor:
    """A per-pixel separable filter of x (B, C, H, W): `first` (B, C * k, H, W; channel c's taps at c * k ...
    c * k + k - 1) vertically, then `second` (same layout) horizontally."""
    b, c, h, w = x.shape
    x = _shifted(x, first.reshape(b, c, k, h, w), k, 2)
    return _shifted(x, second.reshape(b, c, k, h, w), k, 3)


def iac(x: torch.Tensor, filters: torch.Tensor, iterations: int, k: int, act_last: bool = True,
        second_kernel: bool = False) -> torch.Tensor:
    """IFAN's iterative adaptive convolution of x (B, C, H, W) with predicted `filters` (B, N * C * (2k + 1), H,
    W): the first N * 2Ck channels hold each iteration's two kernels (vertical, then horizontal), the last N * C
    its biases. Each iteration: separable filter, + bias, LeakyReLU(0.1) (not after the last unless `act_last`).
    `second_kernel=False`: the released IAC.py (the vertical kernel also horizontally)."""
    c = x.shape[1]
    span = 2 * c * k
    for i in range(iterations):
        first = filters[:, i * span: i * span + c * k]
        second = filters[:, i * span + c * k: (i + 1) * span] if second_kernel else first
        bias = filters[:, iterations * span + i * c: iterations * span + (i + 1) * c]
        x = separable_filter(x, first, second, k) + bias
        if i < iterations - 1 or act_last:
            x = F.leaky_relu(x, SLOPE)
    return x


def iac_channels(iterations: int, channels: int, k: int) -> int:
    """The filter channels `iac` reads for N iterations on `channels` channels with kernels of size k."""
    return iterations * channels * (2 * k + 1)


def fac(x: torch.Tensor, kernel: torch.Tensor, k: int) -> torch.Tensor:
    """DRBNet's per-pixel k x k filter of x (B, C, H, W) with kernel (B, k * k, H, W), tap (i, j) (row i, column j
    of the window centred on the pixel) at channel i * k + j, the same for every channel; replicate padding."""
    pad = (k - 1) // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return sum(padded[..., i:i + h, j:j + w] * kernel[:, i * k + j: i * k + j + 1]
               for i in range(k) for j in range(k))
