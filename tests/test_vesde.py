"""VE-SDE: noise levels, reverse schedule, denoising score matching (against the exact Gaussian score)."""

from __future__ import annotations

import math

import pytest
import torch

from defocuskit.diffusion.vesde import dsm_loss, reverse_sigmas, sample_sigmas, sigma_at




MU, S0 = 0.5, 0.1  # a Gaussian "dataset": every pixel N(MU, S0^2)


def gaussian_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact score of N(MU, S0^2) convolved with N(0, sigma^2)."""
    return -(x - MU) / (S0**2 + sigma[:, None, None, None] ** 2)


def test_sigma_at_endpoints_and_geometric():
    t = torch.tensor([0.0, 0.5, 1.0])
    s = sigma_at(t, 0.01, 300.0)
    torch.testing.assert_close(s, torch.tensor([0.01, math.sqrt(0.01 * 300.0), 300.0]))
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_at(t, 1.0, 0.5)


def test_sample_sigmas_log_uniform_and_reproducible():
    g = torch.Generator().manual_seed(1)
    s = sample_sigmas(20000, 0.01, 300.0, generator=g)
    assert s.shape == (20000,)
    assert s.min() >= 0.01 and s.max() <= 300.0
    log_s = s.log()
    mid = 0.5 * (math.log(0.01) + math.log(300.0))
    assert abs(log_s.mean().item() - mid) < 0.1
    # uniform in log sigma: a quarter of the samples in each quarter of the log range
    q = (log_s - math.log(0.01)) / (math.log(300.0) - math.log(0.01))
    assert abs((q < 0.25).float().mean().item() - 0.25) < 0.02
    again = sample_sigmas(20000, 0.01, 300.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s, again)


def test_reverse_sigmas_schedule():
    s = reverse_sigmas(10, 0.01, 300.0)
    assert s.shape == (11,)
    assert s[0].item() == pytest.approx(300.0, rel=1e-6)
    assert s[-2].item() == pytest.approx(0.01, rel=1e-5)
    assert s[-1].item() == 0.0
    assert (s[:-1][1:] < s[:-1][:-1]).all()
    ratios = s[1:-1] / s[:-2]
    torch.testing.assert_close(ratios, torch.full_like(ratios, ratios[0].item()), rtol=1e-5, atol=0)
    assert reverse_sigmas(1, 0.01, 300.0).tolist() == [300.0, 0.0]
    with pytest.raises(ValueError, match="steps"):
        reverse_sigmas(0, 0.01, 300.0)


def test_dsm_loss_values_for_zero_and_exact_scores():
    torch.manual_seed(0)
    x0 = MU + S0 * torch.randn(64, 1, 8, 8)

    def zero(x, sigma):
        return torch.zeros_like(x)

    # a zero score leaves || z ||^2: 1 per element, or 0.5 * 64 per image for the summed form
    assert dsm_loss(zero, x0, 0.01, 50.0).item() == pytest.approx(1.0, abs=0.05)
    assert dsm_loss(zero, x0, 0.01, 50.0, reduce_mean=False).item() == pytest.approx(32.0, rel=0.05)

    # the exact score reaches the minimum S0^2 / (S0^2 + sigma^2) at each drawn sigma
    exact = dsm_loss(gaussian_score, x0, 0.01, 50.0, generator=torch.Generator().manual_seed(3)).item()
    sig = sample_sigmas(64, 0.01, 50.0, generator=torch.Generator().manual_seed(3))  # the same draws
    expected = (S0**2 / (S0**2 + sig**2)).mean().item()
    assert exact == pytest.approx(expected, rel=0.1)
    assert exact < 0.6


def test_dsm_loss_is_reproducible_with_generator_and_checks_shape():
    x0 = torch.rand(4, 1, 8, 8)
    a = dsm_loss(gaussian_score, x0, 0.01, 300.0, generator=torch.Generator().manual_seed(7))
    b = dsm_loss(gaussian_score, x0, 0.01, 300.0, generator=torch.Generator().manual_seed(7))
    assert a.item() == b.item()
    with pytest.raises(ValueError, match="B, C, H, W"):
        dsm_loss(gaussian_score, torch.rand(8, 8), 0.01, 300.0)
