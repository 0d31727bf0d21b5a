"""`--coc-bound K` bounds an estimated map at its image's f-number: where no input of the run has one, K cannot act,
and the run said so nowhere (deblur.json's coc_bound null, report.json's bound K, exit 0). Given K where no input has
an f-number is refused before anything is written; inputs without one among others are named in a note; a map
model's own K (its recipe's inference.coc_bound) stays silent."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.shards import encode_members
from defocuskit.io.images import write_image
from tests.test_coc_bound import _blurred_texture, _map_file
from tests.test_focus_gate import save_random_nafnet
from tests.test_sensor_width import _jpeg

runner = CliRunner()


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, (np.clip(_blurred_texture(32), 0, 1) * 255).astype(np.uint8))  # a PNG: no EXIF FNumber
    return path


def test_deblur_refuses_a_bound_no_input_has_an_f_number_for(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "in" / "shot.png")
    own = _map_file(tmp_path / "own.safetensors", 0.01)
    naf = tmp_path / "naf" / "model.safetensors"
    save_random_nafnet(naf)
    for model, extra in ((own, []), (naf, ["--coc", "edge", "--focus-gate", "3"])):
        out = tmp_path / f"out-{model.stem}"
        args = ["deblur", str(photo), "--checkpoint", str(model), "--out", str(out), "--device", "cpu", *extra]
        result = runner.invoke(app, args + ["--coc-bound", "0.05"])
        assert result.exit_code == 2, result.output
        assert "error: --coc-bound 0.05: bounds an estimated map at its image's f-number, and no input of this run " \
               "has one (no EXIF FNumber, no --f-number)" in result.output
        assert not out.exists()  # nothing written
        assert runner.invoke(app, args + ["--coc-bound", "0.05", "--f-number", "8"]).exit_code == 0
        assert runner.invoke(app, args + ["--coc-bound", "0", "--out", str(out) + "-0"]).exit_code == 0  # 0: none
    # the map model's own K, not given: silent as before (its maps as read where the f-number is unknown)
    result = runner.invoke(app, ["deblur", str(photo), "--checkpoint", str(own), "--out", str(tmp_path / "silent"),
                                 "--device", "cpu"])
    assert result.exit_code == 0 and "note:" not in result.output, result.output


def test_deblur_names_the_inputs_its_bound_did_not_reach(tmp_path: Path) -> None:
    plain = _photo(tmp_path / "in" / "plain.png")
    shot = _jpeg(tmp_path / "in" / "shot.jpg", focal=50.0, f_number=8.0)
    free = _map_file(tmp_path / "free.safetensors", None)
    out = tmp_path / "out"
    result = runner.invoke(app, ["deblur", str(plain), str(shot), "--checkpoint", str(free), "--out", str(out),
                                 "--device", "cpu", "--coc-bound", "0.05"])
    assert result.exit_code == 0, result.output
    note = (f"note: --coc-bound 0.05: 1 of 2 input(s) have no f-number, their maps used as read (not bounded): "
            f"{plain}")
    assert note in result.output
    records = {Path(r["input"]).name: r for r in json.loads((out / "deblur.json").read_text())["images"]}
    assert records["plain.png"]["coc_bound"] is None and records["plain.png"]["bound_note"] == note[len("note: "):]
    assert records["shot.jpg"]["coc_bound"] == 0.05 and records["shot.jpg"]["bound_note"] is None


def _shards(folder: Path, f_numbers: list[float | None]) -> Path:
    folder.mkdir(parents=True)
    img = (np.clip(_blurred_texture(32), 0, 1) * 255).astype(np.uint8)
    with tarfile.open(folder / "test-000000.tar", "w") as tar:
        for i, f_number in enumerate(f_numbers):
            for ext, data in encode_members(img, img, None, {"source": "synthetic", "f_number": f_number}).items():
                info = tarfile.TarInfo(f"s{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder


def test_eval_refuses_a_bound_no_sample_has_an_f_number_for(tmp_path: Path) -> None:
    none = _shards(tmp_path / "none", [None, None])
    base = ["eval", "--baseline", "prox", "--coc", "edge", "--device", "cpu"]
    result = runner.invoke(app, base + ["--shards", str(none), "--coc-bound", "0.004", "--report", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "--coc-bound 0.004: bounds an estimated map at its image's f-number, and no sample of this run has one " \
           "(no f_number in the shards' metadata)" in result.output
    assert not (tmp_path / "r").exists()
    # the first pair alone (--limit 1) has one: K bounds it, the one after the limit is not scored
    first = _shards(tmp_path / "first", [4.0, None])
    result = runner.invoke(app, base + ["--shards", str(first), "--coc-bound", "0.004", "--limit", "1",
                                        "--report", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    assert not [n for n in json.loads((tmp_path / "one" / "report.json").read_text())["notes"] if "--coc-bound" in n]


def test_eval_names_the_samples_its_bound_did_not_reach(tmp_path: Path) -> None:
    mixed = _shards(tmp_path / "mixed", [4.0, None])
    result = runner.invoke(app, ["eval", "--baseline", "prox", "--coc", "edge", "--device", "cpu", "--shards",
                                 str(mixed), "--coc-bound", "0.004", "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "r" / "report.json").read_text())["notes"]
    assert "--coc-bound 0.004: 1 of 2 sample(s) have no f-number, their maps used as read (not bounded): s1" in notes
