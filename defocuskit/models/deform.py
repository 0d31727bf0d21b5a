"""Deformable convolution v4 (Xiong et al. 2024, "Efficient Deformable ConvNets") in plain PyTorch.

The layer of OpenGVLab/DCNv4 (`modules/dcnv4.py`), as RDDM's released code builds it
(`DCNv4(channels, group, dw_kernel_size=3, output_bias=True)`), with the CUDA operator replaced by
bilinear sampling (`grid_sample`, zeros outside the image). Per pixel and channel group it sums
K = k*k taps taken at p0 + p_k + delta p_k, each weighted by an unnormalised aggregation weight
m_k (DCNv4 drops DCNv3's softmax). Offsets and weights come from a depthwise k x k conv of the
input followed by a pointwise layer, both starting at zero; value and output projections are
pointwise layers (1x1 convolutions here, `nn.Linear` in the release: the same parameters).

Per pixel the offset/weight vector is read as the CUDA kernel reads it: for each group g,
2K offsets as (x, y) pairs in tap order (x outer, y inner), then K weights; its length is padded
to a multiple of 8.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def dcnv4_core(
    value: torch.Tensor, offset_mask: torch.Tensor, kernel_size: int, group: int, offset_scale: float = 1.0
) -> torch.Tensor:
    """DCNv4's operator at stride 1, padding k // 2, dilation 1: value (B, C, H, W), offset_mask (B, M, H, W)
    with M >= 3 * group * k * k -> (B, C, H, W)."""
    b, c, h, w = value.shape
    k2 = kernel_size * kernel_size
    if c % group:
        raise ValueError(f"DCNv4: {c} channels do not split into {group} groups")
    if offset_mask.shape[1] < 3 * group * k2 or offset_mask.shape[-2:] != value.shape[-2:]:
        raise ValueError(f"DCNv4: offset_mask {tuple(offset_mask.shape)} does not fit value {tuple(value.shape)}")
    om = offset_mask[:, : 3 * group * k2].reshape(b, group, 3 * k2, h, w)
    offsets = om[:, :, : 2 * k2].reshape(b, group, k2, 2, h, w)
    weights = om[:, :, 2 * k2 :]  # (B, G, K, H, W)
    vg = value.reshape(b * group, c // group, h, w)
    ys = torch.arange(h, device=value.device, dtype=value.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=value.device, dtype=value.dtype).view(1, 1, 1, w)
    half = kernel_size // 2
    out = torch.zeros_like(vg)
    for tap in range(k2):  # one tap at a time: memory of one feature map, not K
        i, j = divmod(tap, kernel_size)  # i along x (outer), j along y (inner), as the CUDA kernel
        # DCNv4 eq. (2): y(p0) = sum_k m_k x(p0 + p_k + delta p_k), per group, m_k unnormalised
        px = xs + (i - half + offsets[:, :, tap, 0]) * offset_scale
        py = ys + (j - half + offsets[:, :, tap, 1]) * offset_scale
        grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).reshape(b * group, h, w, 2)
        sampled = F.grid_sample(vg, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + sampled * weights[:, :, tap].reshape(b * group, 1, h, w)
    return out.reshape(b, c, h, w)


class DCNv4(nn.Module):
    """A DCNv4 layer on (B, C, H, W) maps: value projection, deformable aggregation, output projection.

    A fresh layer outputs zeros (offsets and weights start at zero, as released); the weights
    learn from there.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        group: int = 4,
        offset_scale: float = 1.0,
        dw_kernel_size: int | None = 3,
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        if channels % group:
            raise ValueError(f"DCNv4: channels ({channels}) must divide by group ({group})")
        self.kernel_size, self.group, self.offset_scale = kernel_size, group, offset_scale
        k2 = kernel_size * kernel_size
        self.offset_mask_dw = (
            nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels)
            if dw_kernel_size
            else None
        )
        self.offset_mask = nn.Conv2d(channels, int(math.ceil(group * k2 * 3 / 8) * 8), 1)
        self.value_proj = nn.Conv2d(channels, channels, 1)
        self.output_proj = nn.Conv2d(channels, channels, 1, bias=output_bias)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        if self.output_proj.bias is not None:
            nn.init.zeros_(self.output_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om_input = self.offset_mask_dw(x) if self.offset_mask_dw is not None else x
        offset_mask = self.offset_mask(om_input)
        y = dcnv4_core(self.value_proj(x), offset_mask, self.kernel_size, self.group, self.offset_scale)
        return self.output_proj(y)
