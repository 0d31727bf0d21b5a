"""The training images' scale: recorded at export (train_long_side_px), said where deblur's or the API's input is far
larger, and deblur --max-side, which deblurs (and makes the CoC of) the input at a smaller size."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from defocuskit.data.postprocess import resize_max_side
from defocuskit.data.sample import Sample
from defocuskit.imaging import optics
from defocuskit.inference import files
from defocuskit.inference.files import deblur_files
from defocuskit.io.images import encode_png, read_image, write_image
from defocuskit.io.modelfile import read_metadata, save_model
from tests.test_infer import _export_nafnet


def _shard(path: Path, sizes: list[tuple[int, int]], patch_of: tuple[int, int] | None = None) -> str:
    """A tar shard of samples of these (height, width), with their json metadata (a patch's `patch_of`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as w:
        for i, (h, wd) in enumerate(sizes):
            meta = {"f_number": 2.8, "height": h, "width": wd}
            if patch_of:
                meta["patch_of"] = {"height": patch_of[0], "width": patch_of[1], "y": 0, "x": 0}
            w.write({"__key__": f"s{i:03d}", "sharp.png": encode_png(np.zeros((h, wd, 3), np.uint8)),
                     "json": json.dumps(meta).encode()})
    return str(path)


def test_median_long_side_of_shards_and_of_a_patchs_photo(tmp_path: Path) -> None:
    from defocuskit.data.image_scale import median_long_side

    a = _shard(tmp_path / "a" / "train-000000.tar", [(24, 40), (40, 30), (20, 50)])
    assert median_long_side([a]) == 40
    patches = _shard(tmp_path / "p" / "train-000000.tar", [(16, 16)] * 3, patch_of=(384, 512))
    assert median_long_side([patches]) == 512  # the image a patch was cut from, not the patch
    assert median_long_side(["pipe:cat " + a]) is None  # remote: not read


def test_export_records_the_training_images_long_side(tmp_path: Path) -> None:
    from defocuskit.methods.recipes import load_recipe_source
    from defocuskit.train.loop import train

    paired = tmp_path / "paired" / "train-000000.tar"
    paired.parent.mkdir()
    with wds.TarWriter(str(paired)) as w:
        for i in range(4):
            img = (np.random.default_rng(i).random((36, 48, 3)) * 255).astype(np.uint8)
            soft = cv2.GaussianBlur(img, (0, 0), 2.0)  # a blur the export reads (train_blur_px)
            w.write({"__key__": f"s{i}", "sharp.png": encode_png(img), "blur.png": encode_png(soft),
                     "json": json.dumps({"f_number": 2.8, "height": 36, "width": 48,
                                         "patch_of": {"height": 360, "width": 480, "y": 0, "x": 0}}).encode()})
    recipe, _ = load_recipe_source("nafnet-tiny", [f"data.train={paired}", f"output_dir={tmp_path / 'run'}",
                                                   "train.max_steps=1", "data.batch_size=1", "data.num_workers=0"])
    path = train(recipe, resume=False)
    meta = read_metadata(path)
    assert meta["train_long_side_px"] == "480"
    from defocuskit.data.image_scale import median_blur_px

    assert float(meta["train_blur_px"]) == pytest.approx(median_blur_px([str(paired)]), rel=1e-3)
    assert float(meta["train_blur_px"]) > 1.0  # a blur of sigma 2 px reads wider than a pixel


def _model(tmp_path: Path, trained: int | None) -> Path:
    """The identity NAFNet of test_infer, its metadata recording training images of `trained` px (None: not)."""
    plain = _export_nafnet(tmp_path / "plain.safetensors")
    from defocuskit.io.modelfile import read_model_file

    tensors, meta = read_model_file(plain)
    extra = {"train_long_side_px": str(trained)} if trained else {}
    save_model(tmp_path / f"m{trained}.safetensors", tensors, meta["method"], meta["recipe"], extra=extra)
    return tmp_path / f"m{trained}.safetensors"


def _photo(path: Path, h: int = 40, w: int = 60) -> np.ndarray:
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    write_image(path, img)
    return img


def test_deblur_says_an_input_over_twice_the_training_scale(tmp_path: Path, capsys) -> None:
    _photo(tmp_path / "big.png")  # 60 px on its long side
    for trained, said in ((24, True), (32, False), (None, False)):  # 60 > 2 x 24; 60 < 2 x 32; not recorded
        out = tmp_path / f"o{trained}"
        deblur_files([tmp_path / "big.png"], _model(tmp_path, trained), out, progress=False)
        err = capsys.readouterr().err
        record, = json.loads((out / "deblur.json").read_text())["images"]
        assert ("60 px on its long side, the model trained on images of about 24 px" in err) == said, err
        assert (record["scale_note"] is not None) == said and record["train_long_side_px"] == trained
        if said:
            assert "about 2.5x wider in pixels" in err and "`--max-side 24`" in err and err.count("note:") == 1


def test_api_warns_of_an_image_over_twice_the_training_scale(tmp_path: Path) -> None:
    import defocuskit

    img = _photo(tmp_path / "big.png")
    with pytest.warns(UserWarning, match="60 px on its long side, the model trained on images of about 24 px"):
        defocuskit.load(_model(tmp_path, 24), device="cpu").deblur(img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defocuskit.load(_model(tmp_path, 32), device="cpu").deblur(img)


def test_deblur_max_side_deblurs_and_writes_at_that_size(tmp_path: Path) -> None:
    img = _photo(tmp_path / "big.png", 40, 60)
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "big.png"), "--checkpoint", str(_model(tmp_path, 24)),
                                   "--out", str(tmp_path / "o"), "--max-side", "30"])
    assert res.exit_code == 0, res.output
    out = read_image(tmp_path / "o" / "big.png")
    ingested = resize_max_side(Sample(key="k", sharp=None, blur=img, meta={}), 30).blur
    assert out.shape == ingested.shape == (20, 30, 3)
    assert np.abs(out.astype(int) - ingested).max() <= 1  # the identity model: ingest's INTER_AREA pixels
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert (record["max_side"], record["input_size"], record["size"]) == (30, [60, 40], [30, 20])
    assert record["scale_note"] is None  # 30 px: not over twice the training images' 24
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "big.png"), "--checkpoint", str(_model(tmp_path, 24)),
                                   "--out", str(tmp_path / "o2"), "--max-side", "4"])
    assert res.exit_code == 2 and "--max-side 4: at least 8 pixels" in res.output


def test_max_side_fnumber_coc_is_the_ingested_images(tmp_path: Path, monkeypatch) -> None:
    img = _photo(tmp_path / "big.png", 40, 60)
    seen: list[tuple[tuple[int, int], float]] = []

    def spy(image, result, coc_map, gate_px, smooth):
        seen.append((image.shape[:2], float(coc_map.max())))
        return result

    monkeypatch.setattr(files, "gate", spy)
    deblur_files([tmp_path / "big.png"], _model(tmp_path, None), tmp_path / "o", coc="fnumber", f_number=2.0,
                 focus_gate=1.0, progress=False, max_side=30)
    ingested = resize_max_side(Sample(key="k", sharp=None, blur=img, meta={}), 30).blur
    meta = {"f_number": 2.0}  # ingest's metadata of the shot, its camera the default one: spans the long side
    expected = optics.coc_from_metadata(meta, optics.sensor_span_px(meta, *ingested.shape[:2], given=True))
    assert seen == [((20, 30), pytest.approx(expected, rel=1e-5))]
    assert expected == pytest.approx(optics.coc_from_metadata(meta, 60) / 2, rel=1e-6)  # half the full frame's


def test_eval_notes_shards_over_twice_the_training_scale(tmp_path: Path) -> None:
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "test-000000.tar")) as w:
        for i in range(2):
            img = (np.random.default_rng(i).random((40, 48, 3)) * 255).astype(np.uint8)
            w.write({"__key__": f"v{i}", "sharp.png": encode_png(img), "blur.png": encode_png(img // 2),
                     "json": json.dumps({"f_number": 2.8, "height": 40, "width": 48}).encode()})
    for trained, said in ((16, True), (24, False)):  # 48 > 2 x 16; 48 = 2 x 24
        report = evaluate(shards, [_model(tmp_path, trained)], [],
                          EvalConfig(report_dir=tmp_path / f"r{trained}", progress=False))
        notes = [n for n in report["notes"] if "wider in pixels" in n]
        assert len(notes) == said, report["notes"]
        if said:
            assert "48 px on their long side (median), the model trained on images of about 16 px" in notes[0]
            assert notes[0] in json.loads((tmp_path / "r16" / "report.json").read_text())["notes"]
