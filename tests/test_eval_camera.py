"""`eval --coc fnumber --sensor-width/--focal-length/--focus-distance`: the camera of the thin-lens CoC, used over each
sample's metadata value as deblur's over the EXIF; refused (one line, exit 2, before any model) out of range or
without --coc fnumber; recorded in report.json with how many samples used each default (36 mm, 50 mm, 2 m)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.eval import baselines
from tests.test_eval import _crop_pairs, _write_shards
from tests.test_sensor_width import thin_lens_px


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    """Two real 64 x 48 crops at f/2.8 whose metadata has a focal length (50 mm), no sensor width, no focus."""
    pairs = _crop_pairs(2)
    for p in pairs:
        p["meta"]["f_number"] = 2.8
    return _write_shards(tmp_path / "shards", "test", pairs)


def test_eval_coc_fnumber_uses_the_camera_given_and_reports_the_defaults(shards: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, float] = {}  # the CoC (px) the Wiener baseline was given, per sample
    real = baselines.wiener_baseline

    def spy(blur, meta, coc=None, **kw):
        seen[meta["key"]] = float(np.max(coc))
        return real(blur, meta, coc, **kw)

    monkeypatch.setattr(baselines, "wiener_baseline", spy)

    def run(name: str, *camera: str) -> tuple[dict[str, float], dict]:
        seen.clear()
        result = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--baseline", "wiener-plain", "--coc",
                                          "fnumber", "--device", "cpu", "--report", str(tmp_path / name), *camera])
        assert result.exit_code == 0, result.output
        return dict(seen), json.loads((tmp_path / name / "report.json").read_text())

    full_frame = thin_lens_px(2.8, 50.0, 2.0, 36.0, 64)  # 0.81 px: the defaults' sensor and focus, the shards' lens
    coc, report = run("default")
    assert coc == {"s0": pytest.approx(full_frame, rel=1e-5), "s1": pytest.approx(full_frame, rel=1e-5)}
    camera = report["protocol"]["coc"]["camera"]
    assert camera["given"] == {"sensor_width_mm": None, "focal_length_mm": None, "focus_distance_m": None}
    assert camera["samples"] == 2
    assert camera["used_default"] == {"sensor_width_mm": 2, "focal_length_mm": 0, "focus_distance_m": 2}
    assert camera["defaults"] == {"sensor_width_mm": 36.0, "focal_length_mm": 50.0, "focus_distance_m": 2.0}
    assert ("--coc fnumber: of 2 sample(s), 2 the default sensor width 36 mm (--sensor-width), 2 the default focus "
            "distance 2 m (--focus-distance)") in report["notes"]

    coc, aps = run("small", "--sensor-width", "12")  # a third of full frame: three times the CoC in pixels
    assert coc == {k: pytest.approx(3 * full_frame, rel=1e-5) for k in ("s0", "s1")}
    assert aps["protocol"]["coc"]["camera"]["given"]["sensor_width_mm"] == 12.0
    assert aps["protocol"]["coc"]["camera"]["used_default"]["sensor_width_mm"] == 0
    assert aps["protocol"]["methods"]["wiener-plain"]["coc"]["camera"]["given"]["sensor_width_mm"] == 12.0
    assert [r["psnr"] for r in aps["rows"]] != [r["psnr"] for r in report["rows"]]  # the deconvolution changed

    # each given value is used over the sample's own, as deblur's over the EXIF: the shards' 50 mm gives way to 35 mm
    coc, given = run("all", "--sensor-width", "12", "--focal-length", "35", "--focus-distance", "3")
    assert coc == {k: pytest.approx(thin_lens_px(2.8, 35.0, 3.0, 12.0, 64), rel=1e-5) for k in ("s0", "s1")}
    camera = given["protocol"]["coc"]["camera"]
    assert camera["used_default"] == {"sensor_width_mm": 0, "focal_length_mm": 0, "focus_distance_m": 0}
    assert camera["given_over_metadata"] == {"sensor_width_mm": 0, "focal_length_mm": 2, "focus_distance_m": 0}
    assert "--coc fnumber: --focal-length 35 replaced the metadata's own value in 2 sample(s)" in given["notes"]
    assert not any("the default" in note for note in given["notes"])


@pytest.mark.parametrize("args, said", [
    (["--coc", "fnumber", "--sensor-width", "0.1"], "--sensor-width 0.1: not a sensor width a camera has, 1 to 100 mm"),
    (["--coc", "fnumber", "--focus-distance", "inf"], "--focus-distance inf: not a focus distance"),
    (["--coc", "fnumber", "--focal-length", "200", "--focus-distance", "0.1"],
     "--focus-distance 0.1: the focus (0.1 m) must lie beyond the focal length (200 mm)"),
    (["--coc", "edge", "--sensor-width", "23.5"],
     "--sensor-width: the camera of --coc fnumber's thin-lens CoC; with --coc edge it would not be used"),
    (["--coc", "map", "--coc-model", "MODEL", "--focus-distance", "3"],
     "--focus-distance: the camera of --coc fnumber's thin-lens CoC; with --coc map it would not be used"),
    (["--sensor-width", "23.5", "--focal-length", "35"],
     "--sensor-width, --focal-length: the camera of --coc fnumber's thin-lens CoC; with no --coc it would not be used"),
])
def test_eval_refuses_a_camera_out_of_range_or_without_coc_fnumber(shards: Path, tmp_path: Path, args: list[str],
                                                                    said: str) -> None:
    model = tmp_path / "model.safetensors"  # any model is read after these checks: this one would fail to load
    model.write_bytes(b"not a model")
    args = [str(model) if a == "MODEL" else a for a in args]
    result = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--checkpoint", str(model), "--report",
                                      str(tmp_path / "rep"), *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {said}") and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "rep").exists()


def test_a_camera_given_from_python_is_checked_where_the_source_is_made():
    """evaluate() and deblur_files() called from Python handed `camera=` to the CoC source unchecked (only the CLI and
    the API's deblur checked it): a sensor width of 0.1 mm became the 36 mm default without a word. CocSource.create
    checks it, naming the keyword as Python spells it."""
    from defocuskit.inference.coc_source import CocError, CocSource

    with pytest.raises(CocError, match=r"^sensor_width_mm=0\.1: not a sensor width a camera has"):
        CocSource.create("fnumber", camera={"sensor_width_mm": 0.1})
    with pytest.raises(CocError, match=r"^focus_distance_m=0\.02: the focus \(0\.02 m\) must lie beyond"):
        CocSource.create("fnumber", camera={"focus_distance_m": 0.02})
    assert CocSource.create("fnumber", camera={"sensor_width_mm": 23.5}).camera == {"sensor_width_mm": 23.5}
