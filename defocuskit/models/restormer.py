"""Restormer (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image Restoration", CVPR 2022;
released code swz30/Restormer, basicsr/models/archs/restormer_arch.py), written for defocuskit.

A 4-level U-Net of transformer blocks. Each block: LayerNorm over channels (per pixel), multi-Dconv head transposed
attention (MDTA: 1x1 then depthwise 3x3 convs give q, k, v; attention over CHANNELS, a (C/heads)^2 map per head
from L2-normalised q, k with a learnt temperature, so its cost grows linearly with the pixels), LayerNorm, gated
Dconv feed-forward (GDFN: 1x1 to 2 x hidden, depthwise 3x3, GELU(x1) * x2, 1x1 back). Downsampling: 3x3 conv
to C/2 then pixel-unshuffle (2C); upsampling: 3x3 conv to 2C then pixel-shuffle (C/2). The decoder concatenates
the skip and reduces channels with a 1x1 conv, except at the first level, which keeps 2 x dim; refinement blocks
follow; a 3x3 conv and a global residual give the image.

Parameter names follow the release where the structure is the same (norm1, attn.qkv, ffn.project_in, ...);
the level modules are lists here (`encoders`, `downs`, `ups`, `reduces`, `decoders`): `methods/restormer.py`
maps the release's names onto these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("WithBias", "BiasFree")


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map, eps 1e-5. "WithBias": (x - mean) / std
    * weight + bias; "BiasFree": x / std * weight (the variance still taken about the mean, as released)."""

    def __init__(self, channels: int, kind: str = "WithBias") -> None:
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"LayerNorm type '{kind}' is not one of {', '.join(NORMS)}")
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if kind == "WithBias" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        w = self.weight.view(1, -1, 1, 1)
        if self.bias is None:
            return x / torch.sqrt(var + 1e-5) * w
        return (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(var + 1e-5) * w + self.bias.view(1, -1, 1, 1)


class TransposedAttention(nn.Module):
    """MDTA: self-attention across channels, per head, of depthwise-conv-enriched q, k, v."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{dim} channels do not split into {heads} heads")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, 1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # (B, heads, C/heads, C/heads)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """GDFN: 1x1 to 2 x int(dim x expansion), depthwise 3x3, GELU(first half) x second half, 1x1 back to dim."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm: str) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(dim, norm)
        self.attn = TransposedAttention(dim, heads, bias)
        self.norm2 = ChannelNorm(dim, norm)
        self.ffn = GatedFeedForward(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stack(n: int, dim: int, heads: int, expansion: float, bias: bool, norm: str) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, expansion, bias, norm) for _ in range(n)])


class Restormer(nn.Module):
    """The single-image Restormer: blocks[i] transformer blocks at level i (dim x 2**i channels, heads[i] heads),
    the last level the latent one; `refinement` blocks at 2 x dim; output = conv(features) + input.

    forward(x): (B, C, H, W) with H, W multiples of `multiple` (2**(levels - 1)) -> (B, C, H, W).
    """

    def __init__(self, channels: int = 3, dim: int = 48, blocks: list[int] | tuple[int, ...] = (4, 6, 6, 8),
                 refinement: int = 4, heads: list[int] | tuple[int, ...] = (1, 2, 4, 8), expansion: float = 2.66,
                 bias: bool = False, norm: str = "WithBias") -> None:
        super().__init__()
        blocks, heads = list(blocks), list(heads)
        if len(blocks) < 2 or len(blocks) != len(heads):
            raise ValueError(f"blocks {blocks} and heads {heads} must name the same levels (at least 2)")
        levels = len(blocks)
        self.multiple = 2 ** (levels - 1)
        width = [dim * 2**i for i in range(levels)]
        self.embed = nn.Conv2d(channels, dim, 3, padding=1, bias=bias)
        self.encoders = nn.ModuleList(_stack(blocks[i], width[i], heads[i], expansion, bias, norm)
                                      for i in range(levels - 1))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(width[i], width[i] // 2, 3, padding=1, bias=False),
                                                 nn.PixelUnshuffle(2)) for i in range(levels - 1))
        self.latent = _stack(blocks[-1], width[-1], heads[-1], expansion, bias, norm)
        # decoder levels from the deepest up: levels - 2, ..., 0; level 0 works at 2 x dim without a 1x1 reduction
        up_levels = list(reversed(range(levels - 1)))
        self.ups = nn.ModuleList(nn.Sequential(nn.Conv2d(width[i + 1], width[i + 1] * 2, 3, padding=1, bias=False),
                                               nn.PixelShuffle(2)) for i in up_levels)
        self.reduces = nn.ModuleList(nn.Conv2d(width[i] * 2, width[i], 1, bias=bias) for i in up_levels if i > 0)
        self.decoders = nn.ModuleList(_stack(blocks[i], width[i] if i > 0 else 2 * dim, heads[i], expansion, bias, norm)
                                      for i in up_levels)
        self.refinement = _stack(refinement, 2 * dim, heads[0], expansion, bias, norm)
        self.output = nn.Conv2d(2 * dim, channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"Restormer needs H and W to be multiples of {self.multiple}, got {h}x{w}")
        feat = self.embed(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            feat = enc(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.latent(feat)
        for j, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            feat = torch.cat([up(feat), skips.pop()], dim=1)
            if j < len(self.reduces):
                feat = self.reduces[j](feat)
            feat = dec(feat)
        return self.output(self.refinement(feat)) + x
