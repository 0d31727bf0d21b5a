"""A CoC source given where nothing uses it is refused, not ignored: `eval --coc` with no method that reads a map
(report.json named the source as if the scores were made with it), and `deblur --coc` of a defocus-map model (which
writes its own map: the option was dropped and deblur.json said coc: null)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestOptions
from defocuskit.io.images import write_image
from tests.test_coc_bound import _map_file
from tests.test_focus_gate import save_random_nafnet

runner = CliRunner()


def test_eval_refuses_a_coc_source_no_method_uses(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=0, synthetic_size=32,
                                                             synthetic_f_numbers=(2.0,)), progress=False)
    model = tmp_path / "naf" / "model.safetensors"
    save_random_nafnet(model)
    base = ["eval", "--shards", str(shards), "--limit", "1", "--device", "cpu", "--coc", "edge"]
    for extra in (["--checkpoint", str(model)], ["--baseline", "input"]):
        result = runner.invoke(app, base + extra + ["--report", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        assert "--coc edge: no method given uses a CoC map" in result.output
        assert not (tmp_path / "r" / "report.json").exists()
    for extra in (["--checkpoint", str(model), "--focus-gate", "3"], ["--baseline", "wiener"]):  # these read it
        result = runner.invoke(app, base + extra + ["--report", str(tmp_path / "ok")])
        assert result.exit_code == 0, result.output


def test_deblur_refuses_coc_for_a_defocus_map_model(tmp_path: Path) -> None:
    file = _map_file(tmp_path / "map.safetensors", 0.01)
    photo = tmp_path / "in" / "shot.png"
    photo.parent.mkdir()
    write_image(photo, (np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8))
    args = ["deblur", str(photo), "--checkpoint", str(file), "--out", str(tmp_path / "out"), "--device", "cpu"]
    for extra, named in ((["--coc", "edge"], "--coc"), (["--coc", "fnumber", "--f-number", "2"], "--coc"),
                         (["--coc", "map", "--coc-model", str(file)], "--coc")):
        result = runner.invoke(app, args + extra)
        assert result.exit_code == 2, result.output
        assert f"{named}: {file} is a 'defocus-map' model, which writes its own CoC map" in result.output
        assert not (tmp_path / "out").exists()
    assert runner.invoke(app, args + ["--f-number", "2"]).exit_code == 0  # its own map, bounded at f/2
