"""Thin-lens circle of confusion and PSFs."""

import numpy as np
import pytest

from defocuskit.data.metadata import F_NUMBER_RANGE
from defocuskit.imaging.optics import (
    FULL_STOPS,
    coc_at_infinity_px,
    coc_diameter_mm,
    coc_diameter_px,
    defocus_psf,
    disc_mtf,
    disc_psf,
    full_stop,
    gaussian_psf,
    pixel_pitch_um,
    signed_coc_diameter_mm,
)


def test_coc_matches_thin_lens_by_hand():
    # f = 50 mm, N = 2 -> A = 25 mm; s = 2 m, d = 4 m: c = 25 * (2000/4000) * 50 / 1950
    assert coc_diameter_mm(2.0, 50.0, 2.0, 4.0) == pytest.approx(25 * 0.5 * 50 / 1950, rel=1e-9)


def test_coc_is_zero_at_focus_and_grows_away_from_it():
    depths = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 100.0])
    c = coc_diameter_mm(2.8, 50.0, 2.0, depths)
    assert c[3] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(c[:4]) < 0) and np.all(np.diff(c[3:]) > 0)
    signed = signed_coc_diameter_mm(2.8, 50.0, 2.0, depths)
    assert np.all(signed[:3] < 0) and np.all(signed[4:] > 0)


def test_coc_inversely_proportional_to_f_number():
    c = [coc_diameter_px(n, 50.0, 1.2, 8.0, 90.0) for n in (1.4, 2.8, 5.6, 11.0)]
    assert c[0] > c[1] > c[2] > c[3]
    assert c[0] / c[1] == pytest.approx(2.0)
    assert c[0] * 1.4 == pytest.approx(c[3] * 11.0)


def test_coc_at_infinity_is_the_far_limit():
    far = coc_diameter_px(1.4, 50.0, 1.0, 1e9, 91.8)
    assert coc_at_infinity_px(1.4, 50.0, 1.0, 91.8) == pytest.approx(far, rel=1e-6)
    # the renderer's camera: APS-C onto 256 px, 50 mm at 1 m, f/1.4 -> background blur 10-20 px
    assert 10 <= coc_at_infinity_px(1.4, 50.0, 1.0, pixel_pitch_um(23.5, 256)) <= 25


def test_pixel_pitch():
    assert pixel_pitch_um(36.0, 6000) == pytest.approx(6.0)


@pytest.mark.parametrize("bad", [dict(f_number=0.0), dict(focus_distance_m=0.04), dict(depth_m=-1.0)])
def test_bad_optics_raise(bad):
    args = dict(f_number=2.0, focal_length_mm=50.0, focus_distance_m=2.0, depth_m=3.0) | bad
    with pytest.raises(ValueError):
        coc_diameter_mm(**args)


def test_full_stop():
    assert full_stop(1.8) == 2.0
    assert full_stop(3.5) == 4.0
    assert full_stop(5.0) == 5.6
    assert full_stop(1.2) == 1.4
    assert full_stop(22) == 22.0
    assert all(full_stop(n) == n for n in FULL_STOPS)
    low, high = F_NUMBER_RANGE  # every f-number a shard may record has its own stop: f/64 was f/32, f/0.7 f/1
    assert (full_stop(low), full_stop(45), full_stop(high), full_stop(0.95)) == (0.7, 45.0, 64.0, 1.0)


@pytest.mark.parametrize("d", [0.0, 0.5, 1.0])
def test_small_disc_is_a_delta(d):
    k = disc_psf(d)
    assert k.shape == (1, 1) and k[0, 0] == 1.0
    k = disc_psf(d, size=5)
    assert k[2, 2] == 1.0 and k.sum() == 1.0


@pytest.mark.parametrize("d", [1.5, 3.0, 7.3, 11.0, 20.0])
def test_disc_sums_to_one_and_has_its_diameter(d):
    k = disc_psf(d)
    assert k.shape[0] % 2 == 1 and k.shape[0] == k.shape[1] and k.shape[0] >= d
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    c = k.shape[0] // 2
    y, x = np.mgrid[-c:c + 1, -c:c + 1]
    second_moment = float((k * (x**2 + y**2)).sum())  # uniform disc: E[r^2] = R^2 / 2
    if d >= 7:
        assert second_moment == pytest.approx((d / 2) ** 2 / 2, rel=0.05)
    support = np.sqrt(x**2 + y**2)[k > 0].max()
    assert d / 2 - 1 <= support <= d / 2 + 1


def test_disc_grows_continuously_from_a_delta():
    assert disc_psf(1.05)[1, 1] > 0.9


def test_bad_psf_arguments():
    with pytest.raises(ValueError):
        disc_psf(-1.0)
    with pytest.raises(ValueError):
        disc_psf(5.0, size=4)


def _response(kernel: np.ndarray, freq: float) -> float:
    """The kernel's frequency response along x at `freq` cycles per pixel."""
    c = kernel.shape[0] // 2
    return float((kernel.sum(axis=0) * np.cos(2 * np.pi * freq * (np.arange(kernel.shape[0]) - c))).sum())


@pytest.mark.parametrize("d", [0.5, 1.0, 1.5, 2.0, 3.0, 6.0, 12.0])
def test_band_limited_disc_has_the_discs_mtf(d):
    k = disc_psf(d, sampling="band")
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and np.allclose(k, k.T) and np.allclose(k, k[::-1, ::-1])
    for freq in (0.125, 0.25, 0.5):
        assert _response(k, freq) == pytest.approx(float(disc_mtf(d, freq)), abs=0.05)


def test_the_area_sampled_disc_misses_the_mtf_of_small_discs():
    # why "band" exists: a 1 px disc keeps 0.72 of the contrast at Nyquist, the area-sampled one all of it, and a
    # 2 px disc keeps 0.72 at a quarter of the sampling rate where the area-sampled one keeps 0.60
    assert disc_mtf(1.0, 0.5) == pytest.approx(0.722, abs=0.002)
    assert _response(disc_psf(1.0), 0.5) == 1.0
    assert _response(disc_psf(2.0), 0.25) < float(disc_mtf(2.0, 0.25)) - 0.1


def test_band_limited_disc_grows_continuously_from_a_delta():
    k0 = disc_psf(0.0, sampling="band")
    assert k0[k0.shape[0] // 2, k0.shape[0] // 2] == pytest.approx(1.0, abs=1e-6)
    centre = [float(disc_psf(d, size=9, sampling="band")[4, 4]) for d in np.arange(0.0, 4.01, 0.25)]
    assert all(b < a for a, b in zip(centre, centre[1:]))
    assert max(a - b for a, b in zip(centre, centre[1:])) < 0.15  # no step at 1 px as the area-sampled disc has
    with pytest.raises(ValueError, match="sampling"):
        disc_psf(2.0, sampling="gauss")


def test_gaussian_psf():
    k = gaussian_psf(2.0)
    assert k.shape == (13, 13) and k.sum() == pytest.approx(1.0, abs=1e-6)
    assert gaussian_psf(0.0)[0, 0] == 1.0


@pytest.mark.parametrize("d", [3.0, 5.0, 9.0])
def test_the_gaussian_defocus_psf_has_the_discs_second_moment(d):
    """From 3 px up; below, sampled at pixel centres, it is narrower than the area-sampled disc (2 px: 0.22 against
    0.40 px^2), so it deblurs less where the CoC is smallest."""
    def second_moment(k):
        r = k.shape[0] // 2
        y, x = np.mgrid[-r:r + 1, -r:r + 1]
        return float((k * x**2).sum())

    disc, gauss = defocus_psf(d, "disc"), defocus_psf(d, "gaussian")
    assert gauss.sum() == pytest.approx(1.0, abs=1e-6)
    assert second_moment(gauss) == pytest.approx(d**2 / 16, rel=0.05)  # a disc of radius r: r^2 / 4 per axis
    assert second_moment(gauss) == pytest.approx(second_moment(disc), rel=0.12)  # the area-sampled disc's too
    assert np.array_equal(defocus_psf(d), disc_psf(d))


def test_defocus_psf_small_diameters_and_bad_shapes():
    assert defocus_psf(0.8, "gaussian").shape == (1, 1) and defocus_psf(0.8, "disc").shape == (1, 1)
    with pytest.raises(ValueError, match="shape"):
        defocus_psf(2.0, "box")
