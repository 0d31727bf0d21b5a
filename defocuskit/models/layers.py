"""Layers of NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs"), in plain PyTorch.

FIR resampling follows StyleGAN2's upfirdn2d with the [1, 3, 3, 1] kernel, written with
ordinary (transposed) depthwise convolutions so that no custom CUDA op is needed.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FIR_KERNEL = (1.0, 3.0, 3.0, 1.0)


# ---------------------------------------------------------------- initialisation


def ddpm_init_(weight: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """DDPM initialisation: variance scaling, fan_avg, uniform; scale 0 means (almost) zero."""
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv2d(in_ch: int, out_ch: int, kernel: int = 3, init_scale: float = 1.0) -> nn.Conv2d:
    """Same-padding convolution with DDPM initialisation and zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    ddpm_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def linear(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """Dense layer with DDPM initialisation and zero bias."""
    layer = nn.Linear(in_features, out_features)
    ddpm_init_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups (as NCSN++), reduced to a divisor of C if needed."""
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=1e-6)


# ---------------------------------------------------------------- FIR resampling


def fir_kernel_2d(taps: Sequence[float] = FIR_KERNEL) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.dim() != 1 or k.numel() < 2:
        raise ValueError(f"FIR taps must be a 1-D sequence of at least 2 values, got {taps!r}")
    k2 = torch.outer(k, k)
    return k2 / k2.sum()


def _depthwise(kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return kernel.to(device=x.device, dtype=x.dtype)[None, None].expand(x.shape[1], 1, *kernel.shape)


def fir_upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling: upfirdn2d(x, 4 k, up=2, pad=((p+1)//2 + 1, p//2)), p = len(k) - 2."""
    taps = kernel.shape[-1]
    if taps % 2:
        raise ValueError(f"FIR upsampling needs an even number of taps, got {taps}")
    # zero insertion + pad + convolution == transposed convolution with stride 2 (gain 4 keeps the mean)
    pad = taps // 2 - 1
    w = _depthwise(kernel * 4.0, x)
    return F.conv_transpose2d(x, w, stride=2, padding=pad, groups=x.shape[1])


def fir_downsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling: upfirdn2d(x, k, down=2, pad=((p+1)//2, p//2)), p = len(k) - 2."""
    p = kernel.shape[-1] - 2
    x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
    w = _depthwise(torch.flip(kernel, (0, 1)), x)
    return F.conv2d(x, w, stride=2, groups=x.shape[1])


class Resample(nn.Module):
    """2x up- or down-sampling without learned weights: FIR [1,3,3,1] or nearest / average pooling."""

    def __init__(self, up: bool, fir: bool = True, taps: Sequence[float] = FIR_KERNEL):
        super().__init__()
        self.up, self.fir = up, fir
        self.register_buffer("kernel", fir_kernel_2d(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fir:
            return fir_upsample2d(x, self.kernel) if self.up else fir_downsample2d(x, self.kernel)
        return F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else F.avg_pool2d(x, 2)


# ---------------------------------------------------------------- blocks


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma (Tancik et al. 2020; Song et al. 2021, App. H)."""

    def __init__(self, embedding_size: int, scale: float = 16.0):
        super().__init__()
        # fixed, not trained; a persistent buffer so that exported weights carry it
        self.register_buffer("W", torch.randn(embedding_size) * scale)

    def forward(self, log_sigma: torch.Tensor) -> torch.Tensor:
        proj = log_sigma[:, None] * self.W[None, :] * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels with a 1/sqrt(2) residual (NCSN++ AttnBlockpp)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q, self.k, self.v = (conv2d(channels, channels, 1, init_scale=0.1) for _ in range(3))
        self.proj = conv2d(channels, channels, 1, init_scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        # one head (B, 1, N, C), contiguous: torch's fused CPU kernel; (B, N, C) or strided inputs take its slower math path
        q, k, v = (m(h).reshape(b, 1, c, hgt * wid).transpose(2, 3).contiguous() for m in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)[:, 0]  # softmax(q k^T / sqrt(C)) v
        h = self.proj(h.transpose(1, 2).reshape(b, c, hgt, wid))
        return (x + h) / math.sqrt(2.0)


class ResBlockBigGAN(nn.Module):
    """BigGAN-style residual block with optional 2x resampling inside, conditioned on the noise embedding."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.0,
        fir: bool = True,
    ):
        super().__init__()
        if up and down:
            raise ValueError("a residual block resamples up or down, not both")
        out_ch = out_ch or in_ch
        self.act = nn.SiLU()
        self.norm0 = group_norm(in_ch)
        self.resample = Resample(up=up, fir=fir) if (up or down) else None
        self.conv0 = conv2d(in_ch, out_ch)
        self.dense = linear(temb_dim, out_ch) if temb_dim else None
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = conv2d(out_ch, out_ch, init_scale=0.0)
        self.skip = conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.norm0(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv0(h)
        if self.dense is not None and temb is not None:
            h = h + self.dense(self.act(temb))[:, :, None, None]
        h = self.conv1(self.dropout(self.act(self.norm1(h))))
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / math.sqrt(2.0)  # skip_rescale (NCSN++)
