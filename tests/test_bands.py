"""Images above the pixel budget are deblurred band by band (inference.bands): the bands tile the image, a
convolutional model gives the whole image's result, no float copy of the whole image is made, CoC maps are cut
with the bands."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import defocuskit
from defocuskit import api
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.bands import BAND_PIXELS_ENV, band_pixels, plan_bands
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]


def _model(tmp_path: Path, recipe_file: str, **model: object) -> api.DeblurModel:
    raw = recipe_to_dict(load_recipe(ROOT / "recipes" / recipe_file))
    raw["model"].update(model)
    recipe = resolve_recipe(raw)
    torch.manual_seed(0)
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    with torch.no_grad():
        for p in net.parameters():  # no identity: every layer changes the image
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f"{recipe.method}.safetensors"
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return defocuskit.load(path, device="cpu")


@pytest.mark.parametrize("height,width,budget,halo", [(100, 30, 600, 4), (97, 13, 1000, 8), (50, 50, 2500, 4),
                                                      (10, 1000, 10, 3), (64, 64, 0, 8)])
def test_bands_tile_the_image_within_the_budget(height, width, budget, halo) -> None:
    bands = plan_bands(height, width, budget, halo)
    kept = [row for _, _, k0, k1 in bands for row in range(k0, k1)]
    assert kept == list(range(height))  # every row kept once, in order
    for r0, r1, k0, k1 in bands:
        assert r0 == max(0, k0 - halo) and r1 == min(height, k1 + halo)
        if budget and height * width > budget and budget // width >= 3 * halo:
            assert (r1 - r0) * width <= budget
    if budget == 0 or height * width <= budget:
        assert bands == [(0, height, 0, height)]
    else:
        assert len(bands) > 1


def test_band_budget_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(BAND_PIXELS_ENV, "1234")
    assert band_pixels() == 1234
    for bad in ("lots", "-5"):
        monkeypatch.setenv(BAND_PIXELS_ENV, bad)
        with pytest.raises(ValueError, match=BAND_PIXELS_ENV):
            band_pixels()


def test_convolutional_model_in_bands_equals_the_whole_image(tmp_path, monkeypatch) -> None:
    model = _model(tmp_path, "dncnn-tiny.yaml", identity_init=False)  # 11 px receptive field < the 64-row halo
    image = np.random.default_rng(1).random((300, 40, 3), dtype=np.float32)
    whole = model.deblur(image)
    assert np.abs(whole - image).mean() > 1e-3  # the model changes the image
    monkeypatch.setenv(BAND_PIXELS_ENV, str(200 * 40))  # 200-row bands: 72 kept rows each
    banded = model.deblur(image)
    np.testing.assert_allclose(banded, whole, atol=1e-5)
    as_uint8 = model.deblur((image * 255).round().astype(np.uint8))
    monkeypatch.delenv(BAND_PIXELS_ENV)
    assert np.array_equal(as_uint8, model.deblur((image * 255).round().astype(np.uint8)))
    monkeypatch.setenv(BAND_PIXELS_ENV, str(200 * 40))
    tensor = torch.from_numpy(image.transpose(2, 0, 1).copy())
    np.testing.assert_allclose(model.deblur(tensor).numpy().transpose(1, 2, 0), whole, atol=1e-5)


def test_no_float_copy_of_an_image_above_the_budget(tmp_path, monkeypatch) -> None:
    model = _model(tmp_path, "dncnn-tiny.yaml", identity_init=False)
    image = np.random.default_rng(2).integers(0, 256, (3000, 1000, 3), dtype=np.uint8)
    whole_float = image.size * 4  # 36 MB: what converting the whole image would take
    monkeypatch.setenv(BAND_PIXELS_ENV, str(200 * 1000))  # measured: peak 20 MB (the 9 MB output, a band's work)
    tracemalloc.start()
    try:
        out = model.deblur(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == image.shape and out.dtype == np.uint8
    assert peak < 0.75 * whole_float, f"peak {peak / 1e6:.1f} MB of numpy memory; the whole image as floats: " \
                                      f"{whole_float / 1e6:.0f} MB"


def test_coc_maps_are_cut_with_the_bands(tmp_path, monkeypatch) -> None:
    model = _model(tmp_path, "hidd-tiny.yaml")
    seen: list[tuple[tuple[int, ...], np.ndarray | None, int]] = []

    def fake_restore(x, cfg, coc, *, seed=0, progress=False, **tiling):
        seen.append((x.shape, None if coc is None else coc.copy(), seed))
        return x

    monkeypatch.setattr(model, "_restore", fake_restore)
    monkeypatch.setenv(BAND_PIXELS_ENV, str(150 * 20))
    image = np.random.default_rng(3).random((300, 20, 3), dtype=np.float32)
    coc = np.tile(np.arange(300, dtype=np.float32)[:, None], (1, 20))  # the row number, to see which rows came
    out = model.deblur(image, coc=coc, seed=7)
    np.testing.assert_allclose(out, image, atol=1e-6)
    assert len(seen) > 1
    for index, (shape, band_coc, seed) in enumerate(seen):
        assert band_coc is not None and band_coc.shape == shape[:2]
        assert np.all(np.diff(band_coc[:, 0]) == 1)  # consecutive rows of the map
        assert seed == 7 + index
    assert seen[0][1][0, 0] == 0 and seen[-1][1][-1, 0] == 299
    seen.clear()
    model.deblur(image, f_number=2.8)
    assert all(c is not None and c.shape == s[:2] and np.ptp(c) == 0 for s, c, _ in seen)


def test_two_bands_results_are_cross_faded_across_their_edge(tmp_path, monkeypatch) -> None:
    """A band's own noise seed, map or tile grid gives it a result of its own: at the edge between two bands the
    image stepped from one to the other (a seam across the photo); their results are now cross-faded over the
    blend width, so no row differs from the next by more than the step over that width."""
    from defocuskit.inference.bands import BAND_HALO, blend_widths, restore_in_bands

    image = np.zeros((300, 20, 3), np.float32)

    def by_band(x: np.ndarray, index: int, r0: int, r1: int) -> np.ndarray:
        return x + float(index)  # each band's result its own: the band's index

    out = restore_in_bands(image, lambda rows: rows, by_band, lambda rows: rows, budget=150 * 20)
    bands = plan_bands(300, 20, 150 * 20)
    widths = blend_widths(bands)
    assert len(bands) >= 3 and widths[0] == BAND_HALO // 2 and all(0 < w <= BAND_HALO // 2 for w in widths)
    column = out[:, 0, 0]
    steps = np.diff(column)
    assert np.all(steps >= 0) and steps.max() <= 1.0 / (2 * min(widths)) + 1e-6, steps.max()  # was a step of 1
    for (_, _, k0, k1), index in zip(bands, range(len(bands))):  # away from the edges: the band's own result
        inner = column[k0 + (widths[index - 1] if index else 0) : k1 - (widths[index] if index < len(widths) else 0)]
        assert np.all(inner == index)
    as_uint8 = restore_in_bands((image * 255).astype(np.uint8), lambda rows: rows.astype(np.float32), by_band,
                                lambda rows: np.rint(rows * 50).astype(np.uint8), budget=150 * 20)
    assert np.abs(np.diff(as_uint8[:, 0, 0].astype(int))).max() <= 2  # stored in the output's dtype, no seam
