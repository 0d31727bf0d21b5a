"""`defocuskit eval --protocol dpdd8` (issue 23): images read as the releases' cv2.imread reads them (8-bit, a
16-bit PNG's high byte) / 255, cropped to the releases' multiple, outputs clipped and scored unrounded; named in
report.json beside the toolkit's 16-bit default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.eval.config import EvalConfig
from defocuskit.eval.evaluate import evaluate
from defocuskit.eval.protocols import EvalProtocol, apply, cv2_8bit, resolve
from defocuskit.eval.scoring import prepare_pair
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

runner = CliRunner()


def tiny_model(folder: Path, name: str) -> Path:
    method, recipe = get_method(name), load_recipe(f"{name}-tiny")
    torch.manual_seed(0)
    path = folder / f"{name}.safetensors"
    save_model(path, method.build(recipe.model, recipe.objective, False).state_dict(), name, recipe_to_dict(recipe))
    return path


def test_8bit_reading_is_cv2_imreads(tmp_path):
    image = np.random.default_rng(0).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "x.png"), image[..., ::-1])  # RGB -> the file's BGR
    read = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_COLOR)[..., ::-1]  # the releases: BGR -> RGB
    assert np.array_equal(cv2_8bit(image), read) and cv2_8bit(read) is read


def test_crop_multiple_is_the_releases_and_their_lcm(tmp_path):
    ifan, drbnet, nafnet = (tiny_model(tmp_path, n) for n in ("ifan", "drbnet", "nafnet"))
    assert resolve("default", [ifan]) == EvalProtocol()
    assert resolve("dpdd8", [ifan]).crop_multiple == 8 and resolve("dpdd8", [drbnet]).crop_multiple == 16
    assert resolve("dpdd8", [ifan, drbnet, nafnet]).crop_multiple == 16 and resolve("dpdd8", []).crop_multiple == 1
    sample = {"key": "k", "sharp": np.zeros((21, 30, 3), np.uint16), "blur": np.full((21, 30, 3), 300, np.uint16),
              "coc": np.ones((21, 30), np.float32), "meta": {}}
    (out,) = apply([sample], resolve("dpdd8", [ifan]))
    assert out["blur"].shape == (16, 24, 3) and out["blur"].dtype == np.uint8 and out["blur"].max() == 1
    assert out["coc"].shape == (16, 24) and sample["blur"].shape == (21, 30, 3)  # the sample itself is kept
    unit = np.full((2, 2, 3), 0.3337)
    assert prepare_pair(unit, unit, 8, None, quantize=False)[0][0, 0, 0] == 0.3337  # scored as the float it is
    assert prepare_pair(unit, unit, 8, None)[0][0, 0, 0] == 85 / 255  # the default: rounded to 8 bits


def test_dpdd8_scores_8bit_crops_and_says_so_in_the_report(tmp_path):
    from test_eval import _write_shards

    rng = np.random.default_rng(3)
    sharp = rng.integers(0, 65536, (2, 21, 30, 3), dtype=np.uint16)
    blur = np.clip(sharp.astype(np.int64) + rng.integers(-3000, 3000, sharp.shape), 0, 65535).astype(np.uint16)
    pairs = [{"key": f"k{i}", "sharp": sharp[i], "blur": blur[i], "coc": None,
              "meta": {"source": "dpdd", "f_number": 4.0}} for i in range(2)]
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    model = tiny_model(tmp_path, "ifan")
    result = runner.invoke(app, ["eval", "--shards", str(shards), "--checkpoint", str(model), "--baseline", "input",
                                 "--protocol", "dpdd8", "--report", str(tmp_path / "rep"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    protocol = report["protocol"]
    assert protocol["protocol"] == "dpdd8" and protocol["bit_depth"] == {"dpdd": [8]}
    assert "multiple of 8" in protocol["crop"] and "unrounded" in protocol["quantization"]
    for i, row in enumerate(r for r in report["images"] if r["method"] == "input"):  # by hand, as the scripts do
        a, b = ((x[i, :16, :24] >> 8) / 255.0 for x in (blur, sharp))
        # the input reaches the scorer as the float32 a network sees: equal to float32 rounding
        assert row["psnr"] == pytest.approx(10 * math.log10(1 / np.mean((a - b) ** 2)), rel=1e-7)
    assert any(r["method"] == "ifan" and np.isfinite(r["psnr"]) for r in report["images"])
    default = evaluate(shards, [], ["input"], EvalConfig(report_dir=tmp_path / "rep16", progress=False))
    assert default["protocol"]["protocol"] == "default" and default["protocol"]["bit_depth"] == {"dpdd": [16]}
    assert default["protocol"]["crop"].startswith("none")
    bad = runner.invoke(app, ["eval", "--shards", str(shards), "--baseline", "input", "--protocol", "dpdd16"])
    assert bad.exit_code == 2 and "dpdd8" in bad.output


def test_dpdd8_crop_keeps_the_whole_images_thin_lens_coc_and_bound():
    """The crop cut a 70 px wide sample to 64 px, its metadata left as it was: --coc fnumber read the whole image's
    23.5 mm over the 64 px kept (a CoC 9% small: 1.7458 px for 1.9094), and a camera's sensor width and the f-number
    bound the crop's long side. Now the crop's metadata is a patch's (the width it covers, the image it was cut
    from)."""
    from defocuskit.inference.coc_source import CocSource

    meta = {"f_number": 2.0, "focal_length_mm": 50.0, "focus_distance_m": 2.0, "sensor_width_mm": 23.5,
            "height": 50, "width": 70}
    whole = {"key": "k", "blur": np.zeros((50, 70, 3), np.uint16), "sharp": np.zeros((50, 70, 3), np.uint16),
             "meta": meta}
    (cut,) = apply([whole], EvalProtocol("dpdd8", 16, eight_bit=True, quantize=False))
    assert cut["blur"].shape[:2] == (48, 64) and meta["sensor_width_mm"] == 23.5  # the shard's own left as it was
    for camera in ({}, {"sensor_width_mm": 36.0}):  # the metadata's width, a camera's across the long side
        source = CocSource.create("fnumber", camera=camera)
        expected = source(np.zeros((50, 70, 3), np.float32), meta, name="whole")[0, 0]
        assert source(np.zeros((48, 64, 3), np.float32), cut["meta"], name="cut")[0, 0] == pytest.approx(expected)
    bounded = CocSource("edge", bound=0.1).bounded(np.full((48, 64), 100.0, np.float32), cut["meta"])
    assert bounded.max() == pytest.approx(0.1 * 70 / 2.0)  # K x the whole image's long side / N
    (same,) = apply([whole], EvalProtocol("dpdd8", 10, eight_bit=True, quantize=False))  # nothing cut: as it was
    assert same["meta"] is meta
