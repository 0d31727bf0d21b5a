"""Registration of wide-aperture shots: the bokeh discs of clipped highlights are left out of the fit and the
score, and where they still pull the whole-frame fit off, it is made on the detail both shots share."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from defocuskit.data.highlights import shared_detail, unexplained_highlights
from defocuskit.data.register import RegistrationError, align
from defocuskit.io.images import linear_to_srgb, read_image, srgb_to_linear, to_float


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    return np.clip(0.15 + 2.5 * (noise - noise.mean()), 0.02, 0.6)


def _glint_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dim textured background with 30 clipped glints (sRGB reference) and its defocused shot, where each
    glint, 40x the clip level in linear light, spreads into a disc of radius 14 px; and the discs' true mask."""
    h, w = 256, 384
    base = _texture(h, w, seed)
    lin = np.repeat(srgb_to_linear(base)[..., None], 3, axis=2)
    ref_srgb = linear_to_srgb(lin)
    glints = np.zeros((h, w), np.float32)
    rng = np.random.default_rng(seed + 1)
    for y, x in zip(rng.integers(20, h - 20, 30), rng.integers(20, w - 20, 30)):
        cv2.circle(glints, (int(x), int(y)), 1, 1.0, -1)
    ref_srgb[glints > 0] = 1.0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (29, 29)).astype(np.float32)
    disc /= disc.sum()
    blurred = cv2.filter2D(lin + 40.0 * glints[..., None], -1, disc)
    truth = cv2.filter2D(glints, -1, disc) * 40.0 > 0.1  # where the discs add more than a tenth of the clip level
    return ref_srgb, linear_to_srgb(np.clip(blurred, 0, 1)), truth


def test_unexplained_highlights_marks_the_glints_discs_and_little_else():
    ref, shot, discs = _glint_scene()
    lit = unexplained_highlights(ref, shot)
    assert lit[discs].mean() > 0.8, lit[discs].mean()  # the discs are found
    far = cv2.dilate(discs.astype(np.uint8), np.ones((15, 15), np.uint8)) == 0
    assert lit[far].mean() < 0.02, lit[far].mean()  # and nothing away from them
    # without a clipped pixel in the reference nothing is unexplained, whatever the shot's exposure
    dim = np.clip(ref, 0, 0.9)
    assert not unexplained_highlights(dim, np.clip(shot * 1.5, 0, 1)).any()
    with pytest.raises(ValueError, match="equal shapes"):
        unexplained_highlights(ref, shot[:100])


def test_shared_detail_is_where_the_shot_is_as_sharp_as_the_reference():
    ref = _texture(256, 384, 3)
    shot = ref.copy()
    shot[:, 192:] = cv2.GaussianBlur(ref, (0, 0), 6.0)[:, 192:]  # the right half out of focus
    same = shared_detail(ref, shot)
    assert same[:, 20:172].mean() > 0.9 and same[:, 212:].mean() < 0.1
    flat = np.full((64, 64), 0.5, np.float32)  # nothing shared anywhere: the whole frame is returned
    assert shared_detail(flat, flat).all()


def _render(root, folder: str, stem: str, count: int = 0, k: float = 0.14, f_number: float = 1.8,
            side: int = 768) -> tuple[np.ndarray, np.ndarray]:
    """A fixture reference (`folder`: VABD/train, EBB/train, ...) at `side` px with `count` clipped points of light
    where its depth map says out of focus (reference side), and its render at f/`f_number` with CoC scale `k` (of
    the long side, at f/1) with those points 30x the clip level (bokeh discs)."""
    from defocuskit.data.render_photo import encode, render_coc, restore_highlights
    from defocuskit.data.sources.render import added_coc
    from defocuskit.imaging.depth import decode_depth, focus_value, signed_relative_coc

    base = root / folder
    ext = ".JPG" if folder.startswith("VABD") else ".jpg"
    ref = to_float(read_image(base / "input" / f"{stem}{ext}"))
    ref = cv2.resize(ref, (side, side * ref.shape[0] // ref.shape[1]), interpolation=cv2.INTER_AREA)
    h, w = ref.shape[:2]
    depth = cv2.resize(decode_depth(read_image(base / "depth" / f"{stem}.png"), "auto"), (w, h),
                       interpolation=cv2.INTER_AREA)
    focal_path = next((base / "focal").glob(f"{stem}.*"))
    focal = cv2.resize(to_float(read_image(focal_path)).mean(axis=2), (w, h)) > 0.5
    coc = added_coc(signed_relative_coc(depth, "relative", focus_value(depth, focal)) * k * side, f_number, 16.0)
    lin, shown = srgb_to_linear(ref), ref.copy()
    ys, xs = np.nonzero(np.abs(coc) > 4)
    for i in np.random.default_rng(0).choice(len(ys), count):
        cv2.circle(shown, (int(xs[i]), int(ys[i])), 1, (1.0, 1.0, 1.0), -1)
        cv2.circle(lin, (int(xs[i]), int(ys[i])), 1, (30.0, 30.0, 30.0), -1)
    return shown, encode(render_coc(restore_highlights(lin), coc))


def _assert_refused(shot: np.ndarray, reference: np.ndarray, motion: str = "affine") -> None:
    """A wrong pair: registration fails or scores under the default --min-align-score."""
    try:
        _, record = align(shot, reference, "ecc", motion)
    except RegistrationError:
        return
    assert record["score"] < 0.8, record


@pytest.mark.parametrize("stem", ["0001", "0003"])
def test_a_wide_aperture_shot_full_of_glints_is_kept_and_a_wrong_one_still_refused(real_fixture_root, stem):
    """120 sun glints in the background: before, VABD 0001's render scored 0.78 (raw correlation 0.51) and 0003's
    whole-frame fit landed beyond a tripod bracket; both were refused. Their discs are now left out."""
    ref, shot = _render(real_fixture_root, "VABD/train", stem, 120)
    _, record = align(shot, ref)
    assert record["score"] >= 0.8 and record["raw_score"] >= 0.8, record
    other, _ = _render(real_fixture_root, "VABD/train", "0002", 120)  # the same glints, another scene's reference
    _assert_refused(shot, other)


def test_close_focus_bokeh_is_matched_to_its_size_and_wrong_pairs_still_refused(real_fixture_root):
    """EBB 2977 rendered at f/1.4 focused close (background discs of about a quarter of the long side, CoC scale
    0.4): the score's blur matching stopped at discs of about 5 % of the long side, so the tripod-jittered shot
    scored 0.79 and was refused. The reference's blurs now reach discs of about 13 %."""
    ref, shot = _render(real_fixture_root, "EBB/train", "2977", k=0.4, f_number=1.4, side=512)
    h, w = ref.shape[:2]
    jitter = np.float32([[1, 0, 1.2], [0, 1, -0.8]])
    shot = cv2.warpAffine(shot, jitter, (w, h), borderMode=cv2.BORDER_REFLECT)
    _, record = align(shot, ref)
    assert record["score"] >= 0.8, record
    assert record["matched_blur_px"][1] > 4.0 * 512 / 256, record  # matched beyond the former ladder's end
    pasted = shot.copy()  # a block of another place of the reference pasted in
    s = h // 3
    pasted[h - s - 10:h - 10, 20:20 + s] = ref[10:10 + s, w - s - 20:w - 20]
    _assert_refused(pasted, ref)
    _assert_refused(shot, _render(real_fixture_root, "EBB/train", "2978", side=512)[0])


def test_a_tripod_bracket_is_fitted_on_its_subject_not_pulled_by_the_bokeh(real_fixture_root):
    """VABD 0003 rendered at f/1.4 (CoC scale 0.14: discs of 7-9 % of the frame) and moved by a known tripod jitter.
    The whole-frame affine fit is pulled by the depth-varying blur (3.2 px RMS off at 512 px); the bracket motion
    (a shift and a rotation, fitted on the detail both shots hold) is within half a pixel. Another scene is still
    refused."""
    ref, shot = _render(real_fixture_root, "VABD/train", "0003", k=0.14, f_number=1.4, side=512)
    h, w = ref.shape[:2]
    truth = cv2.getRotationMatrix2D((w / 2, h / 2), 0.1, 1.0)
    truth[:, 2] += (1.2, -0.8)
    shot = cv2.warpAffine(shot, truth, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    ys, xs = np.mgrid[0:h:8, 0:w:8]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).astype(np.float64)

    def error(record: dict) -> float:  # RMS px between where the fit and the truth send the reference's pixels
        d = np.asarray(record["matrix"])[:2] @ points - truth @ points
        return float(np.sqrt((d ** 2).sum(axis=0).mean()))

    _, bracket = align(shot, ref, "ecc", "bracket")
    _, affine = align(shot, ref, "ecc", "affine")
    assert bracket["motion"] == "bracket" and bracket["score"] >= 0.8, bracket
    assert error(bracket) < 0.6 < 2.0 < error(affine), (error(bracket), error(affine))
    _assert_refused(shot, _render(real_fixture_root, "VABD/train", "0001", side=512)[0], "bracket")


def test_ingest_bracket_fit_subject_end_to_end(tmp_path, real_fixture_root):
    """`ingest --vabd --bracket-fit subject` on VABD 0001 at f/2.8: the subject in focus (the fixture's focal mask)
    comes into register with the reference (its fine detail's correlation 0.86 -> 0.95), and the motion is recorded."""
    from conftest import ingest_vabd_pair, vabd_subset
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.plan import content_options
    from defocuskit.data.sample import IngestOptions

    root = vabd_subset(real_fixture_root, tmp_path / "vabd", "0001", ("input", "2_8"))
    focal = to_float(read_image(real_fixture_root / "VABD" / "train" / "focal" / "0001.png")).mean(axis=2)
    corr = {}
    for name, extra in (("frame", []), ("subject", ["--bracket-fit", "subject"])):
        manifest, pair = ingest_vabd_pair(root, tmp_path / name, 768, *extra)
        assert manifest["options"]["bracket_fit"] == name
        assert pair["meta"]["align"]["motion"] == ("bracket" if extra else "affine")
        blur, sharp = (cv2.cvtColor(to_float(pair[k]), cv2.COLOR_RGB2GRAY) for k in ("blur", "sharp"))
        inside = cv2.resize(focal, (blur.shape[1], blur.shape[0])) > 0.5
        a, b = (cv2.Laplacian(cv2.GaussianBlur(x, (0, 0), 1.0), cv2.CV_32F)[inside] for x in (blur, sharp))
        corr[name] = float(np.corrcoef(a, b)[0, 1])
    assert corr["subject"] > corr["frame"] + 0.05, corr  # 0.86 -> 0.95
    assert "bracket_fit" not in content_options(IngestOptions())  # the default keeps earlier folders' fingerprints
    res = CliRunner().invoke(app, ["ingest", "--vabd", str(root), "--out", str(tmp_path / "bad"),
                                   "--bracket-fit", "face"])
    assert res.exit_code == 2 and "--bracket-fit" in res.output and not (tmp_path / "bad").exists()


def test_ecc_falls_back_to_the_shared_detail_where_the_whole_frame_fit_fails():
    from defocuskit.data.register import _ecc

    ref = cv2.GaussianBlur(_texture(256, 384, 5), (0, 0), 1.5)
    truth = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.5]])  # reference -> moving: moving(truth x) = reference(x)
    back = np.array([[1.0, 0.0, -2.5], [0.0, 1.0, 1.5]], np.float32)  # its inverse
    mov = cv2.warpAffine(ref, back, (384, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT)
    nothing, everything = np.zeros(ref.shape, np.uint8), np.ones(ref.shape, np.uint8)
    with pytest.raises(cv2.error):  # no pixel to fit the whole frame on, and no detail to fall back to
        _ecc(ref, mov, "affine", nothing)
    np.testing.assert_allclose(_ecc(ref, mov, "affine", nothing, lambda: everything), truth, atol=0.05)
    np.testing.assert_allclose(_ecc(ref, mov, "affine", everything, lambda: everything), truth, atol=0.05)
