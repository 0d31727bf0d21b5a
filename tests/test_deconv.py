"""Wiener deconvolution with disc PSFs, on a real photograph."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.imaging.deconv import wiener_deblur, wiener_deconvolve
from defocuskit.imaging.optics import disc_psf
from defocuskit.io.images import read_image, to_float

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train" / "input" / "0001.JPG"


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


@pytest.fixture(scope="module")
def sharp():
    if not PHOTO.is_file():
        pytest.skip(f"fixture {PHOTO} missing")
    return cv2.resize(to_float(read_image(PHOTO)), (96, 64), interpolation=cv2.INTER_AREA)


def blur(image, diameter, noise=0.002, seed=0):
    out = cv2.filter2D(image, -1, disc_psf(diameter), borderType=cv2.BORDER_REFLECT)
    out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("diameter", [3.0, 5.0, 7.0])
def test_wiener_with_the_right_coc_raises_psnr(sharp, diameter):
    blurred = blur(sharp, diameter)
    out = wiener_deblur(blurred, diameter, nsr=1e-3)
    assert out.shape == sharp.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert psnr(out, sharp) > psnr(blurred, sharp) + 4.0
    # no wrap-around: the border band improves too
    band = np.zeros(sharp.shape[:2], bool)
    band[:4], band[-4:], band[:, :4], band[:, -4:] = True, True, True, True
    assert psnr(out[band], sharp[band]) > psnr(blurred[band], sharp[band])


def test_wrong_coc_does_worse_than_the_right_one(sharp):
    blurred = blur(sharp, 5.0)
    assert psnr(wiener_deblur(blurred, 5.0, 1e-2), sharp) > psnr(wiener_deblur(blurred, 9.0, 1e-2), sharp)


def test_wiener_with_a_coc_map(sharp):
    w = sharp.shape[1]
    blurred = blur(sharp, 3.0)
    blurred[:, w // 2:] = blur(sharp, 7.0)[:, w // 2:]
    coc = np.full(sharp.shape[:2], 3.0)
    coc[:, w // 2:] = 7.0
    out = wiener_deblur(blurred, coc, nsr=1e-3)
    assert out.shape == sharp.shape
    assert psnr(out, sharp) > psnr(blurred, sharp) + 3.0
    for half in (slice(0, w // 2), slice(w // 2, w)):
        assert psnr(out[:, half], sharp[:, half]) > psnr(blurred[:, half], sharp[:, half])
    # a map that is constant is the scalar case
    flat = wiener_deblur(blurred, np.full(sharp.shape[:2], 5.0), nsr=1e-2)
    assert np.allclose(flat, wiener_deblur(blurred, 5.0, nsr=1e-2), atol=1e-5)


def test_delta_psf_and_greyscale(sharp):
    grey = sharp.mean(axis=2).astype(np.float32)
    out = wiener_deconvolve(grey, disc_psf(0.5), nsr=1e-6)
    assert out.shape == grey.shape and np.abs(out - grey).max() < 1e-3
    assert wiener_deblur(grey, 1.0, nsr=1e-6).shape == grey.shape


def test_bad_arguments_raise(sharp):
    with pytest.raises(ValueError, match="nsr"):
        wiener_deblur(sharp, 3.0, nsr=0.0)
    with pytest.raises(ValueError, match="does not match"):
        wiener_deblur(sharp, np.ones((5, 5)))
    with pytest.raises(ValueError, match="odd"):
        wiener_deconvolve(sharp, np.ones((4, 4)) / 16)
    with pytest.raises(ValueError, match="float"):
        wiener_deblur((sharp * 255).astype(np.uint8), 3.0)


def test_the_gradient_prior_keeps_the_mean_where_the_flat_one_scales_it():
    grey = np.full((32, 48), 0.5, np.float32)  # a flat field: only the mean (DC) is there
    flat = wiener_deconvolve(grey, disc_psf(5.0), nsr=0.1, prior="flat")
    gradient = wiener_deconvolve(grey, disc_psf(5.0), nsr=0.1, prior="gradient")
    np.testing.assert_allclose(flat, 0.5 / 1.1, atol=1e-4)  # X = conj(H) Y / (|H|^2 + nsr): 1 / (1 + nsr) at DC
    np.testing.assert_allclose(gradient, 0.5, atol=1e-5)  # nsr |D|^2 is 0 at DC
    with pytest.raises(ValueError, match="prior"):
        wiener_deblur(grey, 3.0, prior="laplace")

