"""The focus gate (imaging/focus_gate.py, `eval --focus-gate`): a model's change weighed by the CoC map, so what the
map reads as in focus is returned as shot (but for the change's low-pass, kept everywhere unless --gate-smooth 0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.sample import IngestOptions
from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.evaluate import evaluate
from defocuskit.eval.metrics import to_unit
from defocuskit.imaging.focus_gate import focus_gate, gate_weight
from defocuskit.io.images import read_image
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import resolve_recipe


def test_the_gate_keeps_the_shot_in_focus_and_the_output_in_blur() -> None:
    rng = np.random.default_rng(0)
    blur, restored = rng.random((4, 6, 3), np.float32), rng.random((4, 6, 3), np.float32)
    coc = np.array([[0.0, 0.5, 1.0, 2.0, 8.0, -1.0]] * 4, np.float32)  # signed: -1 is 1 px in front of the focus
    out = focus_gate(blur, restored, coc, full_px=2.0, smooth_px=0.0)
    np.testing.assert_array_equal(out[:, 0], blur[:, 0])  # in focus: the shot
    np.testing.assert_allclose(out[:, 3:5], restored[:, 3:5], atol=1e-7)  # at or beyond full_px: the model's output
    np.testing.assert_allclose(out[:, 1], blur[:, 1] + 0.25 * (restored[:, 1] - blur[:, 1]), atol=1e-6)
    np.testing.assert_allclose(out[:, 5], blur[:, 5] + 0.5 * (restored[:, 5] - blur[:, 5]), atol=1e-6)  # |CoC|
    np.testing.assert_allclose(gate_weight(coc, 4.0)[0], [0, 0.125, 0.25, 0.5, 1, 0.25])


def test_by_default_the_gate_keeps_the_changes_low_pass_everywhere_and_gates_its_detail() -> None:
    """A model that lifts the tone by 0.05 (the low-pass of its change) and adds a fine texture (the detail): where
    the map reads focus the tone change stays and the texture goes; where it reads blur the output is the model's."""
    rng = np.random.default_rng(2)
    blur = rng.uniform(0.2, 0.7, (48, 64, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:48, 0:64]
    texture = (0.04 * (((yy + xx) % 2) * 2 - 1))[..., None].astype(np.float32)  # a 1 px checkerboard: all detail
    restored = blur + np.float32(0.05) + texture
    coc = np.zeros((48, 64), np.float32)
    coc[:, 32:] = 6.0
    out = focus_gate(blur, restored, coc, full_px=3.0)  # default smooth_px
    np.testing.assert_allclose(out[:, :32], blur[:, :32] + 0.05, atol=2e-3)  # in focus: the shot, its tone lifted
    np.testing.assert_allclose(out[:, 32:], restored[:, 32:], atol=2e-3)  # out of focus: the model's output
    whole = focus_gate(blur, restored, coc, full_px=3.0, smooth_px=0.0)
    np.testing.assert_array_equal(whole[:, :32], blur[:, :32])  # --gate-smooth 0: the former, whole-change gate
    with pytest.raises(ValueError, match="smooth_px"):
        focus_gate(blur, restored, coc, 3.0, smooth_px=-1.0)


@pytest.mark.parametrize("full_px", [0.0, -1.0, float("nan"), float("inf")])
def test_the_gate_refuses_a_full_weight_that_is_not_a_positive_number(full_px: float) -> None:
    with pytest.raises(ValueError, match=r"--focus-gate\): the CoC at full weight must be a positive number"):
        gate_weight(np.zeros((2, 2), np.float32), full_px)


def test_the_gate_refuses_a_map_of_another_size() -> None:
    with pytest.raises(ValueError, match="does not match the image 3x2"):
        focus_gate(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3), np.float32), np.zeros((3, 2), np.float32), 1.0)


def save_random_nafnet(path: Path, own_gate: float | None = None) -> None:
    """A tiny NAFNet with random weights (not the identity: every pixel comes out of the network), exported;
    `own_gate`: its recipe's inference.focus_gate."""
    naf = resolve_recipe({"method": "nafnet", "data": {"image_size": 32}, "inference": {"focus_gate": own_gate},
                          "model": {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}})
    torch.manual_seed(0)
    net = get_method("nafnet").build(naf.model, naf.objective, False)
    for p in net.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.05)
    save_model(path, net.state_dict(), "nafnet", recipe_to_dict(naf))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic shards and a tiny random NAFNet (not the identity: it changes every pixel)."""
    root = tmp_path_factory.mktemp("gate")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(root / "shards"), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0, 8.0)), progress=False)
    save_random_nafnet(root / "naf" / "model.safetensors")
    save_random_nafnet(root / "own" / "model.safetensors", own_gate=3.0)
    return root


def test_eval_gates_the_labelled_checkpoint_with_the_coc_map_of_each_sample(setup: Path, tmp_path: Path) -> None:
    """The same model twice, the second gated (the whole change, --gate-smooth 0): each gated output is the ungated
    one mixed with the input by the shard's CoC (--coc oracle), pixel by pixel; the report says which model was gated
    and how."""
    model = setup / "naf" / "model.safetensors"
    images = tmp_path / "images"
    config = EvalConfig(coc="oracle", focus_gates=["naf#2:0.5"], save_images=images, report_dir=tmp_path / "report",
                        progress=False, limit=4, gate_smooth=0.0)
    evaluate(setup / "shards", [model, model], [], config)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    methods = report["protocol"]["methods"]
    assert methods["naf"]["focus_gate"] is None
    assert methods["naf#2"]["focus_gate"]["full_px"] == 0.5 and methods["naf#2"]["focus_gate"]["smooth_px"] == 0.0
    checked = n_blurred = 0
    for sample in iter_samples(setup / "shards", "test"):
        if checked == 4:
            break
        key = sample["key"].replace("/", "_")
        blur = to_unit(sample["blur"]).astype(np.float32)
        plain = to_unit(read_image(images / "naf" / f"{key}.png")).astype(np.float32)
        gated = to_unit(read_image(images / "naf#2" / f"{key}.png")).astype(np.float32)
        coc = signed_coc(sample)
        expected = focus_gate(blur, plain, coc, 0.5, smooth_px=0.0)
        assert np.abs(gated - expected).max() <= 1.5 / 255  # both written as 8-bit PNGs
        in_focus, blurred = np.abs(coc) < 0.002, np.abs(coc) >= 0.5
        assert in_focus.any()
        assert np.abs(gated - blur)[in_focus].max() <= 1.5 / 255  # in focus: the shot
        assert np.abs(plain - blur)[in_focus].mean() > 5 / 255  # ... which the ungated model changed
        if blurred.any():  # blurred: the model's output
            assert np.abs(gated - plain)[blurred].max() <= 1.5 / 255
            n_blurred += 1
        checked += 1
    assert checked == 4 and n_blurred >= 2


def test_eval_gates_a_baseline_by_its_name(setup: Path, tmp_path: Path) -> None:
    """prox gated (--focus-gate prox:1) is prox's own output mixed with the input by the CoC map, the low-pass of
    its change kept (the default --gate-smooth)."""
    for run, gates in (("plain", []), ("gated", ["prox:1"])):
        evaluate(setup / "shards", [], ["input", "prox"], EvalConfig(coc="oracle", focus_gates=gates, progress=False,
                                                                     save_images=tmp_path / run, limit=3,
                                                                     report_dir=tmp_path / f"report-{run}"))
    report = json.loads((tmp_path / "report-gated" / "report.json").read_text())
    assert report["protocol"]["methods"]["prox"]["focus_gate"]["full_px"] == 1.0
    assert report["protocol"]["methods"]["prox"]["focus_gate"]["smooth_px"] == 16.0
    changed = 0
    for sample in list(iter_samples(setup / "shards", "test"))[:3]:
        key = sample["key"].replace("/", "_")
        blur = to_unit(sample["blur"]).astype(np.float32)
        plain = to_unit(read_image(tmp_path / "plain" / "prox" / f"{key}.png")).astype(np.float32)
        gated = to_unit(read_image(tmp_path / "gated" / "prox" / f"{key}.png")).astype(np.float32)
        assert np.abs(gated - focus_gate(blur, plain, signed_coc(sample), 1.0)).max() <= 1.5 / 255
        changed += np.abs(gated - plain).max() > 2 / 255
    assert changed >= 1


def test_eval_refuses_a_gate_without_a_map_or_with_a_bad_value(setup: Path, tmp_path: Path) -> None:
    model = setup / "naf" / "model.safetensors"
    with pytest.raises(EvalError, match="--focus-gate needs a CoC map"):
        evaluate(setup / "shards", [model], [], EvalConfig(focus_gates=["2"], report_dir=tmp_path / "r1"))
    with pytest.raises(EvalError, match="--focus-gate abc: expected"):
        evaluate(setup / "shards", [model], [], EvalConfig(coc="edge", focus_gates=["abc"], report_dir=tmp_path / "r2"))
    with pytest.raises(EvalError, match="the input has no change to weigh"):
        evaluate(setup / "shards", [], ["input"], EvalConfig(coc="edge", focus_gates=["input:2"],
                                                             report_dir=tmp_path / "r4"))
    with pytest.raises(EvalError, match="--gate-smooth -1"):
        evaluate(setup / "shards", [model], [], EvalConfig(coc="edge", focus_gates=["2"], gate_smooth=-1.0,
                                                           report_dir=tmp_path / "r5"))
    with pytest.raises(EvalError, match="no checkpoint is labelled 'other'"):
        evaluate(setup / "shards", [model], [], EvalConfig(coc="edge", focus_gates=["other:2"],
                                                           report_dir=tmp_path / "r3"))


def test_the_api_gates_with_a_given_map_or_the_edge_estimate(setup: Path) -> None:
    import defocuskit
    from defocuskit.imaging.blur_estimate import estimate_coc

    model = defocuskit.load(setup / "naf" / "model.safetensors", device="cpu")
    rng = np.random.default_rng(1)
    image = np.clip(rng.random((40, 56, 3)) * 0.2 + np.linspace(0, 0.7, 56)[None, :, None], 0, 1).astype(np.float32)
    plain = model.deblur(image)
    coc = np.zeros((40, 56), np.float32)
    coc[:, 28:] = 4.0
    gated = model.deblur(image, coc=coc, focus_gate=2.0, gate_smooth=0.0)
    np.testing.assert_allclose(gated[:, :28], image[:, :28], atol=1e-6)  # the map reads focus: the image as given
    np.testing.assert_allclose(gated[:, 28:], plain[:, 28:], atol=1e-6)  # the map reads blur: the model's output
    detail = model.deblur(image, coc=coc, focus_gate=2.0)  # default: the change's low-pass kept everywhere
    np.testing.assert_allclose(detail, focus_gate(image, plain, coc, 2.0), atol=1e-6)
    assert np.abs(detail[:, :28] - image[:, :28]).max() > 1e-3
    edge = model.deblur(image, coc="edge", focus_gate=3.0)
    np.testing.assert_allclose(edge, focus_gate(image, plain, estimate_coc(image), 3.0), atol=1e-6)
    with pytest.raises(ValueError, match="focus_gate= needs a circle-of-confusion map"):
        model.deblur(image, focus_gate=2.0)
    with pytest.raises(ValueError, match=r"--focus-gate\): the CoC at full weight must be a positive number"):
        model.deblur(image, coc=coc, focus_gate=-1.0)
    np.testing.assert_array_equal(model.deblur(image, focus_gate=0.0), plain)  # 0: no gate
    with pytest.raises(ValueError, match="smooth_px"):
        model.deblur(image, coc=coc, focus_gate=2.0, gate_smooth=float("nan"))
    with pytest.raises(ValueError, match="only named source is"):
        model.deblur(image, coc="edges", focus_gate=2.0)


def test_deblur_command_gates_with_the_edge_estimate_and_records_it(setup: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.imaging.blur_estimate import estimate_coc
    from defocuskit.io.images import write_image

    sample = next(s for s in iter_samples(setup / "shards", "test") if s.get("blur") is not None)
    write_image(tmp_path / "in" / "shot.png", sample["blur"])
    model = str(setup / "naf" / "model.safetensors")
    runner = CliRunner()
    plain = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "a"),
                                "--device", "cpu"])
    gated = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "b"),
                                "--device", "cpu", "--coc", "edge", "--focus-gate", "3"])
    assert plain.exit_code == 0 and gated.exit_code == 0, gated.output
    image = to_unit(sample["blur"]).astype(np.float32)
    out_a = to_unit(read_image(tmp_path / "a" / "shot.png")).astype(np.float32)
    out_b = to_unit(read_image(tmp_path / "b" / "shot.png")).astype(np.float32)
    assert np.abs(out_b - focus_gate(image, out_a, estimate_coc(image), 3.0)).max() <= 1.5 / 255
    assert np.abs(out_b - out_a).max() > 5 / 255
    record = json.loads((tmp_path / "b" / "deblur.json").read_text())["images"][0]
    assert record["focus_gate"] == 3.0 and record["gate_smooth"] == 16.0 and record["coc"]["source"] == "edge"
    whole = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "d"),
                                "--device", "cpu", "--coc", "edge", "--focus-gate", "3", "--gate-smooth", "0"])
    assert whole.exit_code == 0, whole.output
    out_d = to_unit(read_image(tmp_path / "d" / "shot.png")).astype(np.float32)
    assert np.abs(out_d - focus_gate(image, out_a, estimate_coc(image), 3.0, smooth_px=0.0)).max() <= 1.5 / 255
    missing = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "c"),
                                  "--device", "cpu", "--focus-gate", "3"])
    assert missing.exit_code == 2 and "--focus-gate needs a CoC map" in missing.output
    assert not (tmp_path / "c").exists()


def test_a_models_own_gate_is_the_default_of_the_api_eval_and_deblur(setup: Path, tmp_path: Path) -> None:
    """A recipe's inference.focus_gate (nafnet-cpu's) gates its model by default: by the edge estimate where no map
    is given, by the map given otherwise; 0 turns it off; the reports say where the gate came from."""
    from typer.testing import CliRunner

    import defocuskit
    from defocuskit.cli.app import app
    from defocuskit.imaging.blur_estimate import estimate_coc
    from defocuskit.io.images import write_image

    path = setup / "own" / "model.safetensors"
    model = defocuskit.load(path, device="cpu")
    assert model.focus_gate == 3.0 and defocuskit.load(setup / "naf" / "model.safetensors").focus_gate is None
    sample = next(s for s in iter_samples(setup / "shards", "test") if s.get("blur") is not None)
    image = to_unit(sample["blur"]).astype(np.float32)
    raw = model.deblur(image, focus_gate=0)
    assert np.abs(raw - image).max() > 5 / 255
    np.testing.assert_allclose(model.deblur(image), focus_gate(image, raw, estimate_coc(image), 3.0), atol=1e-6)
    coc = np.full(image.shape[:2], 1.5, np.float32)
    np.testing.assert_allclose(model.deblur(image, coc=coc), focus_gate(image, raw, coc, 3.0), atol=1e-6)
    np.testing.assert_allclose(model.deblur(image, coc=coc, focus_gate=1.0), focus_gate(image, raw, coc, 1.0),
                               atol=1e-6)

    images = tmp_path / "images"
    evaluate(setup / "shards", [path, path], [], EvalConfig(focus_gates=["own#2:0"], save_images=images, limit=2,
                                                            report_dir=tmp_path / "report", progress=False))
    methods = json.loads((tmp_path / "report" / "report.json").read_text())["protocol"]["methods"]
    assert methods["own"]["focus_gate"]["full_px"] == 3.0 and methods["own"]["focus_gate"]["from"] == "recipe"
    assert methods["own"]["coc"]["source"] == "edge" and methods["own#2"]["focus_gate"] is None
    key = sample["key"].replace("/", "_")
    own = to_unit(read_image(images / "own" / f"{key}.png")).astype(np.float32)
    plain = to_unit(read_image(images / "own#2" / f"{key}.png")).astype(np.float32)
    assert np.abs(own - focus_gate(image, plain, estimate_coc(image), 3.0)).max() <= 1.5 / 255
    assert np.abs(own - plain).max() > 5 / 255

    write_image(tmp_path / "in" / "shot.png", sample["blur"])
    runner = CliRunner()
    for out, extra in (("a", []), ("b", ["--focus-gate", "0"])):
        result = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", str(path), "--out",
                                     str(tmp_path / out), "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
    out_a = to_unit(read_image(tmp_path / "a" / "shot.png")).astype(np.float32)
    out_b = to_unit(read_image(tmp_path / "b" / "shot.png")).astype(np.float32)
    assert np.abs(out_a - focus_gate(image, out_b, estimate_coc(image), 3.0)).max() <= 1.5 / 255
    assert np.abs(out_b - raw).max() <= 1.5 / 255
    records = [json.loads((tmp_path / out / "deblur.json").read_text())["images"][0] for out in "ab"]
    assert records[0]["focus_gate"] == 3.0 and records[0]["focus_gate_from"] == "recipe"
    assert records[0]["coc"]["source"] == "edge"
    assert records[1]["focus_gate"] is None and records[1]["coc"] is None


def test_a_gray_image_is_gated_by_the_same_edge_map_in_the_api_as_in_deblur(setup: Path, tmp_path: Path) -> None:
    """The edge estimate reads a gray image as RGB in the API as `deblur` and eval do (the API once fed it the gray
    plane, whose map differs: outputs 3-21 levels apart)."""
    from typer.testing import CliRunner

    import defocuskit
    from defocuskit.cli.app import app
    from defocuskit.io.images import write_image

    sample = next(s for s in iter_samples(setup / "shards", "test") if s.get("blur") is not None)
    gray = sample["blur"][:, :, 1]
    write_image(tmp_path / "in" / "gray.png", gray)
    model = str(setup / "naf" / "model.safetensors")
    done = CliRunner().invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out",
                                    str(tmp_path / "out"), "--device", "cpu", "--coc", "edge", "--focus-gate", "3"])
    assert done.exit_code == 0, done.output
    written = read_image(tmp_path / "out" / "gray.png")[:, :, 0]  # gray written as gray, read as RGB
    api = defocuskit.load(model, device="cpu").deblur(gray, coc="edge", focus_gate=3)
    assert api.dtype == gray.dtype and api.shape == gray.shape
    assert np.array_equal(api, written)
