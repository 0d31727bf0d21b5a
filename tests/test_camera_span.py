"""Which pixels a sensor width spans in the f-number CoC (optics.sensor_span_px): a sample's own `sensor_width_mm`
is the width its image covers (ingest stores a portrait's short side), so it spans the image's width; a camera's
sensor width (eval's and deblur's --sensor-width, the API's sensor_width_mm=, the 36 mm default) is its long side,
which spans the photo's long side. Before, eval and the API put a camera's width across a portrait's short width: a
CoC 1.5x too small at 3:2 against its landscape twin's."""

from __future__ import annotations

import numpy as np
import pytest

from defocuskit.api.coc import coc_sources
from defocuskit.eval.baselines import wiener_baseline
from defocuskit.imaging import optics
from defocuskit.inference.coc_source import CocSource

LENS = {"f_number": 2.8, "focal_length_mm": 50.0}
WIDE, TALL = (64, 96), (96, 64)  # (H, W)
STORED = {WIDE: 36.0, TALL: 24.0}  # as ingest stores a full-frame camera's shot: the width its image covers
LANDSCAPE_COC = 1.2210  # 50 mm f/2.8 focused at 2 m, 36 mm across 96 px


def _coc(source: CocSource, size: tuple[int, int], meta: dict) -> float:
    return float(source(np.zeros((*size, 3), np.float32), meta, name="x")[0, 0])


def test_the_span_is_the_width_for_the_samples_own_sensor_width_and_the_long_side_for_a_cameras():
    assert optics.sensor_span_px({"sensor_width_mm": 24.0}, 96, 64) == 64  # own: across the width
    assert optics.sensor_span_px({"sensor_width_mm": 24.0}, 96, 64, given=True) == 96  # a camera's
    assert optics.sensor_span_px({}, 96, 64) == 96 and optics.sensor_span_px({"sensor_width_mm": None}, 96, 64) == 96
    assert optics.sensor_span_px({}, 64, 96) == 96 and optics.sensor_span_px({"sensor_width_mm": 36.0}, 64, 96) == 96


@pytest.mark.parametrize("size", [WIDE, TALL])
def test_eval_sensor_width_is_a_cameras_across_the_long_side(size):
    given = CocSource.create("fnumber", camera={"sensor_width_mm": 36.0})
    assert _coc(given, size, {**LENS, "sensor_width_mm": STORED[size]}) == pytest.approx(LANDSCAPE_COC, rel=1e-4)
    assert _coc(given, size, LENS) == pytest.approx(LANDSCAPE_COC, rel=1e-4)  # a portrait's was 0.814


@pytest.mark.parametrize("size", [WIDE, TALL])
def test_the_36mm_default_spans_the_long_side_and_a_stored_width_the_width(size):
    plain = CocSource.create("fnumber")
    assert _coc(plain, size, LENS) == pytest.approx(LANDSCAPE_COC, rel=1e-4)  # a portrait's was 0.814
    assert _coc(plain, size, {**LENS, "sensor_width_mm": STORED[size]}) == pytest.approx(LANDSCAPE_COC, rel=1e-4)


def test_the_wiener_baseline_without_a_sensor_width_deblurs_a_portrait_as_its_landscape_twin():
    rng = np.random.default_rng(0)
    wide = rng.random((*WIDE, 3)).astype(np.float32)
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    out_wide = wiener_baseline(wide, dict(LENS), noise=False)
    out_tall = wiener_baseline(tall, dict(LENS), noise=False)
    assert np.abs(out_tall.transpose(1, 0, 2) - out_wide).max() < 1e-4  # was deblurred with a 1.5x smaller disc


@pytest.mark.parametrize("lens", [{"sensor_width_mm": 36.0, "focal_length_mm": 50.0}, {"focal_length_mm": 50.0}])
def test_the_apis_sensor_width_and_its_default_span_the_long_side(lens):
    (wide,) = coc_sources(None, 2.8, (1, *WIDE), None, lens)
    (tall,) = coc_sources(None, 2.8, (1, *TALL), None, lens)
    assert wide == pytest.approx(LANDSCAPE_COC, rel=1e-4) and tall == pytest.approx(wide, rel=1e-6)  # tall was 0.814
