"""The noise level read from one image, and the weight that keeps a change only where it exceeds the noise
(defocuskit/imaging/noise.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defocuskit.imaging.noise import NoiseLevel, estimate_noise_level, shrink_to_signal, signal_weight, synthetic_noise


def _scene(rng: np.random.Generator, size: int = 192) -> np.ndarray:
    """Linear light: smooth shading from dark to bright, some soft texture and edges."""
    ramp = np.linspace(0.01, 0.8, size, dtype=np.float32)[None, :, None] * np.ones((size, 1, 3), np.float32)
    blobs = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 6.0)
    scene = ramp * (0.7 + 0.6 * (blobs - blobs.mean()))
    scene[size // 3: size // 2, size // 4: size // 2] *= 1.5  # a bright rectangle: edges
    return np.clip(scene, 0.0, 1.0)


@pytest.mark.parametrize("a, b", [(1 / 4000, 0.002 ** 2), (1 / 1000, 0.004 ** 2), (0.0, 0.01 ** 2)])
def test_the_level_function_of_poisson_gaussian_noise_is_read_from_the_image(a: float, b: float) -> None:
    rng = np.random.default_rng(3)
    scene = _scene(rng)
    noisy = scene + np.sqrt(a * scene + b) * rng.standard_normal(scene.shape).astype(np.float32)
    level = estimate_noise_level(noisy)
    for x in (0.02, 0.2, 0.6):  # the std it implies, dark to bright, within 25 %
        true_std = np.sqrt(a * x + b)
        assert abs(float(level.std(np.float32(x))) - true_std) < 0.25 * true_std, (x, level, a, b)
    assert estimate_noise_level(scene).std(np.float32(0.3)) < 0.1 * np.sqrt(1 / 4000 * 0.3)  # clean: next to none


def test_synthetic_noise_has_the_level_and_is_seeded() -> None:
    linear = np.full((200, 200, 3), 0.25, np.float32)
    level = NoiseLevel(1 / 1000, 1e-5)
    noise = synthetic_noise(linear, level)
    assert np.array_equal(noise, synthetic_noise(linear, level)) and not np.array_equal(noise, synthetic_noise(
        linear, level, seed=1))
    assert abs(float(noise.std()) - np.sqrt(0.25 / 1000 + 1e-5)) < 0.02 * np.sqrt(0.25 / 1000 + 1e-5)


def test_signal_weight_drops_a_change_made_of_noise_and_keeps_one_well_above_it() -> None:
    rng = np.random.default_rng(0)
    noise_change = 0.01 * rng.standard_normal((64, 64, 3)).astype(np.float32)
    own_noise = 0.01 * rng.standard_normal((64, 64, 3)).astype(np.float32)  # another draw of the same noise
    structure = np.zeros((64, 64, 3), np.float32)
    structure[:, 32:] = 0.1 * np.sign(np.sin(np.arange(32) / 2.0))[None, :, None]
    weight = signal_weight(own_noise + structure, noise_change)
    assert weight.shape == (64, 64, 1)
    assert float(weight[8:-8, 4:24].mean()) < 0.25  # noise alone: mostly dropped
    assert float(weight[8:-8, 40:60].min()) > 0.9  # structure 10x the noise: kept


def test_an_image_too_small_to_read_the_noise_from_gets_the_step_as_it_is() -> None:
    tiny = np.full((6, 5, 3), 0.3, np.float32)
    with pytest.raises(ValueError, match="at least 8x8"):
        estimate_noise_level(tiny)
    assert np.array_equal(shrink_to_signal(tiny, lambda x: x * 0.5, tiny), tiny * 0.5)
