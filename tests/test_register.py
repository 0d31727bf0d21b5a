"""Registration and photometric gain on the real photo fixtures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defocuskit.data.register import RegistrationError, align, match_gain
from defocuskit.images import linear_to_srgb, read_image, srgb_to_linear, to_float


@pytest.fixture(scope="module")
def vabd_ref(real_fixture_root) -> np.ndarray:
    return to_float(read_image(real_fixture_root / "VABD" / "train" / "input" / "0001.JPG"))


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """moving(x) = img(m x), so the reference->moving warp W (moving(W x) = img(x)) is inv(m)."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", ["ecc", "homography"])
def test_known_affine_recovered_full_size(vabd_ref, method):
    truth = np.array([[1.006, 0.004, -9.5], [-0.003, 0.997, 5.25]])  # ~1% scale, a dozen px (EBB-like)
    moving = _warp(vabd_ref, np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2])
    warped, record = align(moving, vabd_ref, method=method)
    m = np.array(record["matrix"])
    assert record["method"] == method and record["score"] > 0.99
    np.testing.assert_allclose(m[:2, :2], truth[:, :2], atol=2e-3)
    np.testing.assert_allclose(m[:2, 2], truth[:, 2], atol=0.5)
    assert m.shape == ((3, 3) if method == "homography" else (2, 3))
    inner = (slice(40, -40), slice(40, -40))
    assert np.abs(warped[inner] - vabd_ref[inner]).mean() < 0.01
    assert record["border"] == "reflect" and 0.9 < record["coverage"] < 1.0


def test_translation_on_downscaled_estimate(vabd_ref):
    truth = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
    _, record = align(_warp(vabd_ref, np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2]), vabd_ref,
                      motion="translation", max_side=512)
    np.testing.assert_allclose(np.array(record["matrix"]), truth, atol=0.15)


def test_match_gain_recovers_exposure(vabd_ref):
    darker = linear_to_srgb(srgb_to_linear(vabd_ref) * 0.5)  # one stop under
    restored, gain = match_gain(darker, vabd_ref)
    assert gain == pytest.approx(2.0, rel=0.03)
    assert np.abs(restored - vabd_ref).mean() < 0.01
    assert restored.min() >= 0 and restored.max() <= 1


def test_real_pairs_register(real_fixture_root):
    vabd = real_fixture_root / "VABD" / "train"
    ref = to_float(read_image(vabd / "input" / "0003.JPG"))
    _, record = align(to_float(read_image(vabd / "2_8" / "0003.JPG")), ref)
    m = np.array(record["matrix"])
    assert record["score"] > 0.9 and np.abs(m[:, 2]).max() < 3 and np.abs(m[:, :2] - np.eye(2)).max() < 0.01
    ebb = real_fixture_root / "EBB" / "test"
    ref = to_float(read_image(ebb / "input" / "4546.jpg"))
    _, record = align(to_float(read_image(ebb / "target" / "4546.jpg")), ref)
    assert record["score"] > 0.9 and np.abs(np.array(record["matrix"])[:, 2]).max() > 2  # really misaligned


def test_unrelated_images_fail_or_score_low(vabd_ref):
    noise = np.random.default_rng(0).random(vabd_ref.shape).astype(np.float32)
    try:
        _, record = align(noise, vabd_ref)
    except RegistrationError as exc:
        assert exc.reason
    else:
        assert record["score"] < 0.5
    flat = np.full((64, 96, 3), 0.5, np.float32)
    with pytest.raises(RegistrationError, match="too few features"):
        align(flat, flat, method="homography")


def test_bad_arguments(vabd_ref):
    with pytest.raises(ValueError, match="method"):
        align(vabd_ref, vabd_ref, method="sift")
    with pytest.raises(ValueError, match="shapes"):
        match_gain(vabd_ref[:10], vabd_ref)
