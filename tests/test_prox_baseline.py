"""The prox baseline's data step with the exact operator and CoC: what it recovers from a clean shot, what sensor
noise costs the plain step at small CoC (and the Wiener baseline) (docs/benchmarks.md, "The proximal step and sensor noise"), and what weighing
its change against the image's own noise saves ("The proximal step weighed against the image's noise")."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from defocuskit.eval.baselines import PROX_CG_STEPS, PROX_RHO, prox_baseline, wiener_baseline
from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb, srgb_to_linear


def _shot(sharp: np.ndarray, coc: float) -> np.ndarray:
    x = srgb_to_linear(torch.from_numpy(sharp.transpose(2, 0, 1))[None])
    return linear_to_srgb(DefocusOperator(torch.full((1, 1, *sharp.shape[:2]), coc)).forward(x))[0].numpy().transpose(
        1, 2, 0)


def _error(image: np.ndarray, sharp: np.ndarray) -> float:
    return float(((np.clip(image, 0, 1) - sharp)[8:-8, 8:-8] ** 2).mean())


def test_prox_recovers_a_clean_shot_and_a_larger_rho_pays_less_for_noise() -> None:
    rng = np.random.default_rng(5)
    sharp = (0.05 + 0.1 * cv2.GaussianBlur(rng.random((80, 80, 3)).astype(np.float32), (0, 0), 0.8)).astype(np.float32)
    coc = np.full((80, 80), 1.5, np.float32)  # a dark, nearly flat scene at f/8: the demo's rocket sky
    meta = {"f_number": 8.0}
    clean = _shot(sharp, 1.5)
    assert np.array_equal(prox_baseline(clean, meta, coc), prox_baseline(clean, meta, coc, "disc", PROX_RHO,
                                                                          PROX_CG_STEPS))
    assert np.allclose(prox_baseline(clean, meta, coc, steps=0), clean, atol=1e-5)  # no CG step: the input
    base = _error(clean, sharp)
    assert _error(prox_baseline(clean, meta, coc), sharp) < 0.2 * base  # noise-free: 7 dB or more gained

    noisy = (clean + rng.normal(0, 0.02, clean.shape)).astype(np.float32)
    base = _error(noisy, sharp)
    default = _error(prox_baseline(noisy, meta, coc, noise=False), sharp)
    rho1 = _error(prox_baseline(noisy, meta, coc, rho=1.0, noise=False), sharp)
    assert base < rho1 < default, (base, rho1, default)  # the noise amplified, less so the larger rho


def _scene(rng: np.random.Generator) -> np.ndarray:
    """Left half a dark, flat night sky; right half bright texture (the demo's rocket at f/8, in small)."""
    sharp = np.full((96, 96, 3), 0.04, np.float32)
    texture = cv2.GaussianBlur(rng.random((96, 48, 3)).astype(np.float32), (0, 0), 1.0)
    sharp[:, 48:] = 0.3 + 1.6 * (texture - texture.mean())
    return np.clip(sharp, 0, 1)


@pytest.mark.parametrize("baseline", ["prox", "wiener"])
def test_weighing_the_change_against_the_noise_leaves_the_noisy_sky_and_keeps_the_texture_gain(baseline: str) -> None:
    from defocuskit.io.images import linear_to_srgb as to_srgb
    from defocuskit.io.images import srgb_to_linear as to_linear

    rng = np.random.default_rng(11)
    sharp = _scene(rng)
    coc = np.full(sharp.shape[:2], 1.5, np.float32)
    clean = np.clip(_shot(sharp, 1.5), 0, 1)
    linear = to_linear(clean)  # Poisson-Gaussian sensor noise in linear light, as the renderer adds it
    noisy = to_srgb(np.clip(linear + np.sqrt(linear / 4000 + 0.002 ** 2) * rng.standard_normal(linear.shape), 0, 1))
    meta = {"f_number": 8.0}
    restore = prox_baseline if baseline == "prox" else wiener_baseline
    plain, weighed = restore(noisy, meta, coc, noise=False), restore(noisy, meta, coc)
    assert np.array_equal(weighed, restore(noisy, meta, coc))  # seeded: the same on every run

    def error(image: np.ndarray, half: slice) -> float:
        return float(((np.clip(image, 0, 1) - sharp)[8:-8, half][:, 8:-8] ** 2).mean())

    sky, texture = slice(0, 48), slice(48, 96)
    assert error(plain, sky) > 1.3 * error(noisy, sky)  # the plain step amplifies the sky's noise
    assert error(weighed, sky) < 1.1 * error(noisy, sky)  # weighed, it leaves the sky (nearly) as it was (1.6x plain)
    gain_plain, gain_weighed = (error(noisy, texture) - error(x, texture) for x in (plain, weighed))
    assert gain_plain > 0 and gain_weighed > 0.7 * gain_plain, (gain_plain, gain_weighed)
