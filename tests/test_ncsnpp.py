"""NCSN++: shapes, gradients, 1/sigma output scaling, FIR resampling, paper-size parameter count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defocuskit.models.layers import AttnBlock, fir_downsample2d, fir_kernel_2d, fir_upsample2d
from defocuskit.models.ncsnpp import NCSNpp


def tiny(**kw) -> NCSNpp:
    cfg = dict(channels=1, image_size=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,))
    cfg.update(kw)
    return NCSNpp(**cfg)


def upfirdn2d_reference(x, k, up=1, down=1, pad=(0, 0)):
    """Literal upfirdn2d: zero insertion, zero padding, convolution (flipped kernel), decimation."""
    b, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(b, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    w_ = torch.flip(k, (0, 1))[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, w_, groups=c)
    return x[:, :, ::down, ::down]


def test_forward_backward_tiny():
    torch.manual_seed(0)
    net = tiny()
    x = torch.rand(2, 1, 32, 32)
    sigma = torch.tensor([0.05, 20.0])
    out = net(x, sigma)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(g is not None for g in grads.values())
    # the zero-initialised output convolutions receive a real gradient
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("out_conv"))


def test_attention_placed_at_16_for_32px():
    net = tiny()
    assert net.attn_levels == [False, True]
    assert all(isinstance(m, AttnBlock) for m in net.down_attn[1])
    assert not any(isinstance(m, AttnBlock) for m in net.down_attn[0])


@pytest.mark.parametrize("hw", [(32, 32), (24, 40), (8, 16)])
def test_any_size_divisible_by_multiple(hw):
    net = tiny(ch_mult=(1, 2, 2))  # multiple 4
    x = torch.rand(1, 1, *hw)
    assert net(x, torch.tensor([1.0])).shape == x.shape


def test_bad_sizes_and_channels_raise():
    net = tiny(ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.rand(1, 1, 30, 32), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.rand(1, 3, 32, 32), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="image_size"):
        tiny(image_size=30, ch_mult=(1, 2, 2))


def test_output_scaled_by_one_over_sigma():
    torch.manual_seed(0)
    net = tiny(channels=3)
    with torch.no_grad():
        net.fourier.W.zero_()  # the embedding no longer depends on sigma: net(x, log sigma) is fixed
        for conv in net.out_conv:
            conv.weight.normal_(0, 0.1)
    x = torch.rand(2, 3, 32, 32)
    s1 = net(x, torch.tensor([0.5, 0.5]))
    s2 = net(x, torch.tensor([4.0, 4.0]))
    assert s1.abs().mean() > 1e-3
    torch.testing.assert_close(s1 * 0.5, s2 * 4.0, rtol=1e-4, atol=1e-6)
    # a scalar sigma broadcasts over the batch
    torch.testing.assert_close(net(x, 0.5), s1)


def test_sigma_conditioning_changes_output():
    torch.manual_seed(0)
    net = tiny()
    with torch.no_grad():
        for conv in net.out_conv:
            conv.weight.normal_(0, 0.1)
    x = torch.rand(1, 1, 32, 32)
    a = net(x, torch.tensor([1.0])) * 1.0
    b = net(x, torch.tensor([2.0])) * 2.0
    assert not torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("taps", [(1.0, 3.0, 3.0, 1.0), (1.0, 2.0, 3.0, 4.0), (1.0, 1.0)])
def test_fir_resampling_matches_upfirdn2d(taps):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 10)
    k = fir_kernel_2d(taps)
    p = k.shape[0] - 2
    up_ref = upfirdn2d_reference(x, k * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))
    down_ref = upfirdn2d_reference(x, k, down=2, pad=((p + 1) // 2, p // 2))
    torch.testing.assert_close(fir_upsample2d(x, k), up_ref)
    torch.testing.assert_close(fir_downsample2d(x, k), down_ref)
    assert fir_upsample2d(x, k).shape == (2, 3, 16, 20)
    assert fir_downsample2d(x, k).shape == (2, 3, 4, 5)


def test_fir_keeps_constant_interior():
    x = torch.full((1, 1, 16, 16), 2.0)
    k = fir_kernel_2d()
    torch.testing.assert_close(fir_upsample2d(x, k)[..., 2:-2, 2:-2], torch.full((1, 1, 28, 28), 2.0))
    torch.testing.assert_close(fir_downsample2d(x, k)[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 2.0))


def test_paper_size_parameter_count():
    net = NCSNpp()  # nf 64, ch_mult (1,1,2,2,2,2,2), 2 res blocks, attention at 16, one channel
    n = sum(p.numel() for p in net.parameters())
    print(f"paper-size NCSN++ (1 channel, nf 64): {n:,} parameters")
    assert 15_000_000 < n < 18_000_000
    # the 7-level network runs on a 64x64 input (multiple of 2**6)
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64), torch.tensor([10.0]))
    assert out.shape == (1, 1, 64, 64)


def test_attention_equals_softmax_attention_written_out():
    # AttnBlock hands torch a one-head (B, 1, N, C) layout for its fused CPU kernel: the same result as the formula
    torch.manual_seed(0)
    block = AttnBlock(16)
    with torch.no_grad():
        block.proj.weight.normal_(0.0, 0.1)  # initialised at zero: move it so the attention shows
    x = torch.randn(3, 16, 8, 8, requires_grad=True)
    h = block.norm(x)
    q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (block.q, block.k, block.v))  # (B, N, C)
    attn = torch.softmax(q @ k.transpose(1, 2) / 16**0.5, dim=-1) @ v
    want = (x + block.proj(attn.transpose(1, 2).reshape(3, 16, 8, 8))) / 2**0.5
    got = block(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    (g_got,), (g_want,) = torch.autograd.grad(got.sum(), x), torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want, atol=1e-5, rtol=1e-5)  # training backpropagates through it alike
