"""NCSN++ score network (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. H).

The configuration of the continuous VE-SDE models at 256x256 (and of HIDD-DM, Li et al. 2025):
BigGAN residual blocks with FIR [1,3,3,1] resampling, skip connections rescaled by 1/sqrt(2),
Gaussian Fourier features of log sigma, an "output_skip" output pyramid and an "input_skip"
input pyramid combined by sums, and the output divided by sigma ("scale_by_sigma").
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from defocuskit.models.layers import (
    AttnBlock,
    GaussianFourierProjection,
    Resample,
    ResBlockBigGAN,
    conv2d,
    group_norm,
    linear,
)


class NCSNpp(nn.Module):
    """Noise-conditional score network s(x, sigma) for images in [0, 1].

    forward(x, sigma) -> score, same shape as x (B, C, H, W); sigma: (B,) or a scalar.
    H and W must be multiples of 2 ** (len(ch_mult) - 1). Attention is placed at the levels
    whose resolution at `image_size` is in `attn_resolutions` (decided once, so inputs of
    another size keep the same architecture).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 256,
        nf: int = 64,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        fourier_scale: float = 16.0,
        fir: bool = True,
    ):
        super().__init__()
        if channels < 1 or nf < 1 or num_res_blocks < 1 or not ch_mult:
            raise ValueError(
                f"NCSNpp: channels, nf, num_res_blocks must be >= 1 and ch_mult non-empty "
                f"(got channels={channels}, nf={nf}, num_res_blocks={num_res_blocks}, ch_mult={ch_mult})"
            )
        self.channels = channels
        self.num_levels = len(ch_mult)
        self.multiple = 2 ** (self.num_levels - 1)
        if image_size % self.multiple:
            raise ValueError(f"NCSNpp: image_size {image_size} is not a multiple of {self.multiple}")
        resolutions = [image_size // 2**i for i in range(self.num_levels)]
        self.attn_levels = [r in tuple(attn_resolutions) for r in resolutions]
        temb_dim = 4 * nf
        act = nn.SiLU()

        def block(cin: int, cout: int | None = None, **kw) -> ResBlockBigGAN:
            return ResBlockBigGAN(cin, cout, temb_dim=temb_dim, dropout=dropout, fir=fir, **kw)

        # noise-level embedding: Fourier features of log sigma, then a 2-layer MLP
        self.fourier = GaussianFourierProjection(nf, scale=fourier_scale)
        self.temb = nn.Sequential(linear(2 * nf, temb_dim), act, linear(temb_dim, temb_dim))

        # encoder
        self.conv_in = conv2d(channels, nf)
        self.pyramid_down = Resample(up=False, fir=fir)
        self.down_blocks, self.down_attn = nn.ModuleList(), nn.ModuleList()
        self.downsample, self.combine = nn.ModuleList(), nn.ModuleList()
        skip_ch = [nf]
        ch = nf
        for level, mult in enumerate(ch_mult):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch, nf * mult))
                ch = nf * mult
                attns.append(AttnBlock(ch) if self.attn_levels[level] else nn.Identity())
                skip_ch.append(ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if level != self.num_levels - 1:
                self.downsample.append(block(ch, down=True))
                # input_skip, combined by sum: a 1x1 conv of the downsampled input image
                self.combine.append(conv2d(channels, ch, 1))
                skip_ch.append(ch)

        self.mid = nn.ModuleList([block(ch), AttnBlock(ch), block(ch)])

        # decoder with the output_skip pyramid
        self.pyramid_up = Resample(up=True, fir=fir)
        self.up_blocks, self.up_attn = nn.ModuleList(), nn.ModuleList()
        self.out_norm, self.out_conv, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(block(ch + skip_ch.pop(), nf * ch_mult[level]))
                ch = nf * ch_mult[level]
            self.up_blocks.append(blocks)
            self.up_attn.append(AttnBlock(ch) if self.attn_levels[level] else nn.Identity())
            self.out_norm.append(group_norm(ch))
            self.out_conv.append(conv2d(ch, channels, init_scale=0.0))
            if level != 0:
                self.upsample.append(block(ch, up=True))
        assert not skip_ch
        self.act = act

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"NCSNpp: expected input (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(
                f"NCSNpp: height and width must be multiples of {self.multiple}, got {tuple(x.shape[-2:])}"
            )
        # the Fourier features of log sigma reach ~1e3 rad: computed in float32 whatever x's dtype
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.temb(self.fourier(torch.log(sigma)).to(x.dtype))

        h = 2.0 * x - 1.0  # data in [0, 1] (score_sde, data.centered = False)
        pyramid = h
        hs = [self.conv_in(h)]
        for level in range(self.num_levels):
            for blk, attn in zip(self.down_blocks[level], self.down_attn[level]):
                hs.append(attn(blk(hs[-1], temb)))
            if level != self.num_levels - 1:
                h = self.downsample[level](hs[-1], temb)
                pyramid = self.pyramid_down(pyramid)
                hs.append(h + self.combine[level](pyramid))

        h = self.mid[0](hs[-1], temb)
        h = self.mid[2](self.mid[1](h), temb)

        out = None
        for i, level in enumerate(reversed(range(self.num_levels))):
            for blk in self.up_blocks[i]:
                h = blk(torch.cat([h, hs.pop()], dim=1), temb)
            h = self.up_attn[i](h)
            skip_out = self.out_conv[i](self.act(self.out_norm[i](h)))
            out = skip_out if out is None else self.pyramid_up(out) + skip_out
            if level != 0:
                h = self.upsample[i](h, temb)
        # scale_by_sigma: s(x, sigma) = net(x, log sigma) / sigma
        return out / sigma[:, None, None, None].to(out.dtype)
