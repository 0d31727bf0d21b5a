"""The API's camera keywords of `f_number=`'s thin-lens CoC: sensor_width_mm, focal_length_mm, focus_distance_m
(before, f_number= always assumed a 36 mm full-frame sensor, a 50 mm lens focused at 2 m, and the keywords were
refused as unknown sampler settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import defocuskit
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.imaging import optics
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
H, W = 32, 40


@pytest.fixture(scope="module")
def hidd(tmp_path_factory) -> defocuskit.DeblurModel:
    recipe = load_recipe(ROOT / "recipes" / "hidd-tiny.yaml")
    torch.manual_seed(0)
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    path = tmp_path_factory.mktemp("models") / "hidd.safetensors"
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return defocuskit.load(path, device="cpu")


def _image() -> np.ndarray:
    return np.random.default_rng(0).random((H, W, 3), dtype=np.float32)


def _thin_lens(f_number: float, focal_mm: float, focus_m: float, sensor_mm: float) -> float:
    """The CoC (pixels) of a background at infinity, from imaging.optics itself."""
    return optics.coc_at_infinity_px(f_number, focal_mm, focus_m, optics.pixel_pitch_um(sensor_mm, W))


def _given_coc(hidd, monkeypatch, **kwargs) -> np.ndarray:
    """The CoC map deblur hands the method (its restore step replaced by one that keeps the map)."""
    seen = []
    monkeypatch.setattr(hidd, "_restore", lambda x, cfg, coc, **kw: seen.append(coc) or x)
    hidd.deblur(_image(), steps=1, **kwargs)
    (coc,) = seen
    assert coc.shape == (H, W) and np.ptp(coc) == 0
    return coc


def test_the_camera_changes_the_coc_as_the_thin_lens_says(hidd, monkeypatch) -> None:
    default = _given_coc(hidd, monkeypatch, f_number=2.8)
    assert default[0, 0] == pytest.approx(_thin_lens(2.8, 50.0, 2.0, 36.0), rel=1e-6)  # today's: unchanged
    aps_c = _given_coc(hidd, monkeypatch, f_number=2.8, sensor_width_mm=23.5)
    assert aps_c[0, 0] == pytest.approx(_thin_lens(2.8, 50.0, 2.0, 23.5), rel=1e-6)
    assert aps_c[0, 0] / default[0, 0] == pytest.approx(36.0 / 23.5, rel=1e-6)  # the crop factor
    phone = _given_coc(hidd, monkeypatch, f_number=1.8, sensor_width_mm=6.17, focal_length_mm=4.25,
                       focus_distance_m=0.5)
    assert phone[0, 0] == pytest.approx(_thin_lens(1.8, 4.25, 0.5, 6.17), rel=1e-6)
    near = _given_coc(hidd, monkeypatch, f_number=2.8, focal_length_mm=85, focus_distance_m=1.2)
    assert near[0, 0] == pytest.approx(_thin_lens(2.8, 85.0, 1.2, 36.0), rel=1e-6)
    monkeypatch.undo()
    x = _image()  # the whole path: as the same map given as coc=
    flat = np.full((H, W), _thin_lens(1.4, 50.0, 2.0, 12.0), np.float32)  # 3 px: 1 px on full frame
    by_camera = hidd.deblur(x, steps=2, f_number=1.4, sensor_width_mm=12)
    assert np.array_equal(by_camera, hidd.deblur(x, steps=2, coc=flat))
    assert not np.array_equal(by_camera, hidd.deblur(x, steps=2, f_number=1.4))  # the camera reaches the output


@pytest.mark.parametrize("kwargs, match", [
    ({"sensor_width_mm": 0}, r"sensor_width_mm=0: not a sensor width a camera has, 1 to 100 mm"),
    ({"sensor_width_mm": -36.0}, r"sensor_width_mm=-36\.0: not a sensor width"),
    ({"sensor_width_mm": float("nan")}, r"sensor_width_mm=nan: not a sensor width"),
    ({"sensor_width_mm": float("inf")}, r"sensor_width_mm=inf: not a sensor width"),
    ({"sensor_width_mm": 360}, r"sensor_width_mm=360: not a sensor width"),
    ({"focal_length_mm": 0.1}, r"focal_length_mm=0\.1: not a focal length a lens has, 1 to 2000 mm"),
    ({"focal_length_mm": float("nan")}, r"focal_length_mm=nan: not a focal length"),
    ({"focus_distance_m": 0}, r"focus_distance_m=0: not a focus distance, 0\.01 to 10000 m"),
    ({"focus_distance_m": float("inf")}, r"focus_distance_m=inf: not a focus distance"),
    ({"focus_distance_m": 0.03}, r"focus_distance_m=0\.03: the focus \(0\.03 m\) must lie beyond the focal length "
                                 r"\(50 mm\)$"),
    ({"focal_length_mm": 2000}, r"focal_length_mm=2000: the focus \(2 m\) must lie beyond the focal length "
                                r"\(2000 mm\); give focus_distance_m=$"),
])
def test_bad_camera_values_are_one_line_naming_the_keyword(hidd, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        hidd.deblur(_image(), steps=1, f_number=2.8, **kwargs)
    assert "\n" not in str(info.value)


def test_camera_values_are_numbers_and_used_only_with_f_number(hidd) -> None:
    for bad in ("36", True, [36.0]):
        with pytest.raises(TypeError, match=r"sensor_width_mm= must be a number"):
            hidd.deblur(_image(), steps=1, f_number=2.8, sensor_width_mm=bad)
    flat = np.ones((H, W), np.float32)
    with pytest.raises(ValueError, match=r"^sensor_width_mm= is for the thin-lens CoC of f_number= \(without coc=\)"):
        hidd.deblur(_image(), steps=1, coc=flat, sensor_width_mm=23.5)
    with pytest.raises(ValueError, match=r"^focal_length_mm= is for the thin-lens CoC of f_number="):
        hidd.deblur(_image(), steps=1, coc="edge", f_number=2.8, focal_length_mm=35)  # the bound has no camera
    with pytest.raises(ValueError, match=r"^focus_distance_m= is for the thin-lens CoC"):
        hidd.deblur(_image(), steps=1, consistency="identity", focus_distance_m=3)
