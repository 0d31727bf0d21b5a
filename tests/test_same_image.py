"""One restored image from every entry point: `defocuskit deblur`, `DeblurModel.deblur` and `eval --save-images` give
the same pixels for the same seed and settings, and eval's PSNR is the saved file's; above $DEFOCUSKIT_BAND_PIXELS
too, where the image is restored by bands of rows (a stochastic sampler's noise, the tiles and an estimated, bounded
CoC map all depend on the band)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import defocuskit
from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.eval import metrics
from defocuskit.eval.processes import sample_seed
from defocuskit.inference.bands import BAND_PIXELS_ENV
from defocuskit.io.images import read_image, write_image
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH, F_NUMBER = 150, 40, 2.8
BANDED = str(75 * WIDTH)  # 64 kept rows a band: three bands of 150 rows
# hidd-tiny's own sampler (fast, physics: noise and a CoC map) on the edge estimate, bounded at the f-number
HIDD = (["--coc", "edge", "--coc-bound", "0.02", "--steps", "2"], {"coc": "edge", "coc_bound": 0.02, "steps": 2})


@pytest.fixture(scope="module")
def hidd(tmp_path_factory) -> Path:
    recipe = load_recipe(ROOT / "recipes" / "hidd-tiny.yaml")
    torch.manual_seed(0)
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    path = tmp_path_factory.mktemp("models") / "hidd.safetensors"
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return path


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit sharp image and its blurred twin, 150 x 40: taller than one band of the budget BANDED."""
    import cv2

    rng = np.random.default_rng(4)
    sharp = cv2.resize(rng.random((HEIGHT // 5, WIDTH // 5, 3)).astype(np.float32), (WIDTH, HEIGHT))
    blur = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    return tuple(np.rint(np.clip(x, 0, 1) * 65535).astype(np.uint16) for x in (sharp, blur))


@pytest.mark.parametrize("budget", ["0", BANDED])
def test_deblur_and_the_python_api_give_one_image(hidd: Path, tmp_path: Path, monkeypatch, budget: str) -> None:
    monkeypatch.setenv(BAND_PIXELS_ENV, budget)
    _, blur = _pair()
    write_image(tmp_path / "photo.png", blur)
    options, keywords = HIDD
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "photo.png"), "--checkpoint", str(hidd), "--out",
                                   str(tmp_path / "out"), "--device", "cpu", "--seed", "3", "--f-number",
                                   str(F_NUMBER), *options])
    assert res.exit_code == 0, res.output
    written = read_image(tmp_path / "out" / "photo.png")
    model = defocuskit.load(hidd, device="cpu")
    api = model.deblur(blur, seed=3, f_number=F_NUMBER, **keywords)
    assert np.abs(api.astype(np.int64) - blur).max() > 500  # the sampler changes the image
    assert np.array_equal(written, api), f"deblur and the API differ by up to {np.abs(written - api.astype(int)).max()}"
    record = json.loads((tmp_path / "out" / "deblur.json").read_text())["images"][0]
    assert record["bands"] == (1 if budget == "0" else 3)


@pytest.mark.parametrize("budget", ["0", BANDED])
def test_eval_scores_the_image_deblur_and_the_api_give(hidd: Path, tmp_path: Path, monkeypatch, budget: str) -> None:
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    monkeypatch.setenv(BAND_PIXELS_ENV, budget)
    sharp, blur = _pair()
    (tmp_path / "shards").mkdir()
    with wds.ShardWriter(str(tmp_path / "shards" / "test-%06d.tar"), maxcount=10, verbose=0) as sink:
        sink.write({"__key__": "s0", **encode_members(sharp, blur, None, {"source": "own", "f_number": F_NUMBER})})
    options, keywords = HIDD
    res = CliRunner().invoke(app, ["eval", "--shards", str(tmp_path / "shards"), "--checkpoint", str(hidd),
                                   "--device", "cpu", "--report", str(tmp_path / "report"), "--save-images",
                                   str(tmp_path / "saved"), *options])
    assert res.exit_code == 0, res.output
    saved = read_image(tmp_path / "saved" / "hidd" / "s0.png")
    api = defocuskit.load(hidd, device="cpu").deblur(blur, seed=sample_seed(0, "s0"), f_number=F_NUMBER, **keywords)
    assert np.array_equal(saved, api), f"eval and the API differ by up to {np.abs(saved - api.astype(int)).max()}"
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (row,) = [i for i in report["images"] if i["method"] == "hidd"]
    assert row["psnr"] == metrics.psnr(metrics.to_unit(saved), metrics.to_unit(sharp), max_db=100.0)
    ran = report["protocol"]["methods"]["hidd"]["ran"]
    assert list(ran) == ["tiles 32x32 overlap 8" + ("" if budget == "0" else " in 3 bands of rows")]


def test_a_bad_band_budget_stops_deblur_before_any_image(hidd: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(BAND_PIXELS_ENV, "lots")
    write_image(tmp_path / "photo.png", _pair()[1])
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "photo.png"), "--checkpoint", str(hidd), "--out",
                                   str(tmp_path / "out"), "--device", "cpu", *HIDD[0], "--f-number", str(F_NUMBER)])
    assert res.exit_code == 2 and BAND_PIXELS_ENV in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
