"""DCNv4 in plain PyTorch: a per-group depthwise conv at zero offsets, shifted and bilinear sampling, zero start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defocuskit.models.deform import DCNv4, dcnv4_core


def _offset_mask(b: int, group: int, h: int, w: int, weights: torch.Tensor, offsets: torch.Tensor | None = None,
                 pad_to: int | None = None) -> torch.Tensor:
    """An offset/weight map in DCNv4's layout: per group 2K offsets as (x, y) pairs (tap x-major), then K weights."""
    k2 = weights.shape[-1]
    om = torch.zeros(b, group, 3 * k2, h, w, dtype=torch.float64)
    if offsets is not None:
        om[:, :, : 2 * k2] = offsets.view(1, group, 2 * k2, 1, 1)
    om[:, :, 2 * k2 :] = weights.view(1, group, k2, 1, 1)
    om = om.view(b, group * 3 * k2, h, w)
    if pad_to:
        om = torch.cat([om, torch.randn(b, pad_to - om.shape[1], h, w, dtype=torch.float64)], 1)  # the padding is ignored
    return om


@pytest.mark.parametrize("group", [1, 2, 4])
def test_zero_offsets_are_a_depthwise_conv_shared_per_group(group):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    k = torch.randn(group, 3, 3, dtype=torch.float64)  # (group, ky, kx)
    # DCNv4 tap order: x outer, y inner
    weights = k.permute(0, 2, 1).reshape(group, 9)
    om = _offset_mask(2, group, 9, 11, weights, pad_to=group * 27 + 5)
    out = dcnv4_core(x, om, 3, group)
    ref = F.conv2d(x, k.repeat_interleave(8 // group, 0)[:, None], padding=1, groups=8)
    assert torch.allclose(out, ref, atol=1e-10)


def test_integer_and_half_pixel_offsets_sample_where_they_point():
    torch.manual_seed(1)
    x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    centre = torch.zeros(9, dtype=torch.float64)
    centre[4] = 1.0  # tap (1, 1): the pixel itself
    offsets = torch.zeros(9, 2, dtype=torch.float64)
    offsets[4] = torch.tensor([1.0, 0.0])  # one pixel right (x)
    out = dcnv4_core(x, _offset_mask(1, 1, 7, 9, centre, offsets.flatten()), 3, 1)
    assert torch.allclose(out[..., :-1], x[..., 1:]) and torch.all(out[..., -1] == 0)  # zeros outside
    offsets[4] = torch.tensor([0.0, -0.5])  # half a pixel up (y)
    out = dcnv4_core(x, _offset_mask(1, 1, 7, 9, 2 * centre, offsets.flatten()), 3, 1)
    assert torch.allclose(out[..., 1:, :], x[..., 1:, :] + x[..., :-1, :])  # bilinear, weight 2
    assert torch.allclose(out[..., 0, :], x[..., 0, :])  # the row above the image is zero


def test_fresh_layer_outputs_zero_and_learns_offsets():
    torch.manual_seed(2)
    layer = DCNv4(64, group=2)  # released: group = c // 16 on 2c channels
    assert layer.offset_mask.out_channels == 56  # ceil(2 * 27 / 8) * 8
    params = sum(p.numel() for p in layer.parameters())
    assert params == (64 * 9 + 64) + (64 * 56 + 56) + 2 * (64 * 64 + 64)  # dw 3x3, offset/weight, value, output
    x = torch.randn(1, 64, 8, 8)
    assert torch.all(layer(x) == 0)  # offsets and aggregation weights start at zero, as released
    with torch.no_grad():
        layer.offset_mask.bias.normal_()
        layer.offset_mask.weight.normal_(std=0.1)
    layer(x).square().mean().backward()
    assert layer.offset_mask.weight.grad.abs().sum() > 0 and layer.offset_mask_dw.weight.grad.abs().sum() > 0
    assert layer.value_proj.weight.grad.abs().sum() > 0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="group"):
        DCNv4(30, group=4)
    with pytest.raises(ValueError, match="offset_mask"):
        dcnv4_core(torch.zeros(1, 4, 5, 5), torch.zeros(1, 10, 5, 5), 3, 1)
