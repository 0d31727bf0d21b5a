"""`eval --align` (ECC) moves a sample's input and every method's output by one warp, fitted once from the input: the
methods do not move pixels, so a method's gain is not the difference of two warps (docs/benchmarks.md, "`eval
--align` on pairs already on the reference's grid")."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.scoring import Scoring
from defocuskit.io.images import read_image

VABD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train"


def _unsharp(b: np.ndarray, s: dict) -> np.ndarray:
    """A method that moves no pixel: the input sharpened in place."""
    return np.clip(b + 0.8 * (b - cv2.GaussianBlur(b, (0, 0), 1.5)), 0.0, 1.0)


def _copy(b: np.ndarray, s: dict) -> np.ndarray:
    return b.copy()


def _gains(result: dict) -> dict[str, tuple[float, float]]:
    """{method: (input's PSNR, gain)} of the rows over all f-numbers."""
    return {r["method"]: (r["psnr_input"], r["psnr"] - r["psnr_input"]) for r in result["rows"]}


@pytest.fixture(scope="module")
def registered_pair() -> dict:
    """VABD 0003 f/2.8 registered onto its f/16 reference at full size as ingest registers it, then both reduced
    to 256 px and 8 bits: a wide-aperture pair on the reference's grid."""
    from defocuskit.data.register import align

    ref = read_image(VABD / "input" / "0003.JPG").astype(np.float32) / 255.0
    shot, _ = align(read_image(VABD / "2_8" / "0003.JPG").astype(np.float32) / 255.0, ref)
    s = 256 / max(ref.shape[:2])
    size = (round(ref.shape[1] * s), round(ref.shape[0] * s))
    sharp, blur = (np.round(cv2.resize(x, size, interpolation=cv2.INTER_AREA) * 255.0).astype(np.uint8)
                   for x in (ref, shot))
    return {"key": "0003/f2_8", "sharp": sharp, "blur": blur, "coc": None, "meta": {"f_number": 2.8}}


def test_a_registered_wide_aperture_pair_keeps_its_scores_and_gains(registered_pair: dict) -> None:
    """Before, ECC fitted the input and each output on its own, a whole-frame affine pulled by the bokeh: this pair's
    input lost 0.34 dB and an unsharp mask of it (no pixel moved) gained 0.54 dB more than without --align."""
    methods = {"copy": _copy, "unsharp": _unsharp}
    plain = _gains(evaluate_samples([registered_pair], methods, progress=False))
    aligned = _gains(evaluate_samples([registered_pair], methods, scoring=Scoring(align="ecc"), progress=False))
    assert aligned["copy"] == (pytest.approx(plain["copy"][0], abs=0.05), 0.0)
    assert aligned["unsharp"][1] == pytest.approx(plain["unsharp"][1], abs=0.05)


def test_the_warp_is_fitted_once_per_sample_from_its_input(registered_pair: dict, monkeypatch) -> None:
    """Every registration fit eval makes for a sample is made on its input (as scored), none on an output."""
    import defocuskit.data.register as register

    seen: list[np.ndarray] = []
    real = register.align

    def spy(moving, reference, *args, **kwargs):
        seen.append(np.array(moving, dtype=np.float64))
        return real(moving, reference, *args, **kwargs)

    monkeypatch.setattr(register, "align", spy)
    try:
        import defocuskit.data.sample_warp as sample_warp

        monkeypatch.setattr(sample_warp, "align", spy)
    except ImportError:  # the code before one warp per sample: it imported align where it registered
        pass
    evaluate_samples([registered_pair], {"unsharp": _unsharp}, scoring=Scoring(align=True), progress=False)
    inp = registered_pair["blur"].astype(np.float64) / 255.0
    assert seen and all(np.array_equal(m, inp) for m in seen)


def test_a_known_shift_is_undone_and_an_unchanged_output_gains_exactly_nothing() -> None:
    """A pair whose input is its reference blurred and moved by (3, 2) px: --align brings the input back (far higher
    PSNR than as shot), and a method returning the input unchanged gains exactly 0 dB."""
    full = read_image(VABD / "input" / "0002.JPG")
    blurred = np.round(cv2.GaussianBlur(full.astype(np.float64) / 255.0, (0, 0), 1.5) * 255.0).astype(np.uint8)
    sample = {"key": "shift", "sharp": full[300:428, 500:660], "blur": blurred[303:431, 502:662], "coc": None,
              "meta": {"f_number": 2.8}}
    methods = {"copy": _copy, "unsharp": _unsharp}
    plain = _gains(evaluate_samples([sample], methods, progress=False))
    aligned = _gains(evaluate_samples([sample], methods, scoring=Scoring(align=True), progress=False))
    assert aligned["copy"][1] == 0.0 and aligned["copy"][0] > plain["copy"][0] + 3.0  # 20.7 -> 25.6 dB
    assert aligned["unsharp"][1] > 0.0  # sharpening helps once the shot is on the reference's grid


def test_sample_warp_recovers_a_known_sub_pixel_move_and_keeps_the_identity_on_the_grid(registered_pair) -> None:
    from defocuskit.data.sample_warp import apply_warp, fit_sample_warp

    sharp, blur = (registered_pair[k].astype(np.float64) / 255.0 for k in ("sharp", "blur"))
    on_grid = fit_sample_warp(blur, sharp)
    assert on_grid["motion"] == "identity" and on_grid["fit_found"]
    assert np.array_equal(apply_warp(blur, on_grid["matrix"]), blur)
    known = cv2.getRotationMatrix2D((sharp.shape[1] / 2, sharp.shape[0] / 2), 0.1, 1.0)
    known[:, 2] += (1.5, -0.75)
    moved = cv2.warpAffine(blur, known, (blur.shape[1], blur.shape[0]), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    fit = fit_sample_warp(np.round(np.clip(moved, 0, 1) * 255.0) / 255.0, sharp)
    ys, xs = np.mgrid[0:sharp.shape[0]:8, 0:sharp.shape[1]:8]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    rms = np.sqrt((((np.asarray(fit["matrix"]) - known) @ pts) ** 2).sum(0).mean())
    assert fit["motion"] != "identity" and rms < 0.3
