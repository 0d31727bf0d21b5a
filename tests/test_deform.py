"""Modulated deformable convolution: an ordinary conv at zero offsets, shifted sampling at integer offsets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defocuskit.models.deform import ModulatedDeformConv2d, deform_conv2d_reference


def _zero_offsets(b: int, groups: int, k: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(b, 2 * groups * k, h, w, dtype=torch.float64), torch.ones(b, groups * k, h, w, dtype=torch.float64)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups,offset_groups",
    [(1, 1, 1, 1, 1), (2, 1, 1, 1, 1), (1, 2, 2, 1, 2), (1, 1, 1, 4, 1), (1, 1, 1, 8, 4)],
)
def test_zero_offsets_equal_conv2d(stride, padding, dilation, groups, offset_groups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 11, 13, dtype=torch.float64)
    weight = torch.randn(8, 8 // groups, 3, 3, dtype=torch.float64)
    bias = torch.randn(8, dtype=torch.float64)
    ref = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    offset, mask = _zero_offsets(2, offset_groups, 9, *ref.shape[-2:])
    out = deform_conv2d_reference(x, offset, weight, bias, stride, padding, dilation, mask)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


def test_fresh_module_is_an_ordinary_conv():
    torch.manual_seed(1)
    layer = ModulatedDeformConv2d(6, 5, 3, padding=1)
    x = torch.randn(1, 6, 9, 10)
    offset, mask = layer.offsets_and_mask(x)
    assert torch.all(offset == 0) and torch.allclose(mask, torch.ones_like(mask))
    ref = F.conv2d(x, layer.weight, layer.bias, padding=1)
    assert torch.allclose(layer(x), ref, atol=1e-5)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_integer_offset_moves_sampling_point(axis):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 12, 14, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    conv = F.conv2d(x, weight, padding=1)
    offset, mask = _zero_offsets(1, 1, 9, 12, 14)
    offset.view(1, 9, 2, 12, 14)[:, :, 1 if axis == "x" else 0] = 1.0  # (dy, dx) pairs per tap
    out = deform_conv2d_reference(x, offset, weight, None, 1, 1, 1, mask)
    # +1 px sampling equals the ordinary conv read one pixel further along (interior pixels)
    if axis == "x":
        assert torch.allclose(out[..., 1:-2, 1:-2], conv[..., 1:-2, 2:-1], atol=1e-10)
        assert not torch.allclose(out[..., 1:-2, 1:-2], conv[..., 1:-2, 1:-2], atol=1e-3)
    else:
        assert torch.allclose(out[..., 1:-2, 1:-2], conv[..., 2:-1, 1:-2], atol=1e-10)


def test_half_pixel_offset_is_bilinear_and_mask_scales():
    torch.manual_seed(3)
    x = torch.randn(1, 2, 10, 10, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset, mask = _zero_offsets(1, 1, 9, 10, 10)
    shifted = offset.clone()
    shifted.view(1, 9, 2, 10, 10)[:, :, 1] = 1.0
    half = offset.clone()
    half.view(1, 9, 2, 10, 10)[:, :, 1] = 0.5
    a = deform_conv2d_reference(x, offset, weight, None, 1, 1, 1, mask)
    b = deform_conv2d_reference(x, shifted, weight, None, 1, 1, 1, mask)
    c = deform_conv2d_reference(x, half, weight, None, 1, 1, 1, mask)
    assert torch.allclose(c, (a + b) / 2, atol=1e-10)
    assert torch.allclose(deform_conv2d_reference(x, offset, weight, None, 1, 1, 1, 0.5 * mask), a / 2, atol=1e-10)


def test_backward_reaches_offsets_and_weights():
    torch.manual_seed(4)
    layer = ModulatedDeformConv2d(4, 4, 3, padding=1, groups=4)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    layer(x).square().mean().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.conv_offset_mask.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_fast_kernel_agrees_with_reference():
    ops = pytest.importorskip("torchvision.ops")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(5)
    x = torch.randn(2, 8, 13, 11, device=device)
    weight = torch.randn(6, 4, 3, 3, device=device)
    bias = torch.randn(6, device=device)
    offset = 2.5 * torch.randn(2, 2 * 2 * 9, 13, 11, device=device)
    mask = torch.rand(2, 2 * 9, 13, 11, device=device)
    fast = ops.deform_conv2d(x, offset, weight, bias, (1, 1), (1, 1), (1, 1), mask=mask)
    ref = deform_conv2d_reference(x, offset, weight, bias, 1, 1, 1, mask)
    assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-4)
    layer = ModulatedDeformConv2d(8, 8, 3, padding=1).to(device)
    with torch.no_grad():
        layer.conv_offset_mask.weight.normal_(0, 0.1)
    off, m = layer.offsets_and_mask(x)
    expected = deform_conv2d_reference(x, off, layer.weight, layer.bias, 1, 1, 1, m)
    assert torch.allclose(layer(x), expected, atol=1e-4, rtol=1e-4)
