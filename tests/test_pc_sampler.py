"""PC deblurring samplers (`sample_pc`, `sample_released`) with toy analytic scores (exact Gaussian scores)."""

from __future__ import annotations

import pytest
import torch

from defocuskit.diffusion.consistency import identity_consistency
from defocuskit.diffusion.pc_sampler import check_sigmas, nfe_per_step, randn_like, sample_pc, sample_released
from defocuskit.diffusion.vesde import reverse_sigmas

MU, S0 = 0.5, 0.1  # every pixel of the "dataset" is N(MU, S0^2)

PLAIN = dict(consistency=None, carry_mean=False)  # score_sde's PC sampler: no data, noisy updates


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


def blurred(b=8, hw=16, seed=0, c=1):
    return torch.rand(b, c, hw, hw, generator=torch.Generator().manual_seed(seed))


def start(X: torch.Tensor, sigmas: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """The released start x = sigmas[0] z, and the generator (already advanced) that the sampler goes on with."""
    g = torch.Generator().manual_seed(seed)
    return float(sigmas[0]) * randn_like(X, g), g


def test_predictor_alone_recovers_gaussian_statistics():
    X = blurred()
    sigmas = reverse_sigmas(400, 0.001, 20.0)
    x, g = start(X, sigmas, 1)
    x = sample_pc(gaussian_score, x, sigmas, corrector=False, generator=g, **PLAIN)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(S0, rel=0.08)


def test_predictor_with_langevin_corrector_recovers_gaussian_statistics():
    X = blurred()
    sigmas = reverse_sigmas(200, 0.001, 20.0)
    x, g = start(X, sigmas, 2)
    x = sample_pc(gaussian_score, x, sigmas, snr=0.16, corrector_chains=0, generator=g, **PLAIN)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(S0, rel=0.1)


def test_carrying_the_mean_collapses_to_the_data_mean():
    # the released HIDD-DM loop drops the predictor's noise: the state moves to the mode
    X = blurred()
    sigmas = reverse_sigmas(400, 0.001, 20.0)
    x, _ = start(X, sigmas, 0)
    x = sample_pc(gaussian_score, x, sigmas, corrector=False, consistency=None, carry_mean=True)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() < 0.2 * S0


@pytest.mark.parametrize("options", [dict(carry_mean=True), dict(carry_mean=False, predictor=False)])
def test_consistency_pulls_towards_the_input_exactly(options: dict):
    # zero score, no corrector, no rescaling, no noise: each step is x <- X + (1 - w2)(1 - w1)(x - X)
    X = blurred(b=2, hw=8)
    steps, (w1, w2) = 20, (0.08, 0.15)
    sigmas = reverse_sigmas(steps, 0.01, 50.0)
    x_start, g = start(X, sigmas, 5)
    x = sample_pc(zero_score, x_start, sigmas, corrector=False, consistency=identity_consistency(X), weights=(w1, w2),
                  generator=g, **options)
    expected = X + ((1 - w1) * (1 - w2)) ** steps * (x_start - X)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


def test_a_zero_weight_skips_that_consistency_step():
    X = blurred(b=2, hw=8)
    sigmas = reverse_sigmas(10, 0.01, 5.0)
    x_start = 5.0 * randn_like(X, torch.Generator().manual_seed(0))
    calls = []

    def dc(x, w):
        calls.append(w)
        return x - w * (x - X)

    x = sample_pc(zero_score, x_start, sigmas, corrector=False, consistency=dc, weights=(0.0, 0.3))
    assert calls == [0.3] * 10
    torch.testing.assert_close(x, X + 0.7**10 * (x_start - X), rtol=1e-5, atol=1e-5)


def test_consistency_brings_gaussian_samples_closer_to_the_input():
    X = blurred()
    sigmas = reverse_sigmas(100, 0.001, 20.0)
    kw = dict(corrector=False, carry_mean=False)
    x, g = start(X, sigmas, 3)
    free = sample_pc(gaussian_score, x, sigmas, consistency=None, generator=g, **kw)
    x, g = start(X, sigmas, 3)
    tied = sample_pc(gaussian_score, x, sigmas, consistency=identity_consistency(X), weights=(0.08, 0.15),
                     generator=g, **kw)
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
    assert nfe_per_step(options.get("predictor", True), options.get("corrector", True),
                        options.get("corrector_chains", 3)) == per_step
    X = blurred(b=2, hw=8)
    sigmas = reverse_sigmas(7, 0.01, 50.0)
    for sampler, kwargs in ((sample_pc, dict(consistency=identity_consistency(X))), (sample_released, dict(blurred=X))):
        model = Counting(gaussian_score, images=2)
        calls = []
        x, g = start(X, sigmas, 0)
        sampler(model, x, sigmas, generator=g, callback=lambda s: calls.append((s["i"], s["n"])), **kwargs, **options)
        assert model.nfe == 7 * per_step
        assert calls == [(i, 7) for i in range(7)]


def test_released_defaults_give_images_in_unit_range_and_are_reproducible():
    X = blurred(b=3, hw=8)
    sigmas = reverse_sigmas(10, 0.01, 300.0)

    def run(seed):
        x, g = start(X, sigmas, seed)
        return sample_released(gaussian_score, x, sigmas, blurred=X, generator=g)

    a, b, c = run(9), run(9), run(10)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)
    flat = a.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3))


@pytest.mark.parametrize("options", [dict(), dict(corrector_chains=0, carry_mean=False), dict(weights=(0.2, 0.0))])
def test_released_is_pc_with_identity_consistency_and_rescaling_bit_for_bit(options):
    X = blurred(b=3, hw=8, c=2)
    sigmas = reverse_sigmas(12, 0.01, 300.0)
    x, g = start(X, sigmas, 4)
    released = sample_released(gaussian_score, x, sigmas, blurred=X, generator=g, **options)
    x, g = start(X, sigmas, 4)
    pc = sample_pc(gaussian_score, x, sigmas, consistency=identity_consistency(X), rescale_each_step=True,
                   generator=g, **options)
    assert torch.equal(released, pc)


def test_pc_does_not_rescale():
    # a colour image deblurred channel by channel: one batch item's values span [0.2, 0.6]; with a zero score
    # the consistency steps bring it back unchanged, not stretched to [0, 1] as the released loop would
    X = (0.2 + 0.4 * blurred(b=1, hw=16, c=3, seed=7)).reshape(3, 1, 16, 16)
    X = (X - X.amin()) / (X.amax() - X.amin()) * 0.4 + 0.2  # exactly [0.2, 0.6] over the image
    sigmas = reverse_sigmas(200, 0.01, 50.0)
    x, g = start(X, sigmas, 8)
    out = sample_pc(zero_score, x, sigmas, consistency=identity_consistency(X), corrector=False, generator=g)
    torch.testing.assert_close(out, X, atol=1e-5, rtol=0)
    x, g = start(X, sigmas, 8)
    released = sample_released(zero_score, x, sigmas, blurred=X, corrector=False, generator=g)
    flat = released.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(3))
    torch.testing.assert_close(flat.max(1).values, torch.ones(3))
    assert (released - X).abs().max() > 0.1


def test_chains_average_scores_at_the_chain_states():
    # with the chains all at the initial state x0, the corrector moves the state by eps * s(x0); the chains are
    # then respawned around the new state: with a linear score both steps are checkable in closed form
    X = torch.zeros(1, 1, 4, 4)
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    seen = []

    def score(x, sigma):
        seen.append(x.clone())
        return -x

    x0 = 2.0 * torch.randn(X.shape, generator=torch.Generator().manual_seed(0))
    x = sample_pc(score, x0, sigmas, predictor=False, corrector_chains=3, consistency=None,
                  generator=torch.Generator().manual_seed(1))
    assert len(seen) == 2 and all(s.shape[0] == 3 for s in seen)  # three chains in one batched call a step
    for chain in seen[0].split(1):
        torch.testing.assert_close(chain, x0)
    g = torch.Generator().manual_seed(1)
    snr = 0.021

    z = [torch.randn(X.shape, generator=g) for _ in range(3)]
    eps = 2 * (snr * torch.stack([zj.norm() for zj in z]).mean() / x0.norm()) ** 2  # the three scores are -x0
    x1 = x0 - eps * x0
    chains = [x1 + (2 * eps).sqrt() * zj for zj in z]
    for got, want in zip(seen[1].split(1), chains):
        torch.testing.assert_close(got, want)

    z = [torch.randn(X.shape, generator=g) for _ in range(3)]
    eps = 2 * (snr * torch.stack([zj.norm() for zj in z]).mean() / torch.stack([c.norm() for c in chains]).mean()) ** 2
    torch.testing.assert_close(x, x1 - eps * torch.stack(chains).mean(dim=0))


def test_check_sigmas_returns_floats():
    assert check_sigmas(torch.tensor([3.0, 1.0, 0.0]), torch.zeros(1, 1, 2, 2), "t") == [3.0, 1.0, 0.0]


def test_randn_like_keeps_dtype_and_is_the_generator_stream():
    like = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    z = randn_like(like, torch.Generator().manual_seed(3))
    assert z.dtype == torch.float64 and z.shape == like.shape
    torch.testing.assert_close(z, torch.randn(like.shape, generator=torch.Generator().manual_seed(3)).double())


@pytest.mark.parametrize("sampler", ["pc", "released"])
def test_bad_arguments_raise(sampler):
    X = blurred(b=1, hw=8)

    def run(x, sigmas, **kw):
        if sampler == "pc":
            return sample_pc(zero_score, x, sigmas, consistency=identity_consistency(X), **kw)
        return sample_released(zero_score, x, sigmas, blurred=X, **kw)

    with pytest.raises(ValueError, match="descending"):
        run(X, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="descending"):
        run(X, torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="non-negative"):
        run(X, torch.tensor([1.0, 0.5, -0.1]))
    with pytest.raises(ValueError, match="at least 2"):
        run(X, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="B, C, H, W"):
        run(X[0], reverse_sigmas(3, 0.01, 1.0))
    with pytest.raises(ValueError, match="corrector_chains"):
        run(X, reverse_sigmas(3, 0.01, 1.0), corrector_chains=-1)
