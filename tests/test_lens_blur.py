"""The thin-lens defocus operator K_c of lens_blur: adjointness, constants, identity, plain discs, occlusion, prox."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defocuskit.imaging.lens_blur import (
    MODELS,
    DefocusOperator,
    coc_levels,
    layer_weights,
    linear_to_srgb,
    srgb_to_linear,
)
from defocuskit.imaging.optics import defocus_psf, disc_psf

B, C, H, W = 2, 3, 40, 50


def rand(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_coc(seed: int = 0, hi: float = 9.0) -> torch.Tensor:
    """A random CoC map (B, 1, H, W) in [0, hi] px: a smooth ramp plus pixel noise, so every level is used."""
    ramp = torch.linspace(0.0, 1.0, W)[None, None, None, :].expand(B, 1, H, W)
    return (hi * (0.7 * ramp + 0.3 * rand(B, 1, H, W, seed=seed))).clamp(0.0, hi)


def disc_conv(x: torch.Tensor, d: float, psf: str = "disc") -> torch.Tensor:
    """Zero-padded convolution of every channel with defocus_psf(d, psf) (symmetric: correlation = convolution)."""
    k = torch.from_numpy(defocus_psf(d, psf)).to(x.dtype)
    r = k.shape[0] // 2
    c = x.shape[1]
    return F.conv2d(x, k[None, None].expand(c, 1, *k.shape), padding=r, groups=c)


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


# ----------------------------------------------------------------------------- adjoint


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model", MODELS)
def test_adjoint_matches_forward(model: str, dtype: torch.dtype) -> None:
    for seed in (0, 1):
        op = DefocusOperator(random_coc(seed), model)
        x, y = rand(B, C, H, W, seed=10 + seed, dtype=dtype), rand(B, C, H, W, seed=20 + seed, dtype=dtype)
        kx, kty = op.forward(x), op.adjoint(y)
        assert kx.shape == kty.shape == (B, C, H, W)
        assert kx.dtype == kty.dtype == dtype  # float64 inputs are supported and stay float64
        lhs, rhs = inner(kx, y), inner(x, kty)
        assert lhs == pytest.approx(rhs, rel=1e-5 if dtype == torch.float32 else 1e-8)


@pytest.mark.parametrize("model", MODELS)
def test_operator_is_linear(model: str) -> None:
    op = DefocusOperator(random_coc(2), model)
    x, y = rand(B, C, H, W, seed=3), rand(B, C, H, W, seed=4)
    torch.testing.assert_close(op.forward(2.0 * x - 0.5 * y), 2.0 * op.forward(x) - 0.5 * op.forward(y),
                               atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- constants and identity


@pytest.mark.parametrize("model", ["over", "scatter"])
def test_constant_images_are_preserved_including_the_borders(model: str) -> None:
    op = DefocusOperator(random_coc(5), model)
    for value in (1.0, 0.37):
        out = op.forward(torch.full((B, C, H, W), value))
        torch.testing.assert_close(out, torch.full_like(out, value), atol=1e-5, rtol=0)


def test_gather_preserves_constants_away_from_the_borders() -> None:
    op = DefocusOperator(random_coc(5), "gather")
    out = op.forward(torch.ones(B, C, H, W))
    r = op.radius
    torch.testing.assert_close(out[..., r:-r, r:-r], torch.ones_like(out[..., r:-r, r:-r]), atol=1e-5, rtol=0)


def test_gather_preserves_constants_at_the_borders() -> None:
    op = DefocusOperator(random_coc(5), "gather")
    out = op.forward(torch.ones(B, C, H, W))
    torch.testing.assert_close(out, torch.ones_like(out), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_coc_below_one_pixel_is_the_identity(model: str) -> None:
    x = rand(B, C, H, W, seed=6)
    for coc in (torch.zeros(B, 1, H, W), 0.95 * rand(B, 1, H, W, seed=7)):  # every disc of at most 1 px is a delta
        op = DefocusOperator(coc, model)
        torch.testing.assert_close(op.forward(x), x, atol=1e-5, rtol=0)
        torch.testing.assert_close(op.adjoint(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("d", [3.0, 6.5])
@pytest.mark.parametrize("model", MODELS)
def test_uniform_coc_is_a_plain_disc_convolution(model: str, d: float) -> None:
    x = rand(B, C, H, W, seed=8)
    op = DefocusOperator(torch.full((B, 1, H, W), d), model)
    assert op.levels.tolist() == [d]
    r = disc_psf(d).shape[0] // 2
    got, want = op.forward(x)[..., r:-r, r:-r], disc_conv(x, d)[..., r:-r, r:-r]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("d", [3.0, 6.5])
def test_uniform_coc_with_the_gaussian_psf_is_a_plain_gaussian_convolution(d: float) -> None:
    x = rand(B, C, H, W, seed=8)
    op = DefocusOperator(torch.full((B, 1, H, W), d), "over", psf="gaussian")
    r = defocus_psf(d, "gaussian").shape[0] // 2
    got, want = op.forward(x)[..., r:-r, r:-r], disc_conv(x, d, "gaussian")[..., r:-r, r:-r]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - disc_conv(x, d)[..., r:-r, r:-r]).abs().max() > 1e-2  # not the disc


def test_the_gaussian_psf_deconvolves_an_overestimated_coc_without_the_discs_ringing() -> None:
    """A disc blur of 4 px inverted with a map that reads 6 px: the disc's spectrum has zeros that the wrong
    diameter inverts with the wrong sign; the Gaussian of the same second moment has none."""
    x = F.avg_pool2d(rand(1, 1, 96, 96, seed=21), 3, 1, 1)  # a texture with some correlation
    op_true = DefocusOperator(torch.full((1, 1, 96, 96), 4.0), "over")
    y = op_true.forward(x)
    over = torch.full((1, 1, 96, 96), 6.0)
    errors = {}
    for psf in ("disc", "gaussian"):
        restored = DefocusOperator(over, "over", psf=psf).prox(y, y, 0.05, 30)
        errors[psf] = float(((restored - x)[..., 8:-8, 8:-8] ** 2).mean())
    blurred = float(((y - x)[..., 8:-8, 8:-8] ** 2).mean())
    assert errors["gaussian"] < blurred < errors["disc"], (errors, blurred)


def test_uniform_coc_over_and_scatter_are_normalised_convolutions_at_the_borders() -> None:
    d = 5.0
    x = rand(B, C, H, W, seed=9)
    normalised = disc_conv(x, d) / disc_conv(torch.ones_like(x), d)
    for model in ("over", "scatter"):
        out = DefocusOperator(torch.full((B, 1, H, W), d), model).forward(x)
        torch.testing.assert_close(out, normalised, atol=1e-5, rtol=0)


def test_over_keeps_a_sharp_foreground_sharp_in_front_of_a_blurred_background() -> None:
    coc = torch.zeros(B, 1, H, W)
    coc[..., W // 2 :] = 8.0  # left half in focus (nearer), right half 8 px
    x = rand(B, C, H, W, seed=11)
    op = DefocusOperator(coc, "over")
    out = op.forward(x)
    r = disc_psf(8.0).shape[0] // 2
    left = slice(0, W // 2 - r)  # far from the edge (r px)
    torch.testing.assert_close(out[..., left], x[..., left], atol=1e-5, rtol=0)
    # far from the edge and the borders, the background is the plain 8 px disc blur of the background
    right = (slice(r, H - r), slice(W // 2 + r, W - r))
    torch.testing.assert_close(out[..., right[0], right[1]], disc_conv(x, 8.0)[..., right[0], right[1]],
                               atol=1e-5, rtol=0)
    assert (out[..., right[0], right[1]] - x[..., right[0], right[1]]).abs().mean() > 0.05  # visibly blurred


# ----------------------------------------------------------------------------- levels


def test_coc_levels_and_layer_weights_partition_unity() -> None:
    coc = random_coc(12)
    levels = coc_levels(coc, 12)
    assert len(levels) == 12 and float(levels[0]) == pytest.approx(float(coc.min()))
    assert float(levels[-1]) == pytest.approx(float(coc.max()))
    weights = layer_weights(coc, levels.float())
    assert weights.shape == (B, 12, H, W) and weights.min() >= 0
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(B, H, W))
    # the weighted level is the pixel's CoC: linear interpolation between neighbouring levels
    torch.testing.assert_close((weights * levels.float()[None, :, None, None]).sum(dim=1), coc[:, 0],
                               atol=1e-4, rtol=0)
    assert coc_levels(torch.full((1, 1, 4, 4), 2.0), 12).tolist() == [2.0]
    assert len(coc_levels(torch.tensor([0.0, 0.5]).reshape(1, 1, 1, 2), 12)) == 3  # 0.25 px spacing


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("lo, hi", [(-16.0, 16.0), (-5.0, 21.0)])
def test_signed_map_across_the_focal_plane_leaves_its_in_focus_pixels_sharp(model: str, lo: float, hi: float) -> None:
    """Focus between a near and a far plane: 12 levels over -16..16 px had none at 0, and the in-focus band was
    blurred by the discs of -1.45 and +1.45 px (K x off by 0.11 of random texture there), so that the data step
    sharpened what the lens left sharp (the prox baseline took that band of a render from 150 to 33 dB)."""
    coc = torch.zeros(1, 1, 48, 96)
    coc[..., :32], coc[..., 64:] = lo, hi
    levels = coc_levels(coc, 12)
    assert len(levels) <= 13 and 0.0 in levels.tolist() and levels[0] <= lo and levels[-1] >= hi
    x = rand(1, 3, 48, 96, seed=3)
    out = DefocusOperator(coc, model, 12).forward(x)
    inside = (..., slice(32 + 12, 64 - 12))  # beyond the reach of the planes' discs
    torch.testing.assert_close(out[inside], x[inside], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- prox


@pytest.mark.parametrize("model", MODELS)
def test_prox_solves_the_normal_equations(model: str) -> None:
    op = DefocusOperator(random_coc(13), model)
    y, x0 = rand(B, C, H, W, seed=14), rand(B, C, H, W, seed=15)
    rho = 0.05
    x = op.prox(y, x0, rho, steps=60)
    lhs = op.adjoint(op.forward(x)) + rho * x
    rhs = op.adjoint(y) + rho * x0
    assert float((lhs - rhs).norm() / rhs.norm()) < 1e-3


def test_prox_with_zero_steps_returns_x0_and_identity_prox_is_the_weighted_mean() -> None:
    op = DefocusOperator(random_coc(16), "over")
    y, x0 = rand(B, C, H, W, seed=17), rand(B, C, H, W, seed=18)
    torch.testing.assert_close(op.prox(y, x0, 0.3, steps=0), x0, atol=0, rtol=0)
    ident = DefocusOperator(torch.zeros(B, 1, H, W), "over")
    rho = 0.3
    torch.testing.assert_close(ident.prox(y, x0, rho, steps=3), (y + rho * x0) / (1 + rho), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("coc, kwargs, message", [
    (torch.zeros(B, 3, H, W), {}, r"CoC map \(B, 1, H, W\)"),
    (torch.zeros(1, H, W), {}, r"CoC map \(B, 1, H, W\)"),
    (torch.full((B, 1, H, W), math.nan), {}, "finite"),
    (torch.full((B, 1, H, W), math.inf), {}, "finite"),
    (torch.zeros(B, 1, H, W), {"model": "box"}, "unknown model 'box'"),
    (torch.zeros(B, 1, H, W), {"n_levels": 0}, "n_levels"),
    (torch.zeros(B, 1, H, W), {"psf": "box"}, "unknown psf 'box'"),
])
def test_bad_operator_arguments_raise(coc: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DefocusOperator(coc, **kwargs)


def test_images_that_do_not_match_the_map_raise() -> None:
    op = DefocusOperator(random_coc(19), "scatter")
    for bad in (torch.rand(B, C, H, W + 1), torch.rand(B, C, H - 1, W), torch.rand(B + 1, C, H, W),
                torch.rand(C, H, W)):
        with pytest.raises(ValueError, match="does not match the CoC map"):
            op.forward(bad)
        with pytest.raises(ValueError, match="does not match the CoC map"):
            op.adjoint(bad)
    x = torch.rand(B, C, H, W)
    with pytest.raises(ValueError, match="rho >= 0"):
        op.prox(x, x, -1.0)
    with pytest.raises(ValueError, match="steps >= 0"):
        op.prox(x, x, 0.1, steps=-1)


# ----------------------------------------------------------------------------- sRGB


def test_srgb_round_trip_and_reference_values() -> None:
    x = torch.linspace(0.0, 1.0, 1001)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=2e-6, rtol=0)
    torch.testing.assert_close(srgb_to_linear(linear_to_srgb(x)), x, atol=2e-6, rtol=0)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.214041, abs=1e-5)
    assert float(linear_to_srgb(torch.tensor(0.18))) == pytest.approx(0.461356, abs=1e-5)
    assert float(srgb_to_linear(torch.tensor(0.04))) == pytest.approx(0.04 / 12.92, rel=1e-6)  # linear toe
    assert srgb_to_linear(torch.tensor([-0.5, 1.5])).tolist() == [0.0, 1.0]  # clamped
    assert bool((srgb_to_linear(x)[1:] > srgb_to_linear(x)[:-1]).all())  # strictly increasing


def _occlusion_scene() -> tuple[np.ndarray, np.ndarray]:
    """A textured far wall (8 m), a near box (1 m) and a middle strip (3 m), 64 x 64 linear RGB."""
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.random((16, 16, 3)), np.ones((4, 4, 1))).astype(np.float32)
    depth = np.full((64, 64), 8.0, np.float32)
    depth[20:44, 16:40] = 1.0
    depth[:, 50:] = 3.0
    return rgb, depth


@pytest.mark.parametrize("focus_m", [1.0, 2.0, 8.0])  # on the nearest subject, between, behind the foreground
def test_signed_coc_operator_reproduces_the_renderer_for_focus_in_front_and_behind(focus_m: float) -> None:
    from defocuskit.data.render import render_defocus

    rgb, depth = _occlusion_scene()
    out, coc = render_defocus(rgb, depth, 1.8, 50.0, focus_m, 60.0, np.random.default_rng(0), n_layers=16, noise=None,
                               compositing="normalise")
    assert (coc < 0).any() == (focus_m > 1.0)  # the foreground is in front of the focal plane
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    inner = (slice(12, -12), slice(12, -12))  # the renderer reflects at the border, the operator pads with 0

    def psnr(c: np.ndarray) -> float:
        y = DefocusOperator(torch.from_numpy(c)[None, None], n_levels=16).forward(x)[0].permute(1, 2, 0).numpy()
        return float(10 * np.log10(1.0 / max(((y[inner] - out[inner]) ** 2).mean(), 1e-20)))

    assert psnr(coc) > 100.0  # the same layers (CoC 0 among them where the map spans the focal plane)
    if focus_m > 1.0:  # without the sign the blurred foreground is put behind the sharp wall
        assert psnr(np.abs(coc)) < 40.0


# ----------------------------------------------------------------------------- fast form = dense reference form


def _focus_scenes(hi: float) -> torch.Tensor:
    """(3, 1, 36, 44) signed CoC maps: focus on a near box (background blurred up to `hi` px), focus behind a box
    (the box in front, negative), and a tile in focus throughout (it uses few of the batch's layers, as tiles do)."""
    coc = torch.zeros(3, 1, 36, 44)
    ramp = torch.linspace(0.3, 1.0, 44)
    coc[0, 0] = hi * ramp
    coc[0, 0, 8:24, 10:26] = 0.0  # the focused subject, nearest
    coc[1, 0] = 0.4 * hi * ramp
    coc[1, 0, 12:30, 4:20] = -0.8 * hi  # a box in front of the focal plane
    coc[2, 0] = 0.5 * rand(36, 44, seed=30)  # below 1 px
    return coc


@pytest.mark.parametrize("hi, spatial", [(9.0, True), (17.0, False)])  # depthwise convolution / FFT paths
@pytest.mark.parametrize("model", MODELS)
def test_fast_operator_equals_the_reference_on_front_and_back_focus_scenes(model: str, hi: float, spatial: bool):
    coc = _focus_scenes(hi)
    fast, ref = DefocusOperator(coc, model), DefocusOperator(coc, model, fast=False)
    assert fast._spatial == spatial and len(fast._k) < coc.shape[0] * len(fast.levels)  # some pairs skipped
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-6)):  # rounding (the reference: float32 OTFs)
        x, y = rand(3, 3, 36, 44, seed=31, dtype=dtype), rand(3, 3, 36, 44, seed=32, dtype=dtype)
        for fn in ("forward", "adjoint"):
            got, want = getattr(fast, fn)(x), getattr(ref, fn)(x)
            assert got.dtype == want.dtype == dtype
            torch.testing.assert_close(got, want, atol=tol, rtol=0)
        want = ref.prox(y, x, 0.05, 10)  # conjugate gradients amplify the rounding a little
        torch.testing.assert_close(fast.prox(y, x, 0.05, 10), want, atol=5 * tol, rtol=0)
        torch.testing.assert_close(fast.prox(y, x, 0.05, 10, aty=fast.adjoint(y)), want, atol=5 * tol, rtol=0)
