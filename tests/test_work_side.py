"""--work-side / work_side=: a model deblurs at a smaller long side (its training scale) and the image comes back at its
own size, the model's change upsampled onto it (inference.scale.work_side_restore): deblur, the API and eval."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds

from defocuskit.data.postprocess import resize_area
from defocuskit.inference import files
from defocuskit.inference.files import deblur_files
from defocuskit.inference.scale import resolve_work_side, work_side_restore
from defocuskit.io.images import encode_png, read_image, write_image
from tests.test_image_scale import _model


def _filtered(x: np.ndarray, sigma: float, inverse: bool = False, nsr: float = 1e-3) -> np.ndarray:
    """`x` (H, W, C) blurred by a periodic Gaussian of `sigma` px, or (`inverse`) Wiener-deconvolved from one."""
    h, w = x.shape[:2]
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    otf = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))  # the Gaussian's transfer function
    gain = otf / (otf ** 2 + nsr) if inverse else otf
    out = [np.real(np.fft.ifft2(np.fft.fft2(x[:, :, c]) * gain)) for c in range(x.shape[2])]
    return np.stack(out, axis=2).astype(np.float32)


def _gaussian_wiener(sigma: float):
    """A 'model' that undoes a Gaussian blur of `sigma` px and no other."""
    return lambda x: _filtered(x, sigma, inverse=True)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_a_model_of_one_blur_width_recovers_that_blur_at_twice_the_size_by_its_work_side() -> None:
    # smooth random texture; at 128 px a Gaussian blur of 4 px is, at 64 px, one of 2 px: what the 'model' undoes
    rng = np.random.default_rng(0)
    sharp = _filtered(rng.random((128, 128, 3)).astype(np.float32), 1.5)
    sharp = (sharp - sharp.min()) / (sharp.max() - sharp.min())
    blur = _filtered(sharp, 4.0)
    model = _gaussian_wiener(2.0)
    whole = _psnr(np.clip(model(blur), 0, 1), sharp) - _psnr(blur, sharp)
    at_work = _psnr(np.clip(work_side_restore(model, blur, 64), 0, 1), sharp) - _psnr(blur, sharp)
    assert at_work > 1.0 and at_work > whole + 0.5, (whole, at_work)
    as_given = work_side_restore(model, blur, 128)  # no larger than the work side: the model's own output
    np.testing.assert_array_equal(as_given, model(blur))


def test_work_side_adds_the_change_made_at_the_smaller_size_and_keeps_the_photos_own_detail() -> None:
    image = np.random.default_rng(1).random((40, 60, 3)).astype(np.float32)
    seen: list[tuple[int, ...]] = []

    def brighter(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x + 0.1

    out = work_side_restore(brighter, image, 30)
    assert seen == [(20, 30, 3)]
    np.testing.assert_allclose(out, image + 0.1, atol=1e-5)  # the change, upsampled; every pixel of the photo kept
    np.testing.assert_array_equal(work_side_restore(lambda x: x, image, 30), image)
    gray = work_side_restore(lambda x: x * 0.5, image[:, :, :1], 30)
    small = resize_area(image[:, :, :1], (30, 20))
    expected = image[:, :, :1] + cv2.resize(small * 0.5 - small, (60, 40), interpolation=cv2.INTER_CUBIC)[:, :, None]
    np.testing.assert_allclose(gray, expected, atol=1e-6)


def _texture(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sharp = _filtered(rng.random((size, size, 3)).astype(np.float32), 1.0)
    return (sharp - sharp.min()) / (sharp.max() - sharp.min())


def test_the_blur_matched_side_of_a_scene_does_not_depend_on_its_resolution() -> None:
    from defocuskit.data.image_scale import blur_px
    from defocuskit.inference.scale import blur_matched_side

    big = _filtered(_texture(256), 4.0)  # a scene's blur at 256 px; the same photo at 128 px is blurred half as wide
    small = resize_area(big, (128, 128))
    assert blur_px(big) == pytest.approx(2 * blur_px(small), rel=0.2)
    trained = blur_px(_filtered(_texture(128, seed=5), 1.5))  # another scene, as the model's training inputs read
    sides = [blur_matched_side(big, trained), blur_matched_side(small, trained)]
    assert sides[0] == pytest.approx(sides[1], rel=0.15) and sides[1] < 128, sides  # both deblurred at one size
    assert blur_matched_side(_filtered(_texture(128), 1.0), trained) is None  # no wider than trained: its own size


def test_a_blur_wider_than_the_estimator_reads_at_its_size_is_read_at_a_smaller_one() -> None:
    from defocuskit.data.image_scale import blur_px
    from defocuskit.imaging.blur_estimate import estimate_coc

    sharp = _texture(512, seed=3)
    wide, quarter = _filtered(sharp, 12.0), _filtered(resize_area(sharp, (128, 128)), 3.0)  # one scene, two sizes
    once = float(np.percentile(estimate_coc(wide), 90))  # read at 512 px alone: the estimator's widest, ~21 px
    assert blur_px(wide) == pytest.approx(4 * blur_px(quarter), rel=0.2) and blur_px(wide) > 1.4 * once
    mild = _filtered(sharp, 2.0)  # well inside the estimator's range: read once, at the photo's own size
    assert blur_px(mild) == float(np.percentile(estimate_coc(mild), 90))


def test_auto_deblurs_each_photo_where_its_blur_is_the_models(tmp_path: Path) -> None:
    from defocuskit.data.image_scale import blur_px
    from defocuskit.inference.scale import side_for

    model = _gaussian_wiener(2.0)  # undoes a Gaussian of 2 px and no other
    trained = blur_px(_filtered(_texture(128, seed=7), 2.0))  # its training inputs, another scene
    sharp = _texture(128)
    for sigma in (2.0, 4.0):  # one photo whose blur is the model's, one twice as wide
        blur = _filtered(sharp, sigma)
        gains = {name: _psnr(np.clip(work_side_restore(model, blur, side), 0, 1), sharp) - _psnr(blur, sharp)
                 for name, side in (("whole", None), ("half", 64), ("auto", side_for("auto", blur, trained)))}
        best = max(gains["whole"], gains["half"])
        assert gains["auto"] > best - 0.6 and gains["auto"] > min(gains["whole"], gains["half"]) + 1.0, (sigma, gains)


def test_resolve_work_side_names_what_is_wrong() -> None:
    assert resolve_work_side("trained", 384, "m.safetensors") == 384
    assert resolve_work_side("512", None, "m") == 512 and resolve_work_side(None, 384, "m") is None
    with pytest.raises(ValueError, match="m.safetensors records no training image size"):
        resolve_work_side("trained", None, "m.safetensors")
    with pytest.raises(ValueError, match="--work-side big: expected a long side in pixels, 'trained', 'auto' or 0"):
        resolve_work_side("big", 384, "m")
    assert resolve_work_side("auto", None, "m", blur=3.5) == "auto"
    with pytest.raises(ValueError, match="--work-side auto: m.safetensors records no training blur"):
        resolve_work_side("auto", 384, "m.safetensors")
    with pytest.raises(ValueError, match="--work-side 4: at least 8 pixels"):
        resolve_work_side(4, 384, "m")


def test_deblur_work_side_runs_the_model_small_and_writes_the_input_size(tmp_path: Path, monkeypatch) -> None:
    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "big.png", img)
    seen: list[tuple[tuple[int, ...], float]] = []
    real = files.restore_in_channels

    def spy(method, recipe, model, band, **kwargs):
        out = real(method, recipe, model, band, **kwargs)  # the identity NAFNet
        return out + 0.2

    def gate_spy(image, result, coc_map, gate_px, smooth):
        seen.append((image.shape, float(coc_map.max())))
        return result

    monkeypatch.setattr(files, "restore_in_channels", spy)
    monkeypatch.setattr(files, "gate", gate_spy)
    deblur_files([tmp_path / "big.png"], _model(tmp_path, 20), tmp_path / "o", coc="fnumber", f_number=2.0,
                 focus_gate=1.0, progress=False, work_side="trained")
    out = read_image(tmp_path / "o" / "big.png")
    assert out.shape == img.shape
    assert np.abs(out.astype(int) - np.clip(img.astype(int) + 51, 0, 255)).max() <= 1  # +0.2, upsampled onto it
    from defocuskit.imaging import optics

    meta = {"f_number": 2.0}
    assert seen == [((13, 20, 3), pytest.approx(optics.coc_from_metadata(meta, 20), rel=1e-5))]  # the small one's
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert (record["work_side"], record["size"], record["scale_note"]) == (20, [60, 40], None)
    assert record["max_side"] is None and record["tile"] == [16, 20]  # the network ran on 13 x 20, padded


def test_deblur_work_side_refusals_exit_2_naming_the_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    write_image(tmp_path / "big.png", np.zeros((40, 60, 3), np.uint8))
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "big.png"), "--checkpoint", str(_model(tmp_path, None)),
                                   "--out", str(tmp_path / "o"), "--work-side", "trained"])
    assert res.exit_code == 2 and "mNone.safetensors records no training image size" in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_api_work_side_shrinks_a_given_map_with_the_image(tmp_path: Path, monkeypatch) -> None:
    import defocuskit
    import defocuskit.api as api

    model = defocuskit.load(_model(tmp_path, 30), device="cpu")
    seen: list[tuple[tuple[int, ...], float]] = []

    def gate_spy(band, out, coc_band, gate_px, smooth):
        seen.append((band.shape, float(coc_band.mean())))
        return out + 0.1

    monkeypatch.setattr(api, "gated", gate_spy)
    img = (np.random.default_rng(2).random((40, 60, 3)) * 255).astype(np.uint8)
    out = model.deblur(img, coc=np.full((40, 60), 4.0, np.float32), focus_gate=1.0, work_side="trained")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert seen == [((20, 30, 3), pytest.approx(2.0))]  # 4 px at 60 px wide is 2 px at 30
    assert np.abs(out.astype(int) - np.clip(img.astype(int) + 25.5, 0, 255)).max() <= 1
    seen.clear()
    model.deblur(img, f_number=2.0, focus_gate=1.0, work_side=30)
    whole = defocuskit.load(_model(tmp_path, 60), device="cpu")
    monkeypatch.setattr(api, "gated", lambda band, out, coc, px, smooth: seen.append(float(coc.mean())) or out)
    whole.deblur(img, f_number=2.0, focus_gate=1.0)
    assert seen[0][1] == pytest.approx(seen[1] / 2, rel=1e-5)  # the thin lens's CoC at half the pixels
    with pytest.raises(ValueError, match="work_side= trained: .* records no training image size"):
        defocuskit.load(_model(tmp_path, None), device="cpu").deblur(img, work_side="trained")


def _shards(folder: Path, size: tuple[int, int] = (40, 48)) -> Path:
    folder.mkdir(parents=True)
    with wds.TarWriter(str(folder / "test-000000.tar")) as w:
        for i in range(2):
            img = (np.random.default_rng(i).random((*size, 3)) * 255).astype(np.uint8)
            w.write({"__key__": f"v{i}", "sharp.png": encode_png(img), "blur.png": encode_png(img // 2),
                     "json": json.dumps({"f_number": 2.8, "height": size[0], "width": size[1]}).encode()})
    return folder


def test_eval_work_side_per_checkpoint_scores_at_the_shards_size(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.eval.config import EvalConfig, EvalError
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.inference import restore

    shards = _shards(tmp_path / "shards")
    model = _model(tmp_path, 16)  # 48 px shards: three times its training images' long side
    ran: list[tuple[int, ...]] = []
    real = restore.restore_image

    def spy(method, recipe, net, image, **kwargs):
        ran.append(image.shape)
        return real(method, recipe, net, image, **kwargs) + 0.25  # the identity NAFNet, brighter

    monkeypatch.setattr(restore, "restore_image", spy)
    report = evaluate(shards, [model, model], [], EvalConfig(report_dir=tmp_path / "r", progress=False,
                                                             work_sides=["m16#2:trained"]))
    assert sorted(ran) == [(13, 16, 3)] * 2 + [(40, 48, 3)] * 2  # per sample: m16 whole, m16#2 at 16 px
    infos = report["protocol"]["methods"]
    assert infos["m16"]["work_side"] is None and infos["m16#2"]["work_side"]["work_px"] == 16
    gains = {r["method"]: r["psnr"] - r["psnr_input"] for r in report["rows"]}
    assert gains["m16"] == pytest.approx(gains["m16#2"], abs=0.01) and gains["m16"] > 1  # the same change, upsampled
    assert [n for n in report["notes"] if "wider in pixels" in n][0].startswith("m16:")  # #2 is at its scale
    with pytest.raises(EvalError, match="--work-side trained: .*mNone.safetensors records no training image size"):
        evaluate(shards, [_model(tmp_path, None)], [], EvalConfig(report_dir=tmp_path / "r2", progress=False,
                                                                  work_sides=["trained"]))
    with pytest.raises(EvalError, match="--work-side is for models"):
        evaluate(shards, [], ["input"], EvalConfig(report_dir=tmp_path / "r3", progress=False, work_sides=["24"]))


def test_deblur_and_eval_work_side_auto_read_the_models_training_blur(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.io.modelfile import read_model_file, save_model

    plain = _model(tmp_path, 16)
    tensors, meta = read_model_file(plain)
    model = tmp_path / "blur.safetensors"  # as if its training inputs' blur read 0.5 px: every photo reads wider
    save_model(model, tensors, meta["method"], meta["recipe"], extra={"train_long_side_px": "16",
                                                                     "train_blur_px": "0.5"})
    img = (_filtered(np.random.default_rng(0).random((40, 60, 3)).astype(np.float32), 2.0) * 255).astype(np.uint8)
    write_image(tmp_path / "soft.png", img)
    from defocuskit.inference.scale import blur_matched_side

    expected = blur_matched_side(img.astype(np.float32) / 255, 0.5)
    assert expected is not None and expected < 60
    deblur_files([tmp_path / "soft.png"], model, tmp_path / "o", progress=False, work_side="auto")
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert (record["work_side"], record["work_px"], record["scale_note"]) == ("auto", expected, None)
    assert read_image(tmp_path / "o" / "soft.png").shape == img.shape
    shards = _shards(tmp_path / "shards")
    report = evaluate(shards, [model], [], EvalConfig(report_dir=tmp_path / "r", progress=False,
                                                      work_sides=["auto"]))
    assert report["protocol"]["methods"]["blur"]["work_side"]["train_blur_px"] == 0.5


def test_bench_work_side_scores_the_three_sizes_side_by_side(tmp_path: Path) -> None:
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[1] / "tools" / "bench_work_side.py"
    shards = _shards(tmp_path / "shards")
    train = tmp_path / "renders"
    train.mkdir()
    with wds.TarWriter(str(train / "train-000000.tar")) as w:
        for i in range(3):
            img = (np.random.default_rng(10 + i).random((32, 32, 3)) * 255).astype(np.uint8)
            w.write({"__key__": f"r{i}", "sharp.png": encode_png(img),
                     "blur.png": encode_png(cv2.GaussianBlur(img, (0, 0), 1.5)), "json": b"{}"})
    run = [sys.executable, str(tool), "--checkpoint", str(_model(tmp_path, 16)), "--shards", str(shards)]
    refused = subprocess.run([*run, "--report", str(tmp_path / "r0")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "records no train_blur_px: give --train-shards" in refused.stderr
    done = subprocess.run([*run, "--report", str(tmp_path / "r"), "--train-shards", str(train)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "r" / "gains.json").read_text())
    assert {r["method"] for r in rows} == {"r", "r#2", "r#3"} and all(r["n"] >= 1 for r in rows)
    assert "whole" in done.stdout and "trained" in done.stdout and "auto" in done.stdout
