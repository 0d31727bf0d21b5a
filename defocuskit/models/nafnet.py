"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022): blocks and a U-Net.

The U-Net pads its input to a multiple of 2**levels (replicate padding) and crops the output
back to the input's size, so any image size goes in and the same size comes out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.deform import DCNv4


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of each pixel of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # the same normalisation on the (B, H, W, C) view of a channels-last map: one fused kernel
            # instead of the five broadcast passes below, which suit NCHW
            return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """NAFNet's gate: split the channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


SPATIAL_LAYERS = ("conv", "dcn", "dcn_norm")
DCN_GROUP_CHANNELS = 32  # RDDM release: DCNv4 group = c // 16 on 2c channels, i.e. 32 channels per group


def spatial_layer(kind: str, channels: int) -> nn.Module:
    """The 3x3 spatial layer of a NAF block: "conv" depthwise 3x3 (NAFNet); "dcn" DCNv4 and "dcn_norm"
    DCNv4 then layer norm (RDDM's Pre-deblur / RDD blocks, released `DCNConv` / `DCNnorm`)."""
    if kind == "conv":
        return nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
    if kind not in SPATIAL_LAYERS:
        raise ValueError(f"spatial layer '{kind}' is not one of {', '.join(SPATIAL_LAYERS)}")
    dcn = DCNv4(channels, 3, group=max(1, channels // DCN_GROUP_CHANNELS), dw_kernel_size=3, output_bias=True)
    return nn.Sequential(dcn, LayerNorm2d(channels)) if kind == "dcn_norm" else dcn


class NAFBlock(nn.Module):
    """NAFNet block: LN, 1x1, depthwise 3x3, SimpleGate, simplified channel attention, 1x1; then a gated FFN.

    Both branches join the residual stream through learned per-channel scales (beta, gamma) that
    start at zero. `dw` chooses the spatial layer in place of the depthwise 3x3 (see `spatial_layer`).
    """

    def __init__(
        self,
        channels: int,
        dw_expand: int = 2,
        ffn_expand: int = 2,
        dropout: float = 0.0,
        dw: str = "conv",
    ) -> None:
        super().__init__()
        dw_kind, dw = dw, channels * dw_expand
        ffn = channels * ffn_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = spatial_layer(dw_kind, dw)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(self.norm1(inp)))
        x = self.sg(x)
        x = x * self.sca(x)
        y = inp + self.dropout1(self.conv3(x)) * self.beta
        x = self.conv5(self.sg(self.conv4(self.norm2(y))))
        return y + self.dropout2(x) * self.gamma


def downsample(channels: int) -> nn.Module:
    """Halve the resolution, double the channels (2x2 conv, stride 2)."""
    return nn.Conv2d(channels, 2 * channels, 2, stride=2)


def upsample(channels: int) -> nn.Module:
    """Double the resolution, halve the channels (1x1 conv then pixel shuffle)."""
    return nn.Sequential(nn.Conv2d(channels, 2 * channels, 1, bias=False), nn.PixelShuffle(2))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom/right of `x` to a multiple of `multiple`; returns the original (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class NAFNet(nn.Module):
    """NAFNet U-Net: intro 3x3, encoder levels of NAF blocks, middle blocks, decoder levels with additive skips.

    `global_residual` adds the input's first `out_ch` channels to the output (needs in_ch >= out_ch).
    `enc_dw` / `dec_dw` give each encoder / decoder level's spatial layer (`spatial_layer`; default "conv").
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        width: int = 32,
        enc_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 28),
        middle_blocks: int = 1,
        dec_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 1),
        global_residual: bool = True,
        enc_dw: list[str] | tuple[str, ...] | None = None,
        dec_dw: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"NAFNet: enc_blocks {list(enc_blocks)} and dec_blocks {list(dec_blocks)} differ in length")
        if global_residual and in_ch < out_ch:
            raise ValueError(f"NAFNet: a global residual needs in_ch ({in_ch}) >= out_ch ({out_ch})")
        enc_dw = list(enc_dw) if enc_dw is not None else ["conv"] * len(enc_blocks)
        dec_dw = list(dec_dw) if dec_dw is not None else ["conv"] * len(dec_blocks)
        if len(enc_dw) != len(enc_blocks) or len(dec_dw) != len(dec_blocks):
            raise ValueError(f"NAFNet: enc_dw {enc_dw} / dec_dw {dec_dw} need one entry per level")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.global_residual = global_residual
        self.levels = len(enc_blocks)
        self.intro = nn.Conv2d(in_ch, width, 3, padding=1)
        self.ending = nn.Conv2d(width, out_ch, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.decoders, self.ups = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n, kind in zip(enc_blocks, enc_dw):
            self.encoders.append(nn.Sequential(*[NAFBlock(ch, dw=kind) for _ in range(n)]))
            self.downs.append(downsample(ch))
            ch *= 2
        self.middle = nn.Sequential(*[NAFBlock(ch) for _ in range(middle_blocks)])
        for n, kind in zip(dec_blocks, dec_dw):
            self.ups.append(upsample(ch))
            ch //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(ch, dw=kind) for _ in range(n)]))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(inp, 2**self.levels)
        x = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle(x)
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = dec(up(x) + skip)
        x = self.ending(x)[..., :h, :w]
        if self.global_residual:
            x = x + inp[:, : self.out_ch]
        return x


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """NAFNet's PSNR loss: mean over images of 10 log10(MSE + eps), i.e. minus the PSNR for a [0, 1] range."""
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(mse + eps)).mean()
