"""A defocus-map model reads each image at its recipe's inference.work_side (`trained`: at its training images' long
side, where the blur has the width in pixels it learnt; `auto`: where the image's blur reads as wide as its training
inputs') and gives the map back at the image's size in its pixels: `--coc map`, the API's coc_map and coc=, and
deblur of a map model read it the same way (inference.scale.read_at_side)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.imaging.blur_estimate import estimate_coc
from defocuskit.inference.coc_source import CocSource
from defocuskit.inference.files import deblur_files
from defocuskit.inference.scale import blur_matched_side, read_at_side
from defocuskit.io.images import write_image
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import resolve_recipe
from tests.test_work_side import _filtered

TRAIN_BLUR = 0.5  # px: the photo below reads wider, so `auto` reads its map at a smaller size
TRAIN_SIDE = 32  # px: the training images' long side (`trained`)


def _map_file(path: Path, work_side: str | int | None, blur: float | None = TRAIN_BLUR) -> tuple[Path, float]:
    """A defocus-map model whose map reads one constant everywhere, its recipe's inference.work_side `work_side`,
    recording training images of TRAIN_SIDE px whose blur reads `blur` px; and that constant."""
    recipe = resolve_recipe({"method": "defocus-map", "model": {"arch": "dilated", "width": 8}})
    raw = recipe_to_dict(recipe)
    raw["inference"]["work_side"] = work_side
    torch.manual_seed(0)
    net = get_method("defocus-map").build(recipe.model, recipe.objective, False).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.0)
        [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.fill_(1.0)
        constant = float(net(torch.zeros(1, 3, 16, 16), output="coc")[0, 0, 8, 8])
    extra = {"train_long_side_px": str(TRAIN_SIDE), **({"train_blur_px": str(blur)} if blur else {})}
    save_model(path, net.state_dict(), "defocus-map", raw, extra=extra)
    return path, constant


def _soft(h: int = 48, w: int = 64) -> np.ndarray:
    x = _filtered(np.random.default_rng(0).random((h, w, 3)).astype(np.float32), 2.0)
    return (x - x.min()) / (x.max() - x.min())


def test_an_estimator_that_saturates_reads_a_wide_blur_closer_at_a_smaller_size() -> None:
    # the training-free edge estimate reaches about 20 px at the size it works at (docs/benchmarks.md): a Gaussian of
    # sigma 12 px (a disc of 48 px by its variance, c^2 / 16 = sigma^2) reads far too narrow at 512 px
    rng = np.random.default_rng(0)
    sharp = cv2.resize(rng.random((64, 64, 3)).astype(np.float32), (512, 512), interpolation=cv2.INTER_NEAREST)
    blurred = _filtered(sharp, 12.0)

    def edge(x: np.ndarray) -> np.ndarray:
        return estimate_coc(np.clip(x, 0, 1), work_side=None)

    own = float(np.median(edge(blurred)))
    small = read_at_side(edge, blurred, 128)
    assert small.shape == blurred.shape[:2] and small.dtype == np.float32
    assert float(np.median(small)) > own + 5 and abs(np.median(small) - 48) < abs(own - 48), (own, np.median(small))
    np.testing.assert_array_equal(read_at_side(edge, blurred, None), edge(blurred))  # no side: as read
    np.testing.assert_array_equal(read_at_side(edge, blurred, 512), edge(blurred))  # no smaller: as read


def test_coc_map_source_reads_at_the_map_models_own_work_side(tmp_path: Path) -> None:
    image = _soft()
    side = blur_matched_side(image, TRAIN_BLUR)
    assert side is not None and side < 64
    own, constant = _map_file(tmp_path / "own.safetensors", None)
    source = CocSource.create("map", own)
    assert source.work_side is None
    np.testing.assert_allclose(source(image, name="a"), constant, rtol=1e-5)  # the default: at the image's size
    trained = CocSource.create("map", _map_file(tmp_path / "trained.safetensors", "trained")[0])
    assert trained.work_side == TRAIN_SIDE
    np.testing.assert_allclose(trained(image, name="a"), constant * 64 / TRAIN_SIDE, rtol=1e-5)
    assert "read at 32 px on the long side" in trained.describe()["description"]
    assert trained.describe()["work_side"] == TRAIN_SIDE
    auto = CocSource.create("map", _map_file(tmp_path / "auto.safetensors", "auto")[0])
    assert auto.work_side == "auto" and auto.blur == TRAIN_BLUR
    np.testing.assert_allclose(auto(image, name="a"), constant * 64 / side, rtol=1e-5)
    with pytest.warns(UserWarning, match="records no train_blur_px; maps read at their own size"):
        lacking = CocSource.create("map", _map_file(tmp_path / "lacking.safetensors", "auto", None)[0])
    np.testing.assert_allclose(lacking(image, name="a"), constant, rtol=1e-5)


def test_the_api_and_deblur_read_a_map_model_as_the_coc_source_does(tmp_path: Path) -> None:
    import defocuskit

    image = _soft()
    file, constant = _map_file(tmp_path / "trained.safetensors", "trained")
    expected = CocSource.create("map", file)(image, name="a")
    assert expected.min() > constant * 1.5  # read at half the size: twice as wide in the image's pixels
    model = defocuskit.load(file, device="cpu")
    assert model.work_side == "trained"
    np.testing.assert_allclose(model.coc_map(image), expected, rtol=1e-5)
    hidd_like = defocuskit.api._coc_band(model, image, 0, 48)  # deblur(coc=the map model): the same reading
    np.testing.assert_allclose(hidd_like, expected, rtol=1e-5)
    photo = tmp_path / "in" / "shot.png"
    photo.parent.mkdir()
    write_image(photo, (image * 255).round().astype(np.uint8))
    deblur_files([photo], file, tmp_path / "out", progress=False)
    written = cv2.imread(str(tmp_path / "out" / "shot_coc.png"), cv2.IMREAD_UNCHANGED) / 256.0
    assert written.shape == image.shape[:2]
    np.testing.assert_allclose(written, expected, atol=1 / 256 + 1e-6)
    deblur_files([photo], file, tmp_path / "own", progress=False, work_side=0)  # 0: read at its own size
    own = cv2.imread(str(tmp_path / "own" / "shot_coc.png"), cv2.IMREAD_UNCHANGED) / 256.0
    np.testing.assert_allclose(own, constant, atol=1 / 256 + 1e-6)
