"""Modulated deformable convolution (DCNv2, Zhu et al. 2019) in plain PyTorch, with an optional fast kernel.

The reference path samples the input at the offset kernel taps with `grid_sample` (bilinear, zeros
outside the image) and contracts the sampled columns with the convolution weight. Where
`torchvision.ops.deform_conv2d` imports and the input lives on a GPU, the module calls it instead;
both take the same offset and mask layouts as torchvision:
offset (B, 2 * offset_groups * kh * kw, Ho, Wo) as (dy, dx) pairs per group and tap,
mask (B, offset_groups * kh * kw, Ho, Wo).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _load_fast_kernel() -> Callable[..., torch.Tensor] | None:
    try:
        from torchvision.ops import deform_conv2d
    except Exception:  # torchvision is optional and absent or broken on some machines
        return None
    return deform_conv2d


FAST_KERNEL = _load_fast_kernel()


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d_reference(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable convolution, same arguments and result as `torchvision.ops.deform_conv2d`."""
    b, c, h, w = x.shape
    out_ch, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    if groups * c_per_group != c:
        raise ValueError(f"deform conv: input has {c} channels, weight expects a multiple of {c_per_group}")
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    k = kh * kw
    ho, wo = offset.shape[-2:]
    offset_groups = offset.shape[1] // (2 * k)
    if offset_groups * 2 * k != offset.shape[1] or c % offset_groups:
        raise ValueError(f"deform conv: offset has {offset.shape[1]} channels, not 2 * groups * {k} for {c} inputs")
    if mask is None:
        mask = x.new_ones(b, offset_groups * k, ho, wo)

    # DCNv2 eq. (3): p = p0 + p_k + delta p_k, sampled bilinearly and scaled by the modulation delta m_k.
    dtype = x.dtype
    ys = torch.arange(ho, device=x.device, dtype=dtype) * sh - ph
    xs = torch.arange(wo, device=x.device, dtype=dtype) * sw - pw
    ky = torch.arange(kh, device=x.device, dtype=dtype).repeat_interleave(kw) * dh
    kx = torch.arange(kw, device=x.device, dtype=dtype).repeat(kh) * dw
    base_y = ys.view(1, 1, ho, 1) + ky.view(1, k, 1, 1)  # (1, K, Ho, 1)
    base_x = xs.view(1, 1, 1, wo) + kx.view(1, k, 1, 1)  # (1, K, 1, Wo)
    off = offset.view(b, offset_groups, k, 2, ho, wo)
    py = base_y.unsqueeze(1) + off[:, :, :, 0]  # (B, G, K, Ho, Wo)
    px = base_x.unsqueeze(1) + off[:, :, :, 1]
    # pixel centres for align_corners=False: normalised = (2 p + 1) / size - 1
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    grid = grid.view(b * offset_groups, k * ho, wo, 2)
    xg = x.reshape(b * offset_groups, c // offset_groups, h, w)
    sampled = F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, offset_groups, c // offset_groups, k, ho, wo)
    sampled = sampled * mask.view(b, offset_groups, 1, k, ho, wo)
    cols = sampled.reshape(b, groups, c_per_group * k, ho * wo)
    wmat = weight.reshape(groups, out_ch // groups, c_per_group * k)
    out = torch.einsum("goc,bgcl->bgol", wmat, cols).reshape(b, out_ch, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """A DCNv2 layer: a plain conv predicts offsets and a modulation mask from the input.

    The offset/mask conv starts at zero, so a fresh layer is an ordinary convolution
    (zero offsets, mask 2 * sigmoid(0) = 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        use_fast_kernel: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % offset_groups:
            raise ValueError("ModulatedDeformConv2d: channels must divide by groups and offset_groups")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.kernel_size = kernel_size
        self.offset_groups = offset_groups
        self.use_fast_kernel = use_fast_kernel
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        k = kernel_size * kernel_size
        self.conv_offset_mask = nn.Conv2d(
            in_channels, 3 * offset_groups * k, kernel_size, stride, padding, dilation, bias=True
        )
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted offsets (B, 2 G K, Ho, Wo) and modulation (B, G K, Ho, Wo) in [0, 2]."""
        om = self.conv_offset_mask(x)
        n = 2 * self.offset_groups * self.kernel_size**2
        return om[:, :n], 2 * torch.sigmoid(om[:, n:])

    def deform(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The convolution at given offsets and mask (fast kernel on GPU when available)."""
        fn = deform_conv2d_reference
        if self.use_fast_kernel and FAST_KERNEL is not None and x.is_cuda:
            fn = FAST_KERNEL
        return fn(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask=mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        return self.deform(x, offset, mask)
