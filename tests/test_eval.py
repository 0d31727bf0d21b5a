"""The by-aperture evaluator: real VABD optics end to end, report schema, grouping, and every bad-input path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.evaluate import evaluate, evaluate_samples
from defocuskit.eval.report import ROW_KEYS
from defocuskit.eval.scoring import Scoring
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.images import read_image

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"  # ../shared/fixtures/real
VABD = FIXTURES / "VABD"
ROW_SCHEMA = {"method", "f_number", "n", "psnr", "ssim", "mae", "lpips", "psnr_input", "ssim_input", "mae_input"}
IMAGE_SCHEMA = {"key", "method", "f_number", "psnr", "ssim", "mae"}


@pytest.fixture(scope="module")
def vabd_shards(tmp_path_factory) -> Path:
    """The VABD fixture ingested at a reduced size (integration: the real ingest and VABD source)."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    out = tmp_path_factory.mktemp("vabd_shards")
    run_ingest({"vabd": VABD}, IngestOptions(out=str(out), workers=0, max_side=384), progress=False)
    return out


def _write_shards(folder: Path, split: str, samples: list[dict]) -> Path:
    """Shards of the contract (data/shards.py), written with webdataset's ShardWriter."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / f"{split}-%06d.tar"), maxcount=100, verbose=0) as sink:
        for s in samples:
            sink.write({"__key__": s["key"], **encode_members(s["sharp"], s["blur"], s.get("coc"), s["meta"])})
    return folder


def _crop_pairs(n: int = 3, size: tuple[int, int] = (48, 64)) -> list[dict]:
    """Real sharp crops (VABD f/16) with their real f/1.8 counterparts, small."""
    h, w = size
    out = []
    for i, stem in enumerate(["0001", "0002", "0003"][:n]):
        sharp = read_image(VABD / "train" / "input" / f"{stem}.JPG")
        blur = read_image(VABD / "train" / "1_8" / f"{stem}.JPG")
        y, x = 400, 600
        out.append({"key": f"s{i}", "sharp": sharp[y:y + h, x:x + w], "blur": blur[y:y + h, x:x + w], "coc": None,
                    "meta": {"source": "vabd", "f_number": None, "focal_length_mm": 50.0}})
    return out


def export_identity_nafnet(path: Path, poison: str | None = None) -> Path:
    """A tiny exported NAFNet whose last layer is zero: with its global residual, the identity."""
    from torch import nn

    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import resolve_recipe

    recipe = resolve_recipe({"method": "nafnet", "data": {"image_size": 32},
                             "model": {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}})
    model = get_method("nafnet").build(recipe.model, recipe.objective, False)
    nn.init.zeros_(model.ending.weight)
    nn.init.zeros_(model.ending.bias)
    state = model.state_dict()
    if poison is not None:  # what a diverged training run exports
        state[poison].view(-1)[:3] = float("inf")
    save_model(path, state, "nafnet", recipe_to_dict(recipe))
    return path


# ----------------------------------------------------------------------------- real optics


def test_vabd_by_aperture_input_baseline(vabd_shards: Path, tmp_path: Path) -> None:
    report = evaluate(vabd_shards, [], ["input"], EvalConfig(split="train", report_dir=tmp_path / "rep",
                                                             progress=False))
    rows = {r["f_number"]: r for r in report["rows"] if r["method"] == "input"}
    assert set(rows) == {1.8, 2.8, 8.0, None}
    assert all(rows[f]["n"] == 3 for f in (1.8, 2.8, 8.0)) and rows[None]["n"] == 9
    # Real optics: the blurred shot drifts further from the f/16 reference as the aperture opens.
    assert rows[8.0]["psnr_input"] > rows[2.8]["psnr_input"] > rows[1.8]["psnr_input"]
    assert rows[8.0]["ssim_input"] > rows[1.8]["ssim_input"]
    assert rows[1.8]["psnr"] == rows[1.8]["psnr_input"] and rows[1.8]["psnr_gain"] == 0.0
    mean_all = np.mean([im["psnr"] for im in report["images"]])
    assert rows[None]["psnr"] == pytest.approx(mean_all, abs=1e-9)
    assert any("sharp-only" in n for n in report["notes"])  # the f/16 references are not scored

    rep = tmp_path / "rep"
    data = json.loads((rep / "report.json").read_text())
    assert {"protocol", "rows", "images"} <= set(data)
    for row in data["rows"]:
        assert ROW_SCHEMA <= set(row)
        assert row["lpips"] is None
    for im in data["images"]:
        assert IMAGE_SCHEMA <= set(im)
    proto = data["protocol"]
    assert "structural_similarity" in proto["ssim"] and proto["ssim_variant"] == "uniform7"
    assert proto["lpips"].startswith("unavailable:")
    assert proto["bit_depth"] == {"vabd": [8]}
    assert proto["alignment"].startswith("none") and proto["grouping"] == "f_number rounded to 0.1 (0.01 below f/1)"
    assert {"numpy", "scikit-image", "torch", "defocuskit"} <= set(proto["libraries"])
    with (rep / "report.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(ROW_KEYS) and len(table) == 4
    assert [r["f_number"] for r in table] == ["1.8", "2.8", "8.0", "all"]
    assert float(table[0]["psnr_input"]) == pytest.approx(rows[1.8]["psnr_input"])
    png = cv2.imread(str(rep / "aperture.png"))
    assert png is not None and png.shape[0] > 100


def test_vabd_full_stops_and_wiener(vabd_shards: Path, tmp_path: Path) -> None:
    report = evaluate(vabd_shards, [], ["input", "wiener"], EvalConfig(split="train", stops=True, limit=4,
                                                                       report_dir=tmp_path / "rep",
                                                                       save_images=tmp_path / "img", progress=False))
    assert report["protocol"]["grouping"] == "full stops (defocuskit.imaging.optics.full_stop)"
    groups = {r["f_number"] for r in report["rows"]}
    assert 2.0 in groups and 1.8 not in groups  # f/1.8 falls in the f/2 stop
    assert sum(r["n"] for r in report["rows"] if r["method"] == "input" and r["f_number"] is not None) == 4
    wiener = [r for r in report["rows"] if r["method"] == "wiener"]
    assert wiener and all(np.isfinite(r["psnr"]) for r in wiener)
    assert "Wiener" in report["protocol"]["methods"]["wiener"]["description"]
    saved = list((tmp_path / "img" / "wiener").glob("*.png"))
    assert len(saved) == 4 and read_image(saved[0]).shape[2] == 3


def test_empty_split_is_a_clear_error(vabd_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"split 'test'.*available: train"):
        evaluate(vabd_shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path, progress=False))


# ----------------------------------------------------------------------------- small real crops


def test_missing_f_numbers_fall_back_to_one_row(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "shards", "test", _crop_pairs())
    report = evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False))
    assert [(r["method"], r["f_number"], r["n"]) for r in report["rows"]] == [("input", None, 3)]
    assert any("no sample has an f_number" in n for n in report["notes"])
    assert any("aperture.png not written" in n for n in report["notes"])
    assert not (tmp_path / "rep" / "aperture.png").exists()


def test_mismatched_pair_is_a_reported_skip(tmp_path: Path) -> None:
    pairs = _crop_pairs()
    pairs[1]["blur"] = pairs[1]["blur"][:40]
    for p, f in zip(pairs, (1.8, 2.8, 2.8)):
        p["meta"]["f_number"] = f
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    report = evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False))
    assert report["skipped"] == [{"key": "s1", "method": None, "reason": "blur is 64x40, sharp is 64x48 (width x height)"}]
    assert {r["f_number"]: r["n"] for r in report["rows"]} == {1.8: 1, 2.8: 1, None: 2}
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["skipped"][0]["key"] == "s1"


@pytest.mark.parametrize("stops, groups", [
    (False, {0.7: 1, 0.95: 1, 1.0: 1, 45.0: 1, 64.0: 1, None: 5}),
    (True, {0.7: 1, 1.0: 2, 45.0: 1, 64.0: 1, None: 5}),
])
def test_f_numbers_below_f1_and_beyond_f32_are_rows_of_their_own(stops: bool, groups: dict) -> None:
    # a shard may record f/0.7 to f/64: f/0.95 was reported as f/0.9, and with --stops f/0.7 was f/1, f/64 f/32
    rng = np.random.default_rng(0)
    pairs = [{"key": f"s{i}", "sharp": (sharp := (rng.random((12, 12, 3)) * 255).astype(np.uint8)),
              "blur": np.clip(sharp.astype(np.int16) + 3, 0, 255).astype(np.uint8), "coc": None,
              "meta": {"source": "x", "f_number": f}} for i, f in enumerate((0.7, 0.95, 1.0, 45.0, 64.0))]
    result = evaluate_samples(pairs, {"input": _baseline("input")}, stops=stops, progress=False)
    assert {r["f_number"]: r["n"] for r in result["rows"]} == groups


def test_wiener_without_f_number_or_coc_is_skipped_per_method(tmp_path: Path) -> None:
    pairs = _crop_pairs(2)
    pairs[0]["meta"]["f_number"] = 2.8
    result = evaluate_samples(pairs, {"wiener": _wiener()}, progress=False)
    assert [s["key"] for s in result["skipped"]] == ["s1"] and result["skipped"][0]["method"] == "wiener"
    assert [r["n"] for r in result["rows"]] == [1, 1]


def _wiener():
    return _baseline("wiener")


def _baseline(name: str):
    from defocuskit.eval.runners import _baseline_runner

    return _baseline_runner(name)[0]


def test_align_registers_before_scoring() -> None:
    sharp = read_image(VABD / "train" / "input" / "0002.JPG")[300:428, 500:660]
    full = read_image(VABD / "train" / "input" / "0002.JPG")
    shifted = full[303:431, 502:662]  # the same view, moved by (3, 2) pixels
    sample = {"key": "shift", "sharp": sharp, "blur": shifted, "coc": None, "meta": {"f_number": 2.8}}
    plain = evaluate_samples([sample], {"input": lambda b, s: b}, progress=False)
    aligned = evaluate_samples([sample], {"input": lambda b, s: b}, scoring=Scoring(align=True), progress=False)
    assert aligned["rows"][0]["psnr"] > plain["rows"][0]["psnr"] + 5.0


@pytest.mark.parametrize("side", [64, 128, 256])
def test_align_leaves_a_registered_pair_as_produced(side: int) -> None:
    """An output already on the reference's grid scores as without --align: a sub-pixel fit would only interpolate
    it (ECC found warps that cost 0.02-3.4 dB on these crops, or none at all, skipping the pair)."""
    full = read_image(FIXTURES / "EBB" / "test" / "target" / "4545.jpg").astype(np.float64) / 255.0
    scale = side / max(full.shape[:2])
    sharp = cv2.resize(full, (round(full.shape[1] * scale), round(full.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    sharp = np.round(sharp * 255.0).astype(np.uint8)
    blur = np.round(cv2.GaussianBlur(sharp / 255.0, (0, 0), 1.0) * 255.0).astype(np.uint8)
    sample = {"key": "on-grid", "sharp": sharp, "blur": blur, "coc": None, "meta": {"f_number": 1.8}}
    plain = evaluate_samples([sample], {"input": lambda b, s: b}, progress=False)
    aligned = evaluate_samples([sample], {"input": lambda b, s: b}, scoring=Scoring(align=True), progress=False)
    assert not aligned["skipped"] and aligned["rows"][0]["psnr"] == plain["rows"][0]["psnr"]


def test_align_names_samples_it_found_no_registration_for() -> None:
    """Where ECC finds no fit for a sample's input (here a flat one), the input and every output are scored as
    produced and the report's notes name the sample (the warp is the sample's, not each output's)."""
    sharp = read_image(VABD / "train" / "input" / "0002.JPG")[300:428, 500:660]
    sample = {"key": "flat", "sharp": sharp, "blur": np.full_like(sharp, 128), "coc": None, "meta": {"f_number": 2.8}}
    methods = {"input": lambda b, s: b, "sharp": lambda b, s: s["sharp"].astype(np.float64) / 255.0}
    result = evaluate_samples([sample], methods, scoring=Scoring(align=True), progress=False)
    plain = evaluate_samples([sample], methods, progress=False)
    assert not result["skipped"] and [r["psnr"] for r in result["rows"]] == [r["psnr"] for r in plain["rows"]]
    assert [n for n in result["notes"] if n.startswith("scored as produced, no registration found: flat: no fit")]


def test_an_aligned_report_says_so_in_its_table_and_plot_title(tmp_path: Path) -> None:
    """--align changes the scores (+0.3 to +0.4 dB on some VABD f/1.8 crops); the table and aperture.png named the
    protocol and the detail band but not the alignment, so aligned scores were shown as the plain ones."""
    from rich.console import Console

    from defocuskit.eval.plots import aperture_title

    pairs = _crop_pairs(2)
    for p in pairs:
        p["meta"]["f_number"] = 2.8
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    console = Console(record=True, width=200)
    report = evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False,
                                                         align=True), console=console)
    assert report["protocol"]["align"] == "ecc"
    assert report["protocol"]["alignment"].startswith("one warp per sample, fitted once from the blurred input")
    assert "defocuskit eval: split 'test', aligned to the reference (ecc)" in console.export_text()
    assert aperture_title(report).endswith(" · aligned (ecc)")
    plain = evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "plain", progress=False))
    assert plain["protocol"]["align"] is None and "aligned" not in aperture_title(plain)


def test_identity_output_scores_inputs_exactly_16bit() -> None:
    rng = np.random.default_rng(0)
    pairs = _crop_pairs(2)
    for p in pairs:  # 16-bit versions with low bits that an 8-bit path would lose
        p["sharp"] = (p["sharp"].astype(np.uint16) << 8) + rng.integers(0, 256, p["sharp"].shape, dtype=np.uint16)
        p["blur"] = (p["blur"].astype(np.uint16) << 8) + rng.integers(0, 256, p["blur"].shape, dtype=np.uint16)
        p["meta"]["f_number"] = 1.8
    result = evaluate_samples(pairs, {"copy": lambda b, s: b.copy(), "sharp": lambda b, s: s["sharp"] / 65535.0},
                              progress=False)
    rows = {(r["method"], r["f_number"]): r for r in result["rows"]}
    assert rows[("copy", 1.8)]["psnr"] == pytest.approx(rows[("copy", 1.8)]["psnr_input"], abs=1e-9)
    assert rows[("sharp", 1.8)]["psnr"] == 100.0 and rows[("sharp", 1.8)]["ssim"] == pytest.approx(1.0)
    assert result["bit_depth"] == {"vabd": [16]}
    ref = np.mean([10 * np.log10(1 / np.mean((p["blur"] / 65535.0 - p["sharp"] / 65535.0) ** 2)) for p in pairs])
    assert rows[("copy", 1.8)]["psnr_input"] == pytest.approx(ref, abs=1e-6)


def test_checkpoints_side_by_side_and_bad_checkpoint(tmp_path: Path) -> None:
    pairs = _crop_pairs()
    for p in pairs:
        p["meta"]["f_number"] = 4.0
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    ckpt = export_identity_nafnet(tmp_path / "runs" / "naf" / "model.safetensors")
    report = evaluate(shards, [ckpt], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep",
                                                            progress=False, tiling=TilingOptions(overlap=8)))
    rows = {(r["method"], r["f_number"]): r for r in report["rows"]}
    assert ("naf", 4.0) in rows and ("input", 4.0) in rows
    assert rows[("naf", 4.0)]["psnr"] == pytest.approx(rows[("input", 4.0)]["psnr"], abs=1e-9)
    assert report["protocol"]["methods"]["naf"]["method"] == "nafnet"
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(EvalError, match="broken.safetensors"):
        evaluate(shards, [tmp_path / "broken.safetensors"], [], EvalConfig(split="test", report_dir=tmp_path / "r2",
                                                                           progress=False))
    with pytest.raises(EvalError, match="no 'steps'"):
        evaluate(shards, [ckpt], [], EvalConfig(split="test", steps=4, report_dir=tmp_path / "r2", progress=False,
                                                tiling=TilingOptions(overlap=8)))
    with pytest.raises(EvalError, match="nothing to evaluate"):
        evaluate(shards, [], [], EvalConfig(split="test", report_dir=tmp_path / "r2", progress=False))


def test_a_training_checkpoint_or_a_run_folder_is_named_as_deblur_names_it(tmp_path: Path) -> None:
    import re

    import torch
    from safetensors.torch import save_file

    from defocuskit.inference.files import deblur_files
    from defocuskit.io.images import write_image

    pairs = _crop_pairs(1)
    pairs[0]["meta"]["f_number"] = 4.0
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    run = tmp_path / "run"
    export_identity_nafnet(run / "model.safetensors")
    step = run / "checkpoints" / "step-5" / "model.safetensors"  # a training checkpoint's weights: no model metadata
    step.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(step))
    write_image(tmp_path / "a.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError) as deblur_said:
        deblur_files([tmp_path / "a.png"], step, tmp_path / "out", progress=False)
    for given, said in ((step, str(deblur_said.value)), (run, r"run is a folder; give .*run/model\.safetensors")):
        with pytest.raises(EvalError) as caught:
            evaluate(shards, [given], [], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False))
        message = str(caught.value)
        assert "\n" not in message and "recipe'" not in message and "os error" not in message, message
        if given == step:
            assert message == said
        else:
            assert re.search(said, message), message
    assert "no defocuskit metadata" in str(deblur_said.value)


def test_cli_eval_defaults_and_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    pairs = _crop_pairs(2)
    for p, f in zip(pairs, (2.8, 8.0)):
        p["meta"]["f_number"] = f
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--shards", str(shards), "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "input and wiener" in res.output
    methods = {r["method"] for r in json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]}
    assert methods == {"input", "wiener"}
    res = runner.invoke(app, ["eval", "--shards", str(shards), "--split", "val", "--baseline", "input",
                              "--report", str(tmp_path / "rep2")])
    assert res.exit_code == 2 and "split 'val'" in res.output
    res = runner.invoke(app, ["eval", "--shards", str(shards), "--baseline", "median", "--report", str(tmp_path / "r3")])
    assert res.exit_code == 2 and "median" in res.output


def test_lpips_column_with_weights_and_nan_output_skipped(tmp_path: Path, monkeypatch) -> None:
    import torch
    from safetensors.torch import save_file

    from defocuskit.eval.lpips import ENV_VAR, LPIPSAlex

    torch.manual_seed(0)
    net = LPIPSAlex()
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if k not in ("shift", "scale")},
              tmp_path / "lpips.safetensors")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "lpips.safetensors"))
    pairs = _crop_pairs(2)
    for p in pairs:
        p["meta"]["f_number"] = 2.8
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    report = evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False))
    row = report["rows"][0]
    assert row["lpips"] is not None and row["lpips"] == pytest.approx(row["lpips_input"])
    assert row["lpips_gain"] == pytest.approx(0.0, abs=1e-7) and row["lpips_gain_std"] == pytest.approx(0.0, abs=1e-7)
    csv_head = (tmp_path / "rep" / "report.csv").read_text().splitlines()[0].split(",")
    assert {"lpips_gain", "lpips_gain_std"} <= set(csv_head)  # every metric's gain, as the README says
    assert report["protocol"]["lpips"].startswith("LPIPS")
    result = evaluate_samples(pairs, {"bad": lambda b, s: b * np.nan}, progress=False)
    assert [s["reason"] for s in result["skipped"]] == ["output has non-finite values (NaN or inf)"] * 2
    assert result["rows"] == []


def test_every_pair_skipped_is_an_error_not_an_empty_report(tmp_path: Path, monkeypatch) -> None:
    """A method that scored none of the pairs (here: LPIPS on images under its 31 px, a traceback before, then every
    pair a skip with exit 0 and an empty report) stops the evaluation naming the most common reason; one that scored
    some keeps its report with the skips listed (test_mismatched_pair_is_a_reported_skip)."""
    import torch
    from safetensors.torch import save_file

    from defocuskit.eval.config import EvalError
    from defocuskit.eval.lpips import ENV_VAR, LPIPSAlex, lpips_distance

    torch.manual_seed(0)
    net = LPIPSAlex()
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if k not in ("shift", "scale")},
              tmp_path / "lpips.safetensors")
    small = np.zeros((30, 40, 3), np.float32)
    with pytest.raises(ValueError, match=r"LPIPS-alex needs images of at least 31 px a side .* got 40x30"):
        lpips_distance(net, small, small)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "lpips.safetensors"))
    shards = _write_shards(tmp_path / "shards", "test", _crop_pairs(2, size=(24, 32)))
    with pytest.raises(EvalError, match=r"^input: none of the 2 pairs of split 'test' of .* was scored \(most common "
                                        r"reason: blurred input: LPIPS-alex needs images of at least 31 px a side"):
        evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=tmp_path / "rep", progress=False))
    assert not (tmp_path / "rep" / "report.json").exists()


def test_cli_eval_refuses_a_model_with_nan_weights_before_scoring(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import defocuskit.eval.evaluate as evaluate_module
    from defocuskit.cli.app import app

    flat = np.full((32, 32, 3), 100, np.uint8)
    shards = _write_shards(tmp_path / "shards", "test", [{"key": "k0", "sharp": flat, "blur": flat, "coc": None,
                                                          "meta": {"source": "t", "f_number": 4.0}}])
    good = export_identity_nafnet(tmp_path / "runs" / "good" / "model.safetensors")
    bad = export_identity_nafnet(tmp_path / "runs" / "bad" / "model.safetensors", poison="intro.bias")

    def no_scoring(*args, **kwargs):
        raise AssertionError("samples scored despite a broken model")

    monkeypatch.setattr(evaluate_module, "evaluate_samples", no_scoring)
    res = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--checkpoint", str(good), "--checkpoint", str(bad),
                                   "--baseline", "input", "--report", str(tmp_path / "rep")])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)  # a clean error, no traceback
    assert str(bad) in res.output and "'intro.bias' holds 3 NaN/inf values of 8" in res.output
    assert not (tmp_path / "rep" / "report.json").exists()


def test_a_second_eval_into_one_report_folder_stops_at_once_naming_the_first(tmp_path: Path) -> None:
    import subprocess
    import sys

    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    pairs = _crop_pairs(2)
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    report = tmp_path / "rep"
    script = ("import sys, time; from defocuskit.io import locks\n"
              "with locks.hold(sys.argv[1], 'eval', 'busy'):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(report / ".eval.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--baseline", "input", "--report", str(report)])
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code != 0 and "another evaluation is writing it" in res.output and f"pid {holder.pid} " in res.output
    assert not (report / "report.json").exists()
    res = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--baseline", "input", "--report", str(report)])
    assert res.exit_code == 0 and (report / "report.json").exists(), res.output


def test_a_report_folder_holding_files_eval_did_not_write_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    shards = _write_shards(tmp_path / "shards", "test", _crop_pairs(1))
    report = tmp_path / "my-results"
    report.mkdir()
    (report / "report.csv").write_text("my own numbers\n")
    args = ["eval", "--shards", str(shards), "--baseline", "input", "--report", str(report)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "report.csv: exists and was not written by an earlier evaluation" in res.output
    assert (report / "report.csv").read_text() == "my own numbers\n"
    ok = tmp_path / "rep"
    for _ in range(2):  # a folder eval wrote is its own: a rerun replaces its report
        res = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--baseline", "input", "--report", str(ok)])
        assert res.exit_code == 0, res.output


def test_a_row_pooling_pairs_against_different_references_is_named() -> None:
    # eval groups by the shot's f-number only: f/2.8 against f/8 and against f/16 fell into one row, unsaid
    rng = np.random.default_rng(1)
    refs = (8.0, 16.0, 16.0, None, 16.0, 16.0)
    pairs = [{"key": f"s{i}", "sharp": (sharp := (rng.random((12, 12, 3)) * 255).astype(np.uint8)),
              "blur": np.clip(sharp.astype(np.int16) + 3, 0, 255).astype(np.uint8), "coc": None,
              "meta": {"source": "x", "f_number": f, "ref_f_number": r}}
             for i, (f, r) in enumerate(zip((2.8, 2.8, 2.8, 2.8, 4.0, 4.0), refs))]
    result = evaluate_samples(pairs, {"input": _baseline("input"), "wiener": _wiener()}, progress=False)
    mixed = [n for n in result["notes"] if "different references" in n]
    assert mixed == ["f/2.8 pools pairs against different references (f/8: 1, f/16: 2, none recorded: 1): its gain "
                     "mixes easier and harder pairs; each image's ref_f_number_recorded is in report.json"]
    assert [im["ref_f_number_recorded"] for im in result["images"] if im["method"] == "input"] == list(refs)
    assert not [n for n in evaluate_samples(pairs[4:], {"input": _baseline("input")}, progress=False)["notes"]
                if "references" in n]
