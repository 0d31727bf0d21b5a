"""`defocuskit eval --detail-band PX`: outputs and the input scored with their low-pass replaced by the reference's,
so a real shot's exposure, tone-curve and glare differences from its reference stop counting and a defocus blur
still does (docs/benchmarks.md, "What the real-photo gains are made of")."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.evaluate import evaluate
from defocuskit.eval.metrics import detail_band, psnr
from defocuskit.imaging.optics import disc_psf

runner = CliRunner()


def _scene(seed: int = 0, h: int = 96, w: int = 128) -> np.ndarray:
    """A textured colour image in [0.1, 0.9]: fine detail for a blur to take away."""
    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    return np.clip(0.5 + 1.6 * (cv2.GaussianBlur(noise, (0, 0), 1.2) - 0.5), 0.1, 0.9)


def _toned(img: np.ndarray) -> np.ndarray:
    """What a wide-open shot's photometry adds and a blur does not: a veil that lifts the frame unevenly (glare, a
    vignette's and a tone curve's slow part)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    veil = 0.08 + 0.06 * np.cos(np.pi * xx / w) * np.sin(np.pi * yy / h)
    return np.clip(img + veil[..., None], 0.0, 1.0)


def _blurred(img: np.ndarray, diameter: float = 6.0) -> np.ndarray:
    return cv2.filter2D(img, -1, disc_psf(diameter), borderType=cv2.BORDER_REFLECT)


def test_the_detail_band_leaves_out_tone_and_keeps_the_blur():
    ref = _scene().astype(np.float64)
    toned, blurred = _toned(ref), _blurred(ref)
    assert psnr(toned, ref) < 25  # the tone change costs more than ...
    assert psnr(detail_band(toned, ref, 16), ref) > 40  # ... it does in the detail band, where it is almost nothing
    assert psnr(detail_band(blurred, ref, 16), ref) < psnr(blurred, ref) + 1.0 < 30  # the blur costs as much there
    both = _blurred(_toned(ref))
    assert abs(psnr(detail_band(both, ref, 16), ref) - psnr(detail_band(blurred, ref, 16), ref)) < 1.5
    assert np.allclose(detail_band(ref, ref, 16), ref, rtol=0, atol=1e-12)  # the reference itself is untouched
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="detail band"):
            detail_band(ref, ref, bad)


def test_eval_detail_band_scores_the_shot_without_its_photometry(tmp_path):
    from test_eval import _write_shards

    pairs = []
    for i in range(2):
        sharp = _scene(i)
        for kind, blur in (("toned", _toned(sharp)), ("blurred", _blurred(sharp))):
            pairs.append({"key": f"{kind}{i}", "sharp": (sharp * 65535).round().astype(np.uint16),
                          "blur": (blur * 65535).round().astype(np.uint16), "coc": None,
                          "meta": {"source": "synthetic", "f_number": 1.8 if kind == "toned" else 8.0}})
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    args = ["eval", "--shards", str(shards), "--baseline", "input", "--device", "cpu"]
    plain = runner.invoke(app, [*args, "--report", str(tmp_path / "plain")])
    band = runner.invoke(app, [*args, "--detail-band", "16", "--report", str(tmp_path / "band")])
    assert plain.exit_code == 0 and band.exit_code == 0, plain.output + band.output
    assert "detail band (low-pass 16 px" in band.output
    rows = {name: {r["f_number"]: r["psnr"] for r in json.loads((tmp_path / name / "report.json").read_text())["rows"]}
            for name in ("plain", "band")}
    assert rows["plain"][1.8] < 25 < 40 < rows["band"][1.8]  # the toned shots: their photometry no longer counts
    assert rows["band"][8.0] < rows["plain"][8.0] + 1.0 < 31  # the blurred ones: the blur still does
    protocol = json.loads((tmp_path / "band" / "report.json").read_text())["protocol"]
    assert protocol["detail_band_px"] == 16 and "veiling glare" in protocol["detail_band"]
    assert json.loads((tmp_path / "plain" / "report.json").read_text())["protocol"]["detail_band_px"] is None
    for bad in ("0", "-2"):
        refused = runner.invoke(app, [*args, "--detail-band", bad, "--report", str(tmp_path / "bad")])
        assert refused.exit_code == 2 and "--detail-band must be a positive number of pixels" in refused.output
        assert not (tmp_path / "bad" / "report.json").exists()
    with pytest.raises(EvalError, match="detail-band"):
        evaluate(shards, [], ["input"], EvalConfig(detail_band=float("inf"), report_dir=tmp_path / "inf",
                                                   progress=False))
