"""The smooth residual warp after the rigid registration (`data.refine`, `ingest --refine-warp`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import ingest_vabd_pair, vabd_subset

from defocuskit.data.plan import content_options
from defocuskit.data.refine import refine, residual_field
from defocuskit.data.sample import IngestOptions
from defocuskit.eval.metrics import psnr
from defocuskit.io.images import read_image, to_float

SMOOTH, MAX_SHIFT = 0.047, 0.01


@pytest.fixture(scope="module")
def scene(real_fixture_root) -> np.ndarray:
    """A real f/16 reference at 384 px."""
    ref = to_float(read_image(real_fixture_root / "VABD" / "train" / "input" / "0003.JPG"))
    return cv2.resize(ref, (384, 256), interpolation=cv2.INTER_AREA)


def _smooth_field(shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """A slowly varying displacement (H, W, 2), px: the residual a rigid fit leaves, up to `amplitude`."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx = amplitude * np.sin(2 * np.pi * x / w) * np.cos(np.pi * y / h)
    fy = amplitude * 0.7 * np.cos(2 * np.pi * y / h + 0.5)
    return np.stack([fx, fy], axis=2).astype(np.float32)


def _moved(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    """`img` with its content displaced so that moved(x + field(x)) ~ img(x) (field smooth and small)."""
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img, x - field[..., 0], y - field[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _shot(img: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """A softer, brighter shot of `img`: the blur and exposure of a wider aperture (flow must see through both)."""
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0) * gain, 0.0, 1.0).astype(np.float32)


def test_field_recovered_and_pair_brought_together(scene):
    truth = _smooth_field(scene.shape[:2], 1.5)
    moving = _shot(_moved(scene, truth), gain=1.2)
    identity = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    field, before, after = residual_field(scene, moving, SMOOTH, MAX_SHIFT)
    inner = (slice(24, -24), slice(24, -24))
    err = np.hypot(*(field - truth)[inner].transpose(2, 0, 1))
    assert np.median(err) < 0.35 and np.percentile(err, 90) < 0.6, (np.median(err), np.percentile(err, 90))
    assert after > before
    out, record = refine(moving, scene, moving, identity, SMOOTH, MAX_SHIFT)
    assert 0.5 < record["refined_px"][0] < 2.0 and record["refine_corr"][1] > record["refine_corr"][0]
    # the refined shot is the softer shot of the reference, in place: against the same blur of the reference,
    # it is far closer than the rigidly registered one
    soft = _shot(scene, gain=1.2)
    assert psnr(out[inner], soft[inner]) > psnr(moving[inner], soft[inner]) + 8.0


def test_rigid_warp_and_field_composed_in_one_resampling(scene):
    """Given the rigid fit's matrix, the shot as read is resampled once by the fit and the field together."""
    truth = _smooth_field(scene.shape[:2], 1.0)
    matrix = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])  # reference -> moving: content 3 px right, 2 px up
    target = _shot(_moved(scene, truth))
    h, w = scene.shape[:2]
    shifted = cv2.warpAffine(target, np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2].astype(np.float32), (w, h),
                             flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    registered = cv2.warpAffine(shifted, matrix.astype(np.float32), (w, h),
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    out, record = refine(shifted, scene, registered, matrix.tolist(), SMOOTH, MAX_SHIFT)
    inner = (slice(24, -24), slice(24, -24))
    soft = _shot(scene)
    assert record["refined_px"][0] > 0.3
    assert psnr(out[inner], soft[inner]) > psnr(registered[inner], soft[inner]) + 6.0


def test_aligned_pair_left_exactly_as_registered(scene):
    """No residual: the field changes nothing, so the registered shot is returned as it is (not resampled)."""
    shot = _shot(scene)
    out, record = refine(shot, scene, shot, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], SMOOTH, MAX_SHIFT)
    assert out is shot and record["refined_px"] == [0.0, 0.0]


def test_image_too_small_for_flow_keeps_the_rigid_fit():
    """Below DIS's smallest image (12 px a side) there is no flow to judge: the rigid fit stays, nothing raises."""
    rng = np.random.default_rng(0)
    ref = rng.random((9, 9, 3)).astype(np.float32)
    moving = np.roll(ref, 1, axis=1)
    out, record = refine(moving, ref, moving, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], SMOOTH, MAX_SHIFT)
    assert out is moving and record["refined_px"] == [0.0, 0.0]


def test_field_bounded(scene):
    """A residual beyond the bound (a wrong match, not a bracket) is cut to `max_shift` x the long side."""
    moving = _shot(_moved(scene, _smooth_field(scene.shape[:2], 6.0)))
    field, _, _ = residual_field(scene, moving, SMOOTH, 0.005)
    assert np.hypot(field[..., 0], field[..., 1]).max() <= 0.005 * 384 + 1e-3
    with pytest.raises(ValueError, match="smooth"):
        residual_field(scene, moving, 0.0, MAX_SHIFT)
    with pytest.raises(ValueError, match="shapes differ"):
        residual_field(scene, moving[:-1], SMOOTH, MAX_SHIFT)


def test_bokeh_does_not_pull_the_field(scene):
    """A subject in focus before a background blurred by a disc of a tenth of the frame (linear light), the shot
    shifted by a known amount. The rigid fit is already off (3.4 px RMS in the background, 1.5 on the subject: the
    bokeh pulls a whole-frame fit); the flow of the blurred shapes against the sharp reference is biased too, and the
    field used to carry it into the background (4.5 px). It now follows only the detail both shots hold: the
    background keeps the rigid fit (3.3 px) and the subject comes closer (1.1 px)."""
    from defocuskit.data.register import align
    from defocuskit.io.images import linear_to_srgb, srgb_to_linear

    h, w = scene.shape[:2]
    lin = srgb_to_linear(scene)
    d = w // 10 | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d)).astype(np.float32)
    subject = np.zeros((h, w), bool)
    subject[h // 3:2 * h // 3, w // 3:2 * w // 3] = True
    shot = linear_to_srgb(np.where(subject[..., None], lin, cv2.filter2D(lin, -1, disc / disc.sum())))
    shift = (1.5, -1.0)
    shot = cv2.warpAffine(shot, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (w, h),
                          borderMode=cv2.BORDER_REFLECT)
    registered, record = align(shot, scene)
    m = np.asarray(record["matrix"])
    field = residual_field(scene, registered, SMOOTH, MAX_SHIFT)[0]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    inner = np.zeros((h, w), bool)
    inner[16:-16, 16:-16] = True

    def error(fx: np.ndarray, fy: np.ndarray, where: np.ndarray) -> float:  # RMS px against the known shift
        px, py = gx + fx, gy + fy
        e = np.hypot(m[0, 0] * px + m[0, 1] * py + m[0, 2] - gx - shift[0],
                     m[1, 0] * px + m[1, 1] * py + m[1, 2] - gy - shift[1])
        return float(np.sqrt((e[where] ** 2).mean()))

    zero = np.zeros((h, w))
    background = inner & ~subject
    assert error(field[..., 0], field[..., 1], background) < error(zero, zero, background) + 0.3
    assert error(field[..., 0], field[..., 1], subject) <= error(zero, zero, subject) + 0.05


def test_ingest_refine_warp_end_to_end(tmp_path, real_fixture_root):
    """`ingest --refine-warp`: the real f/8 shot of VABD 0003 comes closer to its reference (the rigid fit leaves
    about a third of a pixel), the warp is recorded, and the option is part of the folder's fingerprint."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.inspect import sample_label

    root = vabd_subset(real_fixture_root, tmp_path / "vabd", "0003", ("input", "8"))
    runner, scores = CliRunner(), {}
    for name, extra in (("rigid", []), ("refined", ["--refine-warp", "0.047"])):
        manifest, pair = ingest_vabd_pair(root, tmp_path / name, 768, *extra)
        assert manifest["options"]["refine_warp"] == (0.047 if extra else 0.0)
        scores[name] = psnr(to_float(pair["blur"]), to_float(pair["sharp"]))
        align = pair["meta"]["align"]
        refined_px = align["refined_px"]
        if extra:
            assert refined_px[0] > 0.05 and align["refine_corr"][1] > align["refine_corr"][0]
            assert f"refined {refined_px[0]:.2f} px" in sample_label(pair)  # what `defocuskit inspect` shows
        else:
            assert refined_px is None and "refined" not in sample_label(pair)
    assert scores["refined"] > scores["rigid"] + 0.3, scores
    assert "refine_warp" not in content_options(IngestOptions())  # off: folders ingested before keep their fingerprints
    assert content_options(IngestOptions(refine_warp=0.047))["refine_warp"] == 0.047
    res = runner.invoke(app, ["ingest", "--vabd", str(root), "--out", str(tmp_path / "bad"), "--refine-warp", "0.9"])
    assert res.exit_code == 2 and "--refine-warp" in res.output and not (tmp_path / "bad").exists()
