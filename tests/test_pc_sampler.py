"""PC deblurring sampler with toy analytic score models (exact score of a Gaussian dataset)."""

from __future__ import annotations

import pytest
import torch

from defocuskit.diffusion.pc_sampler import sample_pc_deblur
from defocuskit.diffusion.vesde import reverse_sigmas




MU, S0 = 0.5, 0.1  # every pixel of the "dataset" is N(MU, S0^2)

PLAIN = dict(consistency=(0.0, 0.0), carry_mean=False, normalize_each_step=False)


def gaussian_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -(x - MU) / (S0**2 + sigma[:, None, None, None] ** 2)


def zero_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


class Counting:
    """Wraps a score model; counts network evaluations per image (batch items / images)."""

    def __init__(self, fn, images: int):
        self.fn, self.images, self.nfe = fn, images, 0

    def __call__(self, x, sigma):
        assert sigma.shape == (x.shape[0],)
        self.nfe += x.shape[0] // self.images
        return self.fn(x, sigma)


def blurred(b=8, hw=16, seed=0):
    return torch.rand(b, 1, hw, hw, generator=torch.Generator().manual_seed(seed))


def test_predictor_alone_recovers_gaussian_statistics():
    X = blurred()
    sigmas = reverse_sigmas(400, 0.001, 20.0)
    g = torch.Generator().manual_seed(1)
    x = sample_pc_deblur(gaussian_score, X, sigmas, corrector=False, generator=g, **PLAIN)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(S0, rel=0.08)


def test_predictor_with_langevin_corrector_recovers_gaussian_statistics():
    X = blurred()
    sigmas = reverse_sigmas(200, 0.001, 20.0)
    x = sample_pc_deblur(
        gaussian_score, X, sigmas, snr=0.16, corrector_chains=0, generator=torch.Generator().manual_seed(2), **PLAIN
    )
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(S0, rel=0.1)


def test_carrying_the_mean_collapses_to_the_data_mean():
    # the released HIDD-DM loop drops the predictor's noise: the state moves to the mode
    X = blurred()
    sigmas = reverse_sigmas(400, 0.001, 20.0)
    x = sample_pc_deblur(
        gaussian_score, X, sigmas, corrector=False, consistency=(0.0, 0.0), carry_mean=True, normalize_each_step=False
    )
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() < 0.2 * S0


def test_consistency_pulls_towards_the_input_exactly():
    X = blurred(b=2, hw=8)
    steps, (w1, w2) = 20, (0.08, 0.15)
    sigmas = reverse_sigmas(steps, 0.01, 50.0)
    x = sample_pc_deblur(
        zero_score, X, sigmas, corrector=False, consistency=(w1, w2), carry_mean=True,
        normalize_each_step=False, generator=torch.Generator().manual_seed(5),
    )
    x0 = 50.0 * torch.randn(X.shape, generator=torch.Generator().manual_seed(5))  # the initial state
    expected = X + ((1 - w1) * (1 - w2)) ** steps * (x0 - X)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


def test_consistency_brings_gaussian_samples_closer_to_the_input():
    X = blurred()
    sigmas = reverse_sigmas(100, 0.001, 20.0)
    kw = dict(corrector=False, carry_mean=False, normalize_each_step=False)
    free = sample_pc_deblur(gaussian_score, X, sigmas, consistency=(0.0, 0.0),
                            generator=torch.Generator().manual_seed(3), **kw)
    tied = sample_pc_deblur(gaussian_score, X, sigmas, consistency=(0.08, 0.15),
                            generator=torch.Generator().manual_seed(3), **kw)
    assert (tied - X).abs().mean() < 0.5 * (free - X).abs().mean()


@pytest.mark.parametrize(
    "options, per_step",
    [
        (dict(), 4),  # paper sampler: predictor + 3 corrector chains
        (dict(corrector_chains=1), 2),
        (dict(corrector_chains=0), 2),
        (dict(corrector=False), 1),
        (dict(predictor=False), 3),
        (dict(predictor=False, corrector=False), 0),
    ],
)
def test_network_evaluations_per_step(options, per_step):
    X = blurred(b=2, hw=8)
    model = Counting(gaussian_score, images=2)
    calls = []
    sample_pc_deblur(model, X, reverse_sigmas(7, 0.01, 50.0), callback=lambda i, n: calls.append((i, n)), **options)
    assert model.nfe == 7 * per_step
    assert calls == [(i, 7) for i in range(7)]


def test_paper_defaults_give_images_in_unit_range_and_are_reproducible():
    X = blurred(b=3, hw=8)
    sigmas = reverse_sigmas(10, 0.01, 300.0)
    a = sample_pc_deblur(gaussian_score, X, sigmas, generator=torch.Generator().manual_seed(9))
    b = sample_pc_deblur(gaussian_score, X, sigmas, generator=torch.Generator().manual_seed(9))
    c = sample_pc_deblur(gaussian_score, X, sigmas, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    flat = a.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3))


def test_chains_average_scores_at_the_chain_states():
    # one step from sigma_0: with the chains all at the initial state x0, the corrector moves the
    # state by eps * s(x0); with a linear score this is checkable in closed form
    X = torch.zeros(1, 1, 4, 4)
    sigmas = torch.tensor([2.0, 0.0])
    seen = []

    def score(x, sigma):
        seen.append(x.clone())
        return -x

    x = sample_pc_deblur(score, X, sigmas, predictor=False, corrector_chains=3, consistency=(0.0, 0.0),
                         normalize_each_step=False, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 1 and seen[0].shape[0] == 3  # three chains in one batched call
    g = torch.Generator().manual_seed(0)
    x0 = 2.0 * torch.randn(X.shape, generator=g)
    for chain in seen[0].split(1):
        torch.testing.assert_close(chain, x0)
    z = [torch.randn(X.shape, generator=g) for _ in range(3)]
    eps = 2 * (0.021 * torch.stack([zj.norm() for zj in z]).mean() / x0.norm()) ** 2  # the three scores are -x0
    torch.testing.assert_close(x, x0 - eps * x0)


def test_bad_arguments_raise():
    X = blurred(b=1, hw=8)
    with pytest.raises(ValueError, match="descending"):
        sample_pc_deblur(zero_score, X, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="B, C, H, W"):
        sample_pc_deblur(zero_score, X[0], reverse_sigmas(3, 0.01, 1.0))
    with pytest.raises(ValueError, match="corrector_chains"):
        sample_pc_deblur(zero_score, X, reverse_sigmas(3, 0.01, 1.0), corrector_chains=-1)
