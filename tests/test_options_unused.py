"""An option that nothing in the run uses is refused in one line naming it (exit 2, nothing written; a ValueError
from the API), not dropped: `deblur --f-number` where no fnumber map or bounded estimate reads it (deblur.json said
f_number: null), `--gate-smooth` / `gate_smooth=` where no focus gate runs, `eval --stops --no-by-aperture`, eval's
tiling options with baselines alone, and the API's f_number= / coc_bound= beside a map where no bound uses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.io.images import write_image
from tests.test_coc_bound import _map_file
from tests.test_focus_gate import save_random_nafnet

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain NAFNet, one gated by its recipe (3 px), a defocus-map model without a bound, and a photo."""
    root = tmp_path_factory.mktemp("unused")
    save_random_nafnet(root / "plain" / "model.safetensors")
    save_random_nafnet(root / "own" / "model.safetensors", own_gate=3.0)
    photo = root / "in" / "shot.png"
    photo.parent.mkdir()
    write_image(photo, (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8))
    return {"plain": root / "plain" / "model.safetensors", "own": root / "own" / "model.safetensors",
            "free": _map_file(root / "free.safetensors", None), "photo": photo}


def _deblur(files: dict[str, Path], out: Path, model: str, *extra: str):
    return runner.invoke(app, ["deblur", str(files["photo"]), "--checkpoint", str(files[model]), "--out", str(out),
                               "--device", "cpu", *extra])


def test_deblur_refuses_an_f_number_nothing_uses(files, tmp_path: Path) -> None:
    for model, extra in (("plain", []), ("plain", ["--coc", "edge", "--focus-gate", "3"]),  # edge map, no bound
                         ("own", []),  # its own gate's edge map, no bound
                         ("free", [])):  # a defocus-map model without a coc_bound
        result = _deblur(files, tmp_path / "out", model, *extra, "--f-number", "2.8")
        assert result.exit_code == 2, (model, extra, result.output)
        assert "--f-number 2.8: nothing in this run uses it (it gives --coc fnumber its thin-lens CoC" in result.output
        assert not (tmp_path / "out").exists()
    for i, (model, extra, bound) in enumerate((("own", ["--coc", "fnumber"], None),  # these read it
                                               ("own", ["--coc-bound", "0.05"], 0.05),
                                               ("plain", ["--coc", "edge", "--focus-gate", "3", "--coc-bound", "0.05"],
                                                0.05))):
        result = _deblur(files, tmp_path / f"ok{i}", model, *extra, "--f-number", "2.8")
        assert result.exit_code == 0, result.output
        record, = json.loads((tmp_path / f"ok{i}" / "deblur.json").read_text())["images"]
        assert record["f_number"] == 2.8 and record["coc_bound"] == bound


def test_deblur_refuses_gate_smooth_without_a_gate(files, tmp_path: Path) -> None:
    for model, extra in (("plain", []), ("own", ["--focus-gate", "0"])):
        result = _deblur(files, tmp_path / "out", model, *extra, "--gate-smooth", "4")
        assert result.exit_code == 2, result.output
        assert "--gate-smooth 4: the change's low-pass a focus gate keeps, but no focus gate runs here" in result.output
        assert not (tmp_path / "out").exists()
    for smooth, recorded in ((["--gate-smooth", "4"], 4.0), ([], 16.0)):  # the model's own gate uses it
        out = tmp_path / f"ok{recorded:g}"
        assert _deblur(files, out, "own", *smooth).exit_code == 0
        assert json.loads((out / "deblur.json").read_text())["images"][0]["gate_smooth"] == recorded


def test_eval_refuses_options_nothing_uses(files, tmp_path: Path) -> None:
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    shards = tmp_path / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=0, synthetic_size=32,
                                                             synthetic_f_numbers=(2.0,)), progress=False)
    base = ["eval", "--shards", str(shards), "--limit", "1", "--device", "cpu", "--report", str(tmp_path / "r")]
    for extra, said in (
            (["--checkpoint", str(files["plain"]), "--gate-smooth", "4"], "--gate-smooth 4: the change's low-pass"),
            (["--checkpoint", str(files["own"]), "--focus-gate", "0", "--gate-smooth", "4"], "--gate-smooth 4:"),
            (["--baseline", "wiener", "--gate-smooth", "4"], "but no method here is gated"),
            (["--baseline", "input", "--stops", "--no-by-aperture"], "--stops groups the f-number rows"),
            (["--baseline", "input", "--tile", "64"], "--tile 64: how a model runs, and no --checkpoint is given"),
            (["--baseline", "input", "--max-tile-pixels", "4096"], "--max-tile-pixels 4096: how a model runs")):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert said in result.output
        assert not (tmp_path / "r").exists()
    ok = runner.invoke(app, base + ["--baseline", "wiener", "--coc", "edge", "--focus-gate", "wiener:3",
                                    "--gate-smooth", "4"])  # a gated baseline uses it
    assert ok.exit_code == 0, ok.output
    gate = json.loads((tmp_path / "r" / "report.json").read_text())["protocol"]["methods"]["wiener"]["focus_gate"]
    assert gate["smooth_px"] == 4.0


def test_the_api_refuses_keywords_nothing_uses(files) -> None:
    import defocuskit

    plain, own = (defocuskit.load(files[k], device="cpu") for k in ("plain", "own"))
    free = defocuskit.load(files["free"], device="cpu")
    x = np.random.default_rng(0).random((32, 40, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^gate_smooth=4: the change's low-pass a focus gate keeps, but no focus"):
        plain.deblur(x, gate_smooth=4)
    with pytest.raises(ValueError, match=r"^gate_smooth=4: .* or focus_gate=0\); leave it out$"):
        own.deblur(x, focus_gate=0, gate_smooth=4)
    for coc in ("edge", free):  # no bound K: the f-number bounds nothing
        with pytest.raises(ValueError, match=r"^f_number=2.8: beside coc= it bounds the map by K"):
            plain.deblur(x, coc=coc, focus_gate=3, f_number=2.8)
    with pytest.raises(ValueError, match=r"^coc_bound=0.05: bounds the map at the image's f_number=, and none"):
        plain.deblur(x, coc="edge", focus_gate=3, coc_bound=0.05)
    with pytest.raises(ValueError, match=r"^f_number=2.8: bounds the map by the model's coc_bound, and this"):
        free.coc_map(x, f_number=2.8)
    assert own.deblur(x, gate_smooth=4).shape == x.shape  # its own gate uses it
    assert plain.deblur(x, coc="edge", focus_gate=3, coc_bound=0.05, f_number=2.8).shape == x.shape
