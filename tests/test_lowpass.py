"""The Gaussian low-pass behind --detail-band and the focus gate's --gate-smooth: OpenCV's for every usual sigma, and
bounded by the image for any other (a sigma of 1e6 px once took 23 GB)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from defocuskit.imaging.lowpass import gaussian_lowpass


@pytest.mark.parametrize("sigma", [0.5, 3.0, 16.0, 21.0])
def test_usual_sigmas_are_opencvs_gaussian(sigma):
    a = np.random.default_rng(0).random((88, 128, 3))
    expected = cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_array_equal(gaussian_lowpass(a, sigma), expected)
    gray = a[..., 0].astype(np.float32)
    assert gaussian_lowpass(gray, sigma).shape == gray.shape and gaussian_lowpass(gray, sigma).dtype == np.float32


def test_a_sigma_far_beyond_the_image_is_the_widest_low_pass_it_allows():
    a = np.random.default_rng(1).random((88, 128, 3))
    wide, huge = gaussian_lowpass(a, 1e3), gaussian_lowpass(a, 1e6)
    assert np.abs(huge - wide).max() < 1e-3 and abs(huge.mean() - a.mean()) < 1e-9 and huge.std() < 0.01
    assert gaussian_lowpass(np.ones((1, 1, 3)), 1e6).shape == (1, 1, 3)
    # the largest floats (eval --detail-band 1e308, --gate-smooth 1e308) were an OverflowError traceback
    assert np.abs(gaussian_lowpass(a, 1e308) - huge).max() < 1e-6
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma must be a positive number"):
            gaussian_lowpass(a, bad)


def test_detail_band_and_gate_smooth_of_1e6_px_stay_within_memory():
    """In a child capped at 2 GB of address space: both finish (before, OpenCV asked for gigabytes and failed)."""
    script = ("import resource, numpy as np\n"
              "resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))\n"
              "from defocuskit.eval.metrics import detail_band\n"
              "from defocuskit.imaging.focus_gate import focus_gate\n"
              "a = np.random.default_rng(0).random((88, 128, 3))\n"
              "print(detail_band(a, a * 0.5, 1e6).shape, focus_gate(a.astype(np.float32), a.astype(np.float32) * 0.9,"
              " np.ones((88, 128), np.float32), 3.0, smooth_px=1e6).shape)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(88, 128, 3) (88, 128, 3)", proc.stderr[-2000:]
