"""A model's own work side (its recipe's inference.work_side): deblur, eval and the API deblur at it unless told
otherwise, 0 turns it off, and a file that cannot run it falls back to the image's own size with one note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defocuskit.config.typed import RecipeError
from defocuskit.inference import files
from defocuskit.inference.files import deblur_files
from defocuskit.inference.scale import blur_matched_side
from defocuskit.io.images import read_image, write_image
from defocuskit.io.modelfile import read_model_file, save_model
from defocuskit.methods.recipes import load_recipe
from tests.test_image_scale import _model
from tests.test_work_side import _filtered, _shards

TRAIN_BLUR = 0.5  # px: every photo below reads wider, so "auto" deblurs it smaller than its own size


def _own_model(tmp_path: Path, own: str | int | None, blur: float | None = TRAIN_BLUR) -> Path:
    """The identity NAFNet whose recipe says inference.work_side `own`, recording a training blur `blur` px."""
    tensors, meta = read_model_file(_model(tmp_path, 16))
    recipe = {**meta["recipe"], "inference": {**(meta["recipe"].get("inference") or {}), "work_side": own}}
    path = tmp_path / f"own-{own}-{blur}.safetensors"
    extra = {"train_long_side_px": "16", **({"train_blur_px": str(blur)} if blur else {})}
    save_model(path, tensors, meta["method"], recipe, extra=extra)
    return path


def _soft_photo(path: Path) -> np.ndarray:
    img = (_filtered(np.random.default_rng(0).random((40, 60, 3)).astype(np.float32), 2.0) * 255).astype(np.uint8)
    write_image(path, img)
    return img


def _spy_sizes(monkeypatch, module, name: str) -> list[tuple[int, ...]]:
    """The image sizes `module.name` (a restore function) is called with, the output 0.2 brighter."""
    ran: list[tuple[int, ...]] = []
    real = getattr(module, name)

    def spy(method, recipe, model, image, **kwargs):
        ran.append(image.shape[:2])
        return real(method, recipe, model, image, **kwargs) + 0.2

    monkeypatch.setattr(module, name, spy)
    return ran


@pytest.mark.parametrize(("text", "value"), [("auto", "auto"), ("trained", "trained"), ("512", 512), ("null", None)])
def test_recipe_work_side_reads_auto_trained_pixels_or_null(tmp_path: Path, text: str, value) -> None:
    assert load_recipe("recipes/nafnet-tiny.yaml", [f"inference.work_side={text}"]).inference.work_side == value


@pytest.mark.parametrize("text", ["4", "big", "true", "0"])
def test_recipe_work_side_refuses_what_is_no_size(text: str) -> None:
    with pytest.raises((RecipeError, ValueError), match="inference.work_side"):
        load_recipe("recipes/nafnet-tiny.yaml", [f"inference.work_side={text}"])


def test_a_defocus_map_recipe_takes_a_work_side_to_read_its_map_at() -> None:
    from defocuskit.methods import get_method
    from defocuskit.train.checks import check_recipe

    for side in ("auto", "trained", "256", "null"):  # tests/test_map_work_side.py: where the map is read
        recipe = load_recipe("recipes/defocus-map-tiny.yaml", [f"inference.work_side={side}"])
        check_recipe(recipe, get_method("defocus-map"))


def test_deblur_runs_at_the_models_own_work_side_unless_told_0(tmp_path: Path, monkeypatch, capsys) -> None:
    img = _soft_photo(tmp_path / "soft.png")
    expected = blur_matched_side(img.astype(np.float32) / 255, TRAIN_BLUR)
    assert expected is not None and expected < 60
    ran = _spy_sizes(monkeypatch, files, "restore_in_channels")
    model = _own_model(tmp_path, "auto")
    for given, out, size, origin in ((None, "o", expected, "recipe"), (0, "o0", None, None),
                                     ("0", "o1", None, None), (30, "o2", 30, "option")):
        ran.clear()
        deblur_files([tmp_path / "soft.png"], model, tmp_path / out, progress=False, work_side=given)
        record, = json.loads((tmp_path / out / "deblur.json").read_text())["images"]
        assert (record["work_px"], record["work_side_from"], record["work_side_note"]) == (size, origin, None), given
        assert max(ran[0]) == (size or 60)  # the network ran at that long side
        out_img = read_image(tmp_path / out / "soft.png")  # written at the photo's own size, the change upsampled
        assert out_img.shape == img.shape and abs(float(out_img.mean()) - float(img.mean()) - 51) < 1.5
    err = capsys.readouterr().err  # the training scale said where the photo ran at its own 60 px (over 2 x 16) only
    assert "inference.work_side" not in err and err.count("60 px on its long side") == 2


def test_deblur_falls_back_to_the_own_size_where_the_file_cannot_run_its_work_side(tmp_path: Path, monkeypatch,
                                                                                    capsys) -> None:
    _soft_photo(tmp_path / "soft.png")
    ran = _spy_sizes(monkeypatch, files, "restore_in_channels")
    deblur_files([tmp_path / "soft.png"], _own_model(tmp_path, "auto", blur=None), tmp_path / "o", progress=False)
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert record["work_px"] is None and record["work_side"] is None and ran == [(40, 60)]
    assert "inference.work_side auto, but the file records no train_blur_px" in record["work_side_note"]
    assert capsys.readouterr().err.count("records no train_blur_px") == 1
    with pytest.raises(ValueError, match="--work-side auto: .* records no training blur"):  # asked for: refused
        deblur_files([tmp_path / "soft.png"], _own_model(tmp_path, "auto", blur=None), tmp_path / "o2",
                     progress=False, work_side="auto")
    assert not (tmp_path / "o2").exists()


def test_eval_scores_each_model_at_its_own_work_side(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.inference import restore

    shards = _shards(tmp_path / "shards")  # 40 x 48 random pixels, their blur.png darker
    own, none = _own_model(tmp_path, 24), _own_model(tmp_path, "auto", blur=None)
    ran = _spy_sizes(monkeypatch, restore, "restore_image")
    label = own.stem
    report = evaluate(shards, [own, own, none], [], EvalConfig(report_dir=tmp_path / "r", progress=False,
                                                               work_sides=[f"{label}#2:0"]))
    assert sorted(max(s) for s in ran) == [24, 24, 48, 48, 48, 48]  # own at 24 px; #2 and the fallback at 48
    infos = report["protocol"]["methods"]
    assert infos[label]["work_side"]["work_px"] == 24 and infos[label]["work_side"]["from"] == "recipe"
    assert infos[f"{label}#2"]["work_side"] is None and infos[none.stem]["work_side"] is None
    note, = [n for n in report["notes"] if "inference.work_side" in n]
    assert note.startswith(f"{none.stem}: ") and "records no train_blur_px" in note
    gains = {r["method"]: r["psnr"] - r["psnr_input"] for r in report["rows"]}
    assert gains[label] == pytest.approx(gains[f"{label}#2"], abs=0.01)  # the same +0.2, made small and upsampled


def test_api_deblurs_at_the_models_own_work_side_unless_told_0(tmp_path: Path, monkeypatch) -> None:
    import defocuskit
    import defocuskit.api as api

    img = _soft_photo(tmp_path / "soft.png")
    expected = blur_matched_side(img.astype(np.float32) / 255, TRAIN_BLUR)
    model = defocuskit.load(_own_model(tmp_path, "auto"), device="cpu")
    assert model.work_side == "auto"
    ran = _spy_sizes(monkeypatch, api, "restore_in_channels")
    out = model.deblur(img)
    assert out.shape == img.shape and max(ran[-1]) == expected
    with pytest.warns(UserWarning, match="60 px on its long side"):  # at its own size: the training scale said
        model.deblur(img, work_side=0)
    assert max(ran[-1]) == 60
    fallback = defocuskit.load(_own_model(tmp_path, "auto", blur=None), device="cpu")
    with pytest.warns(UserWarning, match="records no train_blur_px; images deblurred at their own size"):
        fallback.deblur(img)
    assert max(ran[-1]) == 60


def test_the_cpu_recipes_measured_at_full_size_deblur_at_the_side_measured_best() -> None:
    """docs/benchmarks.md, "Deblurring at the blur the model learnt" and "rddm-cpu at the shots' own size": rddm-cpu
    at its training size (blur-matched it lost at f/8 on every VABD stack), the others blur-matched."""
    for name, side in (("nafnet-cpu", "auto"), ("jdrl-cpu", "auto"), ("rddm-cpu", "trained"), ("hidd-cpu", "auto")):
        assert load_recipe(f"recipes/{name}.yaml").inference.work_side == side, name


def test_a_recipe_trained_side_runs_at_the_files_training_long_side(tmp_path: Path, monkeypatch) -> None:
    """inference.work_side `trained` (rddm-cpu's): the photo deblurred at the file's train_long_side_px and written at
    its own size; a file that records no training size runs at the photo's own size with one note."""
    img = _soft_photo(tmp_path / "soft.png")
    ran = _spy_sizes(monkeypatch, files, "restore_in_channels")
    deblur_files([tmp_path / "soft.png"], _own_model(tmp_path, "trained"), tmp_path / "o", progress=False)
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert (record["work_px"], record["work_side_from"], max(ran[0])) == (16, "recipe", 16)
    assert read_image(tmp_path / "o" / "soft.png").shape == img.shape
    tensors, meta = read_model_file(_own_model(tmp_path, "trained"))
    bare = tmp_path / "bare.safetensors"  # no train_long_side_px recorded
    save_model(bare, tensors, meta["method"], meta["recipe"])
    ran.clear()
    deblur_files([tmp_path / "soft.png"], bare, tmp_path / "o2", progress=False)
    record, = json.loads((tmp_path / "o2" / "deblur.json").read_text())["images"]
    assert record["work_px"] is None and max(ran[0]) == 60
    assert "inference.work_side trained, but the file records no train_long_side_px" in record["work_side_note"]


def test_cli_work_side_0_deblurs_at_the_photos_own_size(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    _soft_photo(tmp_path / "soft.png")
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "soft.png"), "--checkpoint",
                                   str(_own_model(tmp_path, "auto")), "--out", str(tmp_path / "o"),
                                   "--work-side", "0"])
    assert res.exit_code == 0, res.output
    record, = json.loads((tmp_path / "o" / "deblur.json").read_text())["images"]
    assert record["work_side"] is None and record["work_px"] is None


def test_the_model_card_says_its_own_work_side_and_the_one_the_scores_were_made_at(tmp_path: Path) -> None:
    import defocuskit
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    model_file = _own_model(tmp_path, 24)
    evaluate(_shards(tmp_path / "shards"), [model_file], [], EvalConfig(report_dir=tmp_path / "r", progress=False))
    folder = defocuskit.load(model_file, device="cpu").save_pretrained(tmp_path / "hub", report=tmp_path / "r")
    card = (folder / "README.md").read_text()
    assert "deblurs each image at 24 px on its long side by default (`inference.work_side: 24`)" in card
    assert "work_side=0" in card
    settings = next(line for line in card.splitlines() if line.startswith("Settings of that run"))
    assert "deblurred at work side 24 (its recipe's), scored at the images' own size" in settings
    plain = defocuskit.load(_model(tmp_path, 16), device="cpu").save_pretrained(tmp_path / "hub2")
    assert "deblurs each image" not in (plain / "README.md").read_text()
