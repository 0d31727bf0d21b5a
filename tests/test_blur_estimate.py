"""The training-free defocus map (imaging/blur_estimate.py) and the `--coc edge` source that serves it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defocuskit.imaging import blur_estimate as be
from defocuskit.imaging.optics import disc_psf
from defocuskit.io.images import linear_to_srgb


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return 0.0 if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])


def disc_blurred_steps(diameter: float, size: int = 96, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """sRGB float (size, size, 3): a few vertical and diagonal step edges in linear light, blurred by a disc."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lin = 0.15 + 0.55 * (((xx + 0.3 * yy) // (size / 3)) % 2)
    if diameter > 1.0:
        lin = cv2.filter2D(lin, -1, disc_psf(diameter), borderType=cv2.BORDER_REFLECT)
    lin = lin + np.random.default_rng(seed).normal(0.0, noise, lin.shape).astype(np.float32)
    return np.repeat(linear_to_srgb(np.clip(lin, 0.0, 1.0))[..., None], 3, axis=2)


@pytest.mark.parametrize("diameter", [0.0, 4.0, 8.0, 12.0])
def test_step_edges_give_back_the_disc_diameter(diameter):
    coc = be.estimate_coc(disc_blurred_steps(diameter, noise=0.002), intrinsic=0.0, gain=1.0)
    assert coc.dtype == np.float32 and coc.shape == (96, 96) and (coc >= 0).all()
    assert abs(float(np.median(coc)) - diameter) <= max(1.0, 0.2 * diameter)


def test_calibration_is_monotone_and_starts_at_a_sharp_edge():
    for s1, s2 in be.SCALES:
        sig, diam = be.calibration(s1, s2)
        assert (np.diff(sig) >= 0).all() and sig[-1] > 2 * s2 and diam[0] == 0.0


def test_larger_blur_reads_larger_and_flat_regions_are_filled():
    estimates = [float(np.median(be.estimate_coc(disc_blurred_steps(c, noise=0.004, seed=1)))) for c in (2, 6, 10)]
    assert estimates[0] < estimates[1] < estimates[2]
    flat = np.full((40, 60, 3), 0.5, np.float32)  # no edge at all: a defined, finite map
    assert np.isfinite(be.estimate_coc(flat)).all()


def test_propagation_keeps_regions_apart():
    guide = np.zeros((48, 64, 3), np.float32)
    guide[:, 32:] = 1.0
    sparse = np.full((48, 64), np.nan, np.float32)
    sparse[::6, 8], sparse[::6, 56] = 1.0, 7.0
    dense = be.propagate(sparse, np.ones_like(sparse), guide, 10.0, 0.2)
    assert np.allclose(dense[:, :30], 1.0, atol=0.05) and np.allclose(dense[:, 34:], 7.0, atol=0.05)


def test_rendered_scenes_correlate_with_the_true_coc():
    from defocuskit.data.render import SensorNoise, builtin_scene, render_stack

    corrs, maes, means = [], [], []
    for name in ("astronaut_v3", "coffee_v1", "camera_v2"):  # training-split scenes (measured: 0.73, 0.61, 0.64)
        stack = render_stack(builtin_scene(name, 96, 0), (1.4,), noise=SensorNoise())
        blurred, coc = stack["shots"][1.4]
        pred = be.estimate_coc(linear_to_srgb(blurred))
        corrs.append(correlation(pred, np.abs(coc)))
        maes.append(float(np.abs(pred - np.abs(coc)).mean()))
        means.append(float(np.abs(coc).mean()))
    assert np.mean(corrs) > 0.5, corrs
    # MAE (measured 1.1-2.5 px, mean |CoC| 1.6-5.2 px) well below that of a zero map (the mean |CoC|)
    assert np.mean(maes) < 0.6 * np.mean(means), (maes, means)


def test_large_images_are_estimated_at_the_working_size_in_input_pixels():
    small = be.estimate_coc(disc_blurred_steps(6.0, size=64, noise=0.002), intrinsic=0.0, gain=1.0)
    big_img = cv2.resize(disc_blurred_steps(6.0, size=64, noise=0.002), (128, 128), interpolation=cv2.INTER_LINEAR)
    big = be.estimate_coc(big_img, work_side=64, intrinsic=0.0, gain=1.0)
    assert big.shape == (128, 128)
    assert abs(float(np.median(big)) - 2 * float(np.median(small))) <= 0.25 * 2 * float(np.median(small))


def test_edge_coc_source_needs_no_model_and_rejects_one(tmp_path):
    from defocuskit.inference.coc_source import COC_SOURCES, CocError, CocSource

    assert "edge" in COC_SOURCES
    source = CocSource.create("edge")
    assert source is not None and source.describe()["model"] is None and "Zhuo" in source.describe()["description"]
    image = disc_blurred_steps(6.0, size=64)
    coc = source(image, name="steps")
    assert coc.shape == (64, 64) and coc.dtype == np.float32 and source(image, name="steps") is coc
    assert source(image[..., :1], name="grey").shape == (64, 64)
    with pytest.raises(CocError, match="--coc-model"):
        CocSource.create("edge", tmp_path / "map.safetensors")


def test_cli_offers_edge_for_deblur_and_eval():
    from defocuskit.cli import options

    assert "edge" in [c.value for c in options.EvalCoc] and "edge" in [c.value for c in options.DeblurCoc]
