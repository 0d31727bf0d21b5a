"""The warm-started fast sampler (CCDF start, DiffPIR-style steps) with toy analytic score models."""

from __future__ import annotations

import math

import pytest
import torch

from defocuskit.diffusion.consistency import identity_consistency, physics_consistency
from defocuskit.diffusion.fast_sampler import fast_sigmas, sample_fast
from defocuskit.diffusion.pc_sampler import randn_like
from defocuskit.imaging.lens_blur import DefocusOperator

MU, S0 = 0.5, 0.1  # every pixel of the "dataset" is N(MU, S0^2)


def gaussian_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -(x - MU) / (S0**2 + sigma[:, None, None, None] ** 2)


def zero_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


class Counting:
    """Wraps a score model; counts its calls and checks sigma has shape (B,)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, sigma):
        assert sigma.shape == (x.shape[0],)
        self.calls += 1
        return self.fn(x, sigma)


def blurred(b=2, c=1, hw=16, seed=0) -> torch.Tensor:
    return torch.rand(b, c, hw, hw, generator=torch.Generator().manual_seed(seed))


def warm_start(X: torch.Tensor, sigmas: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """x = X + sigmas[0] z, and the generator the sampler goes on with (as hidd.restore)."""
    g = torch.Generator().manual_seed(seed)
    return X + float(sigmas[0]) * randn_like(X, g), g


# ----------------------------------------------------------------------------- noise levels


@pytest.mark.parametrize("steps, start, end", [(40, 0.3, 0.01), (5, 2.0, 0.05), (2, 1.0, 0.5)])
def test_fast_sigmas_are_geometric_then_zero(steps: int, start: float, end: float):
    s = fast_sigmas(steps, start, end)
    assert s.shape == (steps + 1,) and s.dtype == torch.float32
    assert float(s[-1]) == 0.0
    assert float(s[0]) == pytest.approx(start, rel=1e-6) and float(s[-2]) == pytest.approx(end, rel=1e-6)
    assert bool((s[1:] < s[:-1]).all())
    ratios = (s[1:-1].double() / s[:-2].double()).tolist()
    assert ratios == pytest.approx([(end / start) ** (1 / (steps - 1))] * (steps - 1), rel=1e-5)


@pytest.mark.parametrize("steps, start, end", [(1, 0.3, 0.01), (1, 0.3, 0.3), (4, 0.3, 0.3)])
def test_fast_sigmas_single_level_and_equal_ends_are_still_strictly_descending(steps, start, end):
    s = fast_sigmas(steps, start, end)
    assert s.shape == (steps + 1,) and float(s[-1]) == 0.0
    assert float(s[0]) == pytest.approx(start, rel=1e-6)
    assert bool((s[1:] < s[:-1]).all())
    assert s[:-1].tolist() == pytest.approx([start] * steps, abs=1e-5)


@pytest.mark.parametrize("steps, start, end, message", [
    (0, 0.3, 0.01, "steps must be >= 1"),
    (-3, 0.3, 0.01, "steps must be >= 1"),
    (5, 0.3, 0.0, "0 < sigma_end <= sigma_start"),
    (5, 0.3, -0.1, "0 < sigma_end <= sigma_start"),
    (5, 0.1, 0.3, "0 < sigma_end <= sigma_start"),
])
def test_fast_sigmas_bad_arguments_raise(steps, start, end, message):
    with pytest.raises(ValueError, match=message):
        fast_sigmas(steps, start, end)


# ----------------------------------------------------------------------------- evaluations


@pytest.mark.parametrize("steps", [1, 3, 12])
def test_one_network_evaluation_per_step_and_a_callback_each_step(steps: int):
    X = blurred()
    sigmas = fast_sigmas(steps, 0.3, 0.01)
    model = Counting(gaussian_score)
    calls = []
    x, g = warm_start(X, sigmas, 0)
    out = sample_fast(model, x, sigmas, consistency=identity_consistency(X), generator=g,
                      callback=lambda s: calls.append((s["i"], s["n"])))
    assert model.calls == steps
    assert calls == [(i, steps) for i in range(steps)]
    assert out.shape == X.shape and out.min() >= 0 and out.max() <= 1


# ----------------------------------------------------------------------------- exact Gaussian score


def test_one_step_returns_the_exact_tweedie_estimate():
    X = blurred()
    s = 0.4
    x = X + s * randn_like(X, torch.Generator().manual_seed(1))
    out = sample_fast(gaussian_score, x, torch.tensor([s, 0.0]), consistency=None, clamp_x0=False)
    posterior_mean = MU + S0**2 / (S0**2 + s**2) * (x - MU)  # E[x0 | x] for x0 ~ N(MU, S0^2), x = x0 + s z
    torch.testing.assert_close(out, posterior_mean, atol=1e-6, rtol=1e-6)
    clamped = sample_fast(gaussian_score, 3.0 + x, torch.tensor([s, 0.0]), consistency=None)
    torch.testing.assert_close(clamped, (MU + S0**2 / (S0**2 + s**2) * (3.0 + x - MU)).clamp(0, 1))


def test_deterministic_steps_follow_the_exact_posterior_mean_in_closed_form():
    # zeta = 0, no data: x_{i+1} - MU = a_i (x_i - MU) with a_i = (S0^2 + s_i s_{i+1}) / (S0^2 + s_i^2),
    # and the output is the last Tweedie estimate MU + S0^2 / (S0^2 + s_n^2) (x_n - MU)
    X = blurred(seed=2)
    sigmas = fast_sigmas(10, 1.0, 0.02)
    x, g = warm_start(X, sigmas, 3)
    out = sample_fast(gaussian_score, x, sigmas, consistency=None, zeta=0.0, clamp_x0=False, generator=g)
    s = sigmas.double().tolist()
    factor = 1.0
    for i in range(len(s) - 2):
        factor *= (S0**2 + s[i] * s[i + 1]) / (S0**2 + s[i] ** 2)
    factor *= S0**2 / (S0**2 + s[-2] ** 2)
    torch.testing.assert_close(out, MU + factor * (x - MU), atol=1e-5, rtol=1e-5)


def test_the_output_mean_approaches_the_data_mean():
    X = torch.full((8, 1, 16, 16), 0.9)  # far from MU: the prior has to move it
    for zeta in (0.0, 0.3, 1.0):
        sigmas = fast_sigmas(40, 3.0, 0.01)
        x, g = warm_start(X, sigmas, 4)
        out = sample_fast(gaussian_score, x, sigmas, consistency=None, zeta=zeta, generator=g)
        assert out.mean().item() == pytest.approx(MU, abs=0.02), zeta
        assert out.std().item() < 2 * S0


# ----------------------------------------------------------------------------- data consistency


def test_consistency_gets_the_diffpir_weight_once_a_step():
    X = blurred()
    sigmas = fast_sigmas(6, 0.3, 0.01)
    seen = []

    def dc(x, w):
        seen.append(w)
        return x - w * (x - X)

    x, g = warm_start(X, sigmas, 5)
    sample_fast(zero_score, x, sigmas, consistency=dc, dc_sigma=0.07, generator=g)
    s = sigmas.tolist()[:-1]
    assert seen == pytest.approx([si**2 / (si**2 + 0.07**2) for si in s], rel=1e-6)


def test_identity_consistency_with_a_zero_score_contracts_to_the_input_in_closed_form():
    # zero score, zeta = 0, no clamp: x0_i = x_i - w_i (x_i - X) and x_{i+1} = x0_i + s_{i+1} (x_i - x0_i) / s_i, so
    # x_{i+1} - X = (1 - w_i (1 - s_{i+1} / s_i)) (x_i - X), and the output is X + (1 - w_n) (x_n - X)
    X = blurred(c=3)
    dc_sigma = 0.05
    sigmas = fast_sigmas(8, 0.3, 0.01)
    x, g = warm_start(X, sigmas, 6)
    out = sample_fast(zero_score, x, sigmas, consistency=identity_consistency(X), dc_sigma=dc_sigma, zeta=0.0,
                      clamp_x0=False, generator=g)
    s = sigmas.double().tolist()
    w = [si**2 / (si**2 + dc_sigma**2) for si in s[:-1]]
    factor = 1.0
    for i in range(len(w) - 1):
        factor *= 1.0 - w[i] * (1.0 - s[i + 1] / s[i])
    factor *= 1.0 - w[-1]
    torch.testing.assert_close(out, X + factor * (x - X), atol=1e-5, rtol=1e-5)


def test_identity_consistency_with_a_zero_score_keeps_an_unnoised_input_and_the_unit_range():
    X = blurred(c=3, seed=7)
    sigmas = fast_sigmas(10, 0.3, 0.01)
    out = sample_fast(zero_score, X.clone(), sigmas, consistency=identity_consistency(X), zeta=0.0)
    torch.testing.assert_close(out, X, atol=1e-6, rtol=0)  # X is a fixed point of every deterministic step
    x, g = warm_start(X, sigmas, 8)
    noisy = sample_fast(zero_score, x, sigmas, consistency=identity_consistency(X), zeta=1.0, generator=g)
    # clamped estimate pulled towards X in [0, 1]: a convex combination stays in [0, 1]
    assert noisy.min() >= 0 and noisy.max() <= 1


@pytest.mark.parametrize("score", [zero_score, gaussian_score])
def test_physics_consistency_with_a_zero_coc_equals_identity_consistency(score):
    X = blurred(c=3, hw=24, seed=9)
    sigmas = fast_sigmas(6, 0.3, 0.01)
    operator = DefocusOperator(torch.zeros(X.shape[0], 1, 24, 24), "over")
    x, g = warm_start(X, sigmas, 10)
    dc = physics_consistency(X, operator, cg_steps=5, linear_light=False)
    physics = sample_fast(score, x, sigmas, consistency=dc, generator=g)
    x, g = warm_start(X, sigmas, 10)
    identity = sample_fast(score, x, sigmas, consistency=identity_consistency(X), generator=g)
    torch.testing.assert_close(physics, identity, atol=1e-5, rtol=0)


def test_physics_consistency_rejects_weights_outside_the_unit_interval():
    X = blurred(hw=8)
    dc = physics_consistency(X, DefocusOperator(torch.zeros(2, 1, 8, 8)), cg_steps=2)
    for w in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            dc(X, w)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs, message", [
    (dict(zeta=-0.1), "zeta"),
    (dict(zeta=1.5), "zeta"),
    (dict(dc_sigma=0.0), "dc_sigma"),
    (dict(dc_sigma=-0.05), "dc_sigma"),
])
def test_bad_zeta_or_dc_sigma_raise(kwargs, message):
    X = blurred(hw=8)
    with pytest.raises(ValueError, match=message):
        sample_fast(zero_score, X, fast_sigmas(3, 0.3, 0.01), consistency=identity_consistency(X), **kwargs)


def test_bad_sigmas_or_shapes_raise():
    X = blurred(hw=8)
    with pytest.raises(ValueError, match="descending"):
        sample_fast(zero_score, X, torch.tensor([0.1, 0.3, 0.0]), consistency=None)
    with pytest.raises(ValueError, match="B, C, H, W"):
        sample_fast(zero_score, X[0], fast_sigmas(3, 0.3, 0.01), consistency=None)
