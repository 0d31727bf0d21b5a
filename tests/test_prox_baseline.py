"""The prox baseline's data step with the exact operator and CoC: what it recovers from a clean shot, and what sensor
noise costs it at small CoC (docs/benchmarks.md, "The proximal step and sensor noise")."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from defocuskit.eval.baselines import PROX_CG_STEPS, PROX_RHO, prox_baseline
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
    default, rho1 = _error(prox_baseline(noisy, meta, coc), sharp), _error(prox_baseline(noisy, meta, coc, rho=1.0),
                                                                             sharp)
    assert base < rho1 < default, (base, rho1, default)  # the noise amplified, less so the larger rho
