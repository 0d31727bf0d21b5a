"""Sampler settings `--set sampler.KEY=VALUE` can reach that made a wrong image with exit 0: refused naming it."""

from __future__ import annotations

import pytest

from defocuskit.methods.hidd import SamplerConfig as HiddSampler
from defocuskit.methods.rddm import SamplerConfig as RddmSampler


@pytest.mark.parametrize("kwargs, said", [
    # float32 steps overflowed: a black image, exit 0 (1e30, 1e308), or an OverflowError traceback (dc_sigma 1e300)
    (dict(name="fast", sigma_start=1e30), r"^sampler.sigma_start: above 0, at most 1000, got 1e\+30$"),
    (dict(name="fast", dc_sigma=1e300), r"^sampler.dc_sigma: above 0, at most 1000, got 1e\+300$"),
    (dict(name="pc", snr=1e308), r"^sampler.snr: above 0, at most 100, got 1e\+308$"),
])
def test_hidd_noise_levels_and_snr_beyond_any_use_are_refused(kwargs: dict, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        HiddSampler(**kwargs)
    HiddSampler(**{k: (v if k == "name" else 1000.0 if k != "snr" else 100.0) for k, v in kwargs.items()})


@pytest.mark.parametrize("eta", [float("nan"), -0.1, 1.5, 1e9])
def test_rddm_eta_outside_ddims_range_is_refused(eta: float) -> None:
    """NaN or 1e9 gave NaN images written as black, -1 a sign-flipped noise: each with exit 0."""
    with pytest.raises(ValueError, match=r"^sampler.eta: DDIM's eta, 0 \(deterministic\) to 1 \(DDPM's noise\), got "):
        RddmSampler(eta=eta)
    assert RddmSampler(eta=0.0).eta == 0.0 and RddmSampler(eta=1.0).eta == 1.0


def test_fast_sigma_start_below_the_models_sigma_min_is_named_before_any_image() -> None:
    """sigma_start 0.005 under sigma_min 0.01 failed inside the sampler ('need 0 < sigma_end <= sigma_start'), per
    image (eval: every pair unscored), after the model was loaded and the output folder locked."""
    from defocuskit.inference.restore import sampler_settings
    from defocuskit.methods.hidd import ObjectiveConfig

    objective = ObjectiveConfig(sigma_min=0.01)
    with pytest.raises(ValueError, match=r"^sampler.sigma_start: 0.005 is below this model's objective.sigma_min 0.01"):
        sampler_settings(HiddSampler(name="fast", sigma_start=0.005), objective)
    assert sampler_settings(HiddSampler(name="fast", sigma_start=0.01), objective)["nfe"] == 10
    assert sampler_settings(HiddSampler(name="pc", sigma_start=0.005, steps=2), objective)["nfe"] == 8  # unused there
