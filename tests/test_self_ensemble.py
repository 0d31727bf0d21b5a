"""The geometric self-ensemble (inference/ensemble.py; `deblur --ensemble`, `eval --ensemble`, `deblur(ensemble=)`):
the image restored under flips (and transposes), each output turned back, averaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.evaluate import evaluate
from defocuskit.eval.metrics import to_unit
from defocuskit.inference.ensemble import apply, check_ensemble, self_ensemble, transforms, undo
from defocuskit.io.images import read_image, write_image
from tests.test_focus_gate import save_random_nafnet


@pytest.mark.parametrize("n", [1, 4, 8])
def test_each_transform_is_undone_and_the_transforms_differ(n: int) -> None:
    x = np.random.default_rng(0).random((5, 7, 3))
    members = transforms(n)
    assert members[0] == (False, False, False) and len(members) == n
    for t in members:
        np.testing.assert_array_equal(undo(apply(x, t), t), x)
    assert len({apply(x, t).tobytes() + bytes(apply(x, t).shape) for t in members}) == n
    if n == 4:
        assert all(apply(x, t).shape == x.shape for t in members)  # flips keep the shape


@pytest.mark.parametrize("n", [0, 2, 3, 16, -8, True])
def test_a_size_other_than_1_4_8_is_refused_with_its_value(n: int) -> None:
    with pytest.raises(ValueError, match=f"ensemble {n!r}: expected one of 1, 4, 8"):
        check_ensemble(n)


def test_the_mean_of_the_outputs_turned_back_with_the_map_moved_alike() -> None:
    rng = np.random.default_rng(1)
    image, coc = rng.random((6, 9, 3)).astype(np.float32), rng.random((6, 9)).astype(np.float32)
    seeds: list[int] = []

    def restore(x: np.ndarray, c: np.ndarray | None, seed: int) -> np.ndarray:
        seeds.append(seed)
        assert c is not None and c.shape == x.shape[:2]
        ramp = np.arange(x.shape[1], dtype=np.float32)[None, :, None]  # not equivariant: depends on the orientation
        return x * c[:, :, None] + ramp

    out = self_ensemble(restore, image, coc, 8, seed=10)
    assert seeds == list(range(10, 18))
    expected = np.mean([undo(apply(image, t) * apply(coc, t)[:, :, None]
                             + np.arange(apply(image, t).shape[1], dtype=np.float32)[None, :, None], t)
                        for t in transforms(8)], axis=0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # the product with the map is equivariant and comes back exactly; the ramp along the width (0..8) averages to 4
    # over the flips, and along the height (0..5, 2.5) over the transposes
    np.testing.assert_allclose(out, image * coc[:, :, None] + 3.25, rtol=1e-5)
    np.testing.assert_allclose(self_ensemble(restore, image, coc, 4), image * coc[:, :, None] + 4.0, rtol=1e-5)
    np.testing.assert_array_equal(self_ensemble(restore, image, coc, 1, seed=3), restore(image, coc, 3))
    assert seeds[-2:] == [3, 3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ensemble")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(root / "shards"), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0, 8.0)), progress=False)
    save_random_nafnet(root / "naf" / "model.safetensors")
    return root


def test_the_api_averages_the_model_over_the_transforms(setup: Path) -> None:
    import defocuskit

    model = defocuskit.load(setup / "naf" / "model.safetensors", device="cpu")
    image = np.random.default_rng(2).random((40, 56, 3)).astype(np.float32)
    plain = model.deblur(image)
    for n in (4, 8):
        manual = np.mean([undo(model.deblur(np.ascontiguousarray(apply(image, t))), t) for t in transforms(n)], axis=0)
        np.testing.assert_allclose(model.deblur(image, ensemble=n), manual, atol=1e-5)
    assert np.abs(model.deblur(image, ensemble=8) - plain).mean() > 1e-3  # a random network is not equivariant
    np.testing.assert_array_equal(model.deblur(image, ensemble=1), plain)
    with pytest.raises(ValueError, match="ensemble 3"):
        model.deblur(image, ensemble=3)


def test_eval_ensembles_the_labelled_checkpoint_and_says_so(setup: Path, tmp_path: Path) -> None:
    import defocuskit

    model = setup / "naf" / "model.safetensors"
    config = EvalConfig(ensembles=["naf#2:8"], save_images=tmp_path / "images", report_dir=tmp_path / "report",
                        progress=False, limit=2)
    evaluate(setup / "shards", [model, model], [], config)
    methods = json.loads((tmp_path / "report" / "report.json").read_text())["protocol"]["methods"]
    assert methods["naf"]["ensemble"] is None and methods["naf#2"]["ensemble"]["size"] == 8
    api = defocuskit.load(model, device="cpu")
    sample = next(s for s in iter_samples(setup / "shards", "test") if s.get("blur") is not None)
    blur = to_unit(sample["blur"]).astype(np.float32)
    key = sample["key"].replace("/", "_")
    for label, n in (("naf", 1), ("naf#2", 8)):
        written = to_unit(read_image(tmp_path / "images" / label / f"{key}.png")).astype(np.float32)
        assert np.abs(written - np.clip(api.deblur(blur, ensemble=n), 0, 1)).max() <= 1.5 / 255
    for items, message in ((["3"], "--ensemble 3: ensemble 3: expected one of"), (["x"], "--ensemble x: expected"),
                           (["other:8"], "no checkpoint is labelled 'other'")):
        with pytest.raises(EvalError, match=message):
            evaluate(setup / "shards", [model], [], EvalConfig(ensembles=items, report_dir=tmp_path / "bad"))
    with pytest.raises(EvalError, match="--ensemble is for models"):
        evaluate(setup / "shards", [], ["input"], EvalConfig(ensembles=["8"], report_dir=tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_deblur_and_eval_commands_take_the_option(setup: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import defocuskit
    from defocuskit.cli.app import app

    sample = next(s for s in iter_samples(setup / "shards", "test") if s.get("blur") is not None)
    write_image(tmp_path / "in" / "shot.png", sample["blur"])
    model = str(setup / "naf" / "model.safetensors")
    runner = CliRunner()
    done = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "a"),
                               "--device", "cpu", "--ensemble", "4"])
    assert done.exit_code == 0, done.output
    out = to_unit(read_image(tmp_path / "a" / "shot.png")).astype(np.float32)
    expected = defocuskit.load(model, device="cpu").deblur(to_unit(sample["blur"]).astype(np.float32), ensemble=4)
    assert np.abs(out - np.clip(expected, 0, 1)).max() <= 1.5 / 255
    assert json.loads((tmp_path / "a" / "deblur.json").read_text())["images"][0]["ensemble"] == 4
    bad = runner.invoke(app, ["deblur", str(tmp_path / "in"), "--checkpoint", model, "--out", str(tmp_path / "b"),
                              "--device", "cpu", "--ensemble", "2"])
    assert bad.exit_code == 2 and "ensemble 2: expected one of 1, 4, 8" in bad.output
    assert not (tmp_path / "b").exists()
    scored = runner.invoke(app, ["eval", "--shards", str(setup / "shards"), "--checkpoint", model, "--ensemble", "8",
                                 "--limit", "1", "--device", "cpu", "--report", str(tmp_path / "report")])
    assert scored.exit_code == 0, scored.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["protocol"]["methods"]["naf"]["ensemble"]["size"] == 8
