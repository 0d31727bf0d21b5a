"""The thin-lens CoC against the textbook formula c = f^2 |d - s| / (N d (s - f)) (mm on the sensor), including its
limits at infinity, and the metric `ingest --render` CoC at a focus between f and 2f (magnification above 1)."""

import numpy as np
import pytest

from defocuskit.data.sample import IngestOptions
from defocuskit.data.sources import render as source
from defocuskit.imaging.optics import coc_at_infinity_px, signed_coc_diameter_mm


def textbook_px(n: float, f_mm: float, s_m: float, d_m: np.ndarray, sensor_mm: float, width: int) -> np.ndarray:
    s, d = s_m * 1000.0, np.asarray(d_m, np.float64) * 1000.0
    # c = f^2 |d - s| / (N d (s - f)), + behind the focal plane; px = mm / (sensor width / image width)
    return np.sign(d - s) * f_mm**2 * np.abs(d - s) / (n * d * (s - f_mm)) / (sensor_mm / width)


def test_signed_coc_matches_the_textbook_formula_also_nearer_than_the_focal_length():
    d = np.array([0.03, 0.05, 0.5, 2.0, 3.0, 40.0])  # 30 mm and 50 mm: at and before a 50 mm lens's focal length
    got = signed_coc_diameter_mm(2.8, 50.0, 2.0, d) * 1000.0 / 6.0  # 6 um pitch: 36 mm / 6000 px
    assert np.allclose(got, textbook_px(2.8, 50.0, 2.0, d, 36.0, 6000), rtol=1e-12)
    assert signed_coc_diameter_mm(2.8, 50.0, 2.0, 2.0) == 0.0


def test_focus_or_depth_at_infinity_gives_the_limit_not_nan():
    d = np.array([1.0, 10.0])
    # focused at infinity: c = f^2 / (N d), in front of the focal plane
    assert np.allclose(signed_coc_diameter_mm(2.0, 50.0, np.inf, d), -(50.0**2) / (2.0 * d * 1000.0))
    # a depth at infinity: the background CoC f^2 / (N (s - f)) of coc_at_infinity_px
    far = signed_coc_diameter_mm(2.0, 50.0, 2.0, np.array([np.inf]))
    assert far[0] == pytest.approx(coc_at_infinity_px(2.0, 50.0, 2.0, 1000.0))
    assert signed_coc_diameter_mm(2.0, 50.0, np.inf, np.inf) == 0.0


@pytest.mark.parametrize("focus_m", [0.07, 0.09, 0.2])
def test_metric_render_keeps_a_focus_between_f_and_2f(focus_m: float):
    """A 50 mm lens focused at 70 mm (magnification 2.5): the focus value lands at CoC 0 and the map is the thin
    lens's (the renderer used to move such a focus to 2f = 100 mm)."""
    opts = IngestOptions(render_depth_kind="metric", render_focal_length_mm=50.0, render_sensor_width_mm=36.0,
                         render_metric_scale=1.0)
    values = np.array([[focus_m, 0.03, 0.5, 5.0]], np.float32)
    unit = source.unit_coc(values, focus_m, opts)
    assert abs(unit[0, 0]) < 1e-5
    assert np.allclose(unit, textbook_px(1.0, 50.0, focus_m, values, 36.0, 4), rtol=1e-5)


def test_metric_render_refuses_a_focus_at_or_before_the_focal_length():
    opts = IngestOptions(render_depth_kind="metric", render_focal_length_mm=50.0, render_metric_scale=1.0)
    with pytest.raises(ValueError, match="focal length"):
        source.unit_coc(np.array([[0.04, 1.0]], np.float32), 0.04, opts)
