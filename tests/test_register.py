"""Registration and photometric gain on the real photo fixtures."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from conftest import ingest_vabd_pair, vabd_subset

from defocuskit.data.metadata import to_stored
from defocuskit.data.pairs import load_pair
from defocuskit.data.plan import content_options
from defocuskit.data.register import RegistrationError, align, match_gain, registration_quality
from defocuskit.data.sample import IngestOptions, RejectError, Task
from defocuskit.io.images import from_float, linear_to_srgb, read_image, srgb_to_linear, to_float, write_image


@pytest.fixture(scope="module")
def vabd_ref(real_fixture_root) -> np.ndarray:
    return to_float(read_image(real_fixture_root / "VABD" / "train" / "input" / "0001.JPG"))


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """moving(x) = img(m x), so the reference->moving warp W (moving(W x) = img(x)) is inv(m)."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", ["ecc", "homography"])
def test_known_affine_recovered_full_size(vabd_ref, method):
    truth = np.array([[1.006, 0.004, -9.5], [-0.003, 0.997, 5.25]])  # ~1% scale, a dozen px (EBB-like)
    moving = _warp(vabd_ref, np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2])
    warped, record = align(moving, vabd_ref, method=method)
    m = np.array(record["matrix"])
    assert record["method"] == method and record["score"] > 0.99
    np.testing.assert_allclose(m[:2, :2], truth[:, :2], atol=2e-3)
    np.testing.assert_allclose(m[:2, 2], truth[:, 2], atol=0.5)
    assert m.shape == ((3, 3) if method == "homography" else (2, 3))
    inner = (slice(40, -40), slice(40, -40))
    assert np.abs(warped[inner] - vabd_ref[inner]).mean() < 0.01
    assert record["border"] == "reflect" and 0.9 < record["coverage"] < 1.0


def test_homography_record_fits_the_shard_schema():
    """align.inliers is a count (schema int): the share of matches once failed every homography pair's metadata, so
    `ingest --register homography` (and ECC's homography fallback) rejected every pair with a MetadataError."""
    from skimage import data

    truth = np.array([[1.0, 0.0, 6.0], [0.0, 1.0, -4.0]])
    small = cv2.resize(to_float(data.astronaut()), (256, 256), interpolation=cv2.INTER_AREA)
    _, record = align(_warp(small, truth), small, method="homography")
    assert isinstance(record["inliers"], int) and record["inliers"] >= 12
    assert to_stored({"align": record})["align"]["inliers"] == record["inliers"]


def test_translation_on_downscaled_estimate(vabd_ref):
    truth = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
    _, record = align(_warp(vabd_ref, np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2]), vabd_ref,
                      motion="translation", max_side=512)
    np.testing.assert_allclose(np.array(record["matrix"]), truth, atol=0.15)


def test_match_gain_recovers_exposure(vabd_ref):
    darker = linear_to_srgb(srgb_to_linear(vabd_ref) * 0.5)  # one stop under
    restored, gain = match_gain(darker, vabd_ref)
    assert gain == pytest.approx(2.0, rel=0.03)
    assert np.abs(restored - vabd_ref).mean() < 0.01
    assert restored.min() >= 0 and restored.max() <= 1


def _lowpass(img: np.ndarray, frac: float = 0.03) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), frac * max(img.shape[:2]))


def test_local_gain_matches_light_and_colour_per_region(vabd_ref):
    ref = cv2.resize(vabd_ref, (384, 256), interpolation=cv2.INTER_AREA)
    ramp = np.linspace(0.6, 1.4, ref.shape[1], dtype=np.float32)[None, :, None]  # light falling across the scene
    cast = np.array([1.15, 1.0, 0.85], np.float32)  # and a colour change
    defocus = lambda lin: linear_to_srgb(cv2.GaussianBlur(np.clip(lin, 0, 1), (0, 0), 2.0))  # in linear light  # noqa: E731
    shot, ideal = defocus(srgb_to_linear(ref) * ramp * cast), defocus(srgb_to_linear(ref))  # ideal: the light unchanged
    one, gain_one = match_gain(shot, ref)
    local, gain_local = match_gain(shot, ref, sigma=0.06 * 384)
    assert gain_local == gain_one  # the recorded gain stays the global one
    err = {name: np.abs(_lowpass(x) - _lowpass(ideal)).mean() for name, x in (("one", one), ("local", local))}
    assert err["one"] > 0.04 and err["local"] < err["one"] / 4, err
    # only the light is matched: the shot's defocus stays (its detail is no closer to the reference's)
    detail = {name: np.abs((x - _lowpass(x, 0.01)) - (ref - _lowpass(ref, 0.01))).mean()
              for name, x in (("one", one), ("local", local), ("ideal", ideal))}
    assert detail["local"] > 0.9 * detail["ideal"], detail


def test_ingest_local_gain_end_to_end(tmp_path, real_fixture_root):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    root = vabd_subset(real_fixture_root, tmp_path / "vabd", "0003", ("input", "2_8"))
    runner, errs = CliRunner(), {}
    for name, extra in (("one", []), ("local", ["--local-gain", "0.06"])):
        manifest, pair = ingest_vabd_pair(root, tmp_path / name, 256, *extra)
        assert manifest["options"]["local_gain"] == (0.06 if extra else 0.0)
        blur, sharp = to_float(pair["blur"]), to_float(pair["sharp"])
        errs[name] = np.abs(_lowpass(blur) - _lowpass(sharp)).mean()
    assert errs["local"] < 0.8 * errs["one"], errs
    assert "local_gain" not in content_options(IngestOptions())  # off: folders ingested before keep their fingerprints
    assert content_options(IngestOptions(local_gain=0.06))["local_gain"] == 0.06
    res = runner.invoke(app, ["ingest", "--vabd", str(root), "--out", str(tmp_path / "bad"), "--local-gain", "2"])
    assert res.exit_code == 2 and "--local-gain" in res.output and not (tmp_path / "bad").exists()


def test_real_pairs_register(real_fixture_root):
    vabd = real_fixture_root / "VABD" / "train"
    ref = to_float(read_image(vabd / "input" / "0003.JPG"))
    _, record = align(to_float(read_image(vabd / "2_8" / "0003.JPG")), ref)
    m = np.array(record["matrix"])
    assert record["score"] > 0.9 and np.abs(m[:, 2]).max() < 3 and np.abs(m[:, :2] - np.eye(2)).max() < 0.01
    ebb = real_fixture_root / "EBB" / "test"
    ref = to_float(read_image(ebb / "input" / "4546.jpg"))
    _, record = align(to_float(read_image(ebb / "target" / "4546.jpg")), ref)
    assert record["score"] > 0.9 and np.abs(np.array(record["matrix"])[:, 2]).max() > 2  # really misaligned


def test_unrelated_images_fail_or_score_low(vabd_ref):
    noise = np.random.default_rng(0).random(vabd_ref.shape).astype(np.float32)
    try:
        _, record = align(noise, vabd_ref)
    except RegistrationError as exc:
        assert exc.reason
    else:
        assert record["score"] < 0.5
    flat = np.full((64, 96, 3), 0.5, np.float32)
    with pytest.raises(RegistrationError, match="too few features"):
        align(flat, flat, method="homography")


def test_bad_arguments(vabd_ref):
    with pytest.raises(ValueError, match="method"):
        align(vabd_ref, vabd_ref, method="sift")
    with pytest.raises(ValueError, match="shapes"):
        match_gain(vabd_ref[:10], vabd_ref)


# --- blur-aware registration quality on the real aperture stacks -------------------------------------

VABD_PAIRS = [(scene, folder) for scene in ("0001", "0002", "0003") for folder in ("8", "2_8", "1_8")]
EBB_PAIRS = [("train", "2977"), ("train", "2978"), ("train", "2979"), ("test", "4545"), ("test", "4546"),
             ("test", "4547")]
CLEAR_PASS, CLEAR_FAIL = 0.88, 0.7  # default threshold 0.8; measured: real pairs >= 0.916, moved or pasted <= 0.571


@pytest.fixture(scope="module")
def photo(real_fixture_root):
    """photo(relative path) -> float RGB, decoded once per module."""
    cache: dict[str, np.ndarray] = {}

    def load(rel: str) -> np.ndarray:
        if rel not in cache:
            cache[rel] = to_float(read_image(real_fixture_root / rel))
        return cache[rel]

    return load


def _moved(shot: np.ndarray, box: tuple[int, int, int, int], dx: int) -> np.ndarray:
    """`shot` with the region box = (y0, y1, x0, x1) copied dx px to the right: a moved subject."""
    y0, y1, x0, x1 = box
    out = shot.copy()
    out[y0:y1, x0 + dx:x1 + dx] = shot[y0:y1, x0:x1]
    return out


@pytest.mark.parametrize("scene,folder", VABD_PAIRS)
def test_vabd_pairs_pass_blur_aware_score(photo, scene, folder):
    _, record = align(photo(f"VABD/train/{folder}/{scene}.JPG"), photo(f"VABD/train/input/{scene}.JPG"))
    assert record["score"] >= CLEAR_PASS and record["raw_score"] > 0.5 and record["quality_tiles"] > 300
    assert record["displaced"] is not None and record["displaced"] < 0.01
    assert json.loads(json.dumps(record)) == record  # plain floats and lists for the shard metadata
    low, high = record["matched_blur_px"]
    assert 0 <= low <= high


@pytest.mark.parametrize("split,stem", EBB_PAIRS)
def test_ebb_pairs_pass_blur_aware_score(photo, split, stem):
    _, record = align(photo(f"EBB/{split}/target/{stem}.jpg"), photo(f"EBB/{split}/input/{stem}.jpg"))
    assert record["score"] >= CLEAR_PASS and record["displaced"] < 0.01


@pytest.mark.parametrize("scene", ["0001", "0002"])
def test_raw_correlation_recorded_and_lower_for_f1_8(photo, scene):
    _, record = align(photo(f"VABD/train/1_8/{scene}.JPG"), photo(f"VABD/train/input/{scene}.JPG"))
    assert record["raw_score"] < record["score"] and record["matched_blur_px"][0] > 2  # ~6 px blur matched


def test_heavy_defocus_lowers_raw_correlation_not_score(photo):
    ref = photo("VABD/train/input/0002.JPG")
    disc = np.zeros((121, 121), np.float32)
    cv2.circle(disc, (60, 60), 60, 1.0, -1)
    background = cv2.filter2D(ref, -1, disc / disc.sum(), borderType=cv2.BORDER_REFLECT)
    focus = np.zeros(ref.shape[:2], np.float32)
    focus[300:800, 600:900] = 1.0
    focus = cv2.GaussianBlur(focus, (0, 0), 5)[..., None]
    _, record = align(focus * ref + (1 - focus) * background, ref)
    assert record["raw_score"] < 0.85 and record["score"] > record["raw_score"] + 0.08 and record["score"] >= CLEAR_PASS


def test_swapped_scenes_fail(photo):
    pairs = [("VABD/train/1_8/0001.JPG", "VABD/train/input/0002.JPG"),
             ("EBB/train/target/2977.jpg", "EBB/train/input/2978.jpg"),
             ("EBB/test/target/4546.jpg", "EBB/test/input/4547.jpg")]
    for moving, reference in pairs:
        try:
            _, record = align(photo(moving), photo(reference))
        except RegistrationError:
            pass
        else:
            assert record["score"] < CLEAR_FAIL
        # as shot (the scenes are roughly aligned by framing), the blur-aware score is far below 0.8
        quality = registration_quality(*(cv2.resize(photo(p), (1024, 683), interpolation=cv2.INTER_AREA)
                                         for p in (reference, moving)))
        assert quality["score"] < 0.5 and quality["consistency"] < 0.5


def test_moved_subject_fails(photo):
    ref, shot = photo("VABD/train/input/0003.JPG"), photo("VABD/train/1_8/0003.JPG")
    _, record = align(_moved(shot, (100, 1024, 700, 1300), 40), ref)  # the bust and pedestal, 40 px to the right
    assert record["raw_score"] > 0.8  # the raw correlation alone would have kept this pair
    assert record["score"] < CLEAR_FAIL and record["displaced"] > 0.01 and record["consistency"] > 0.8


@pytest.mark.parametrize("scene", ["0001", "0003"])
def test_pasted_block_fails(photo, scene):
    ref, shot = photo(f"VABD/train/input/{scene}.JPG"), photo(f"VABD/train/1_8/{scene}.JPG").copy()
    shot[450:962, 100:612] = ref[100:612, 900:1412]  # a 512 px block of the reference, pasted elsewhere
    _, record = align(shot, ref)
    assert record["raw_score"] > 0.8 and record["score"] < 0.5 and record["displaced"] > 0.02


def test_pair_reject_reason_names_scores(tmp_path, photo, real_fixture_root):
    shot = photo("VABD/train/1_8/0003.JPG")
    write_image(tmp_path / "moved.png", from_float(_moved(shot, (100, 1024, 700, 1300), 40), 8))
    task = Task("vabd", "train", "0003", "vabd/train/0003/f1_8",
                {"blur": str(tmp_path / "moved.png"), "sharp": str(real_fixture_root / "VABD/train/input/0003.JPG")},
                {"f_number": 1.8}, {"register": "ecc", "motion": "affine", "gain": True})
    with pytest.raises(RejectError, match=r"registration score 0\.\d\d < 0\.8 \(raw correlation 0\.9\d, \d+% of the "
                                          r"textured area displaced\); if the two show the same view \(look at them\), "
                                          r"--min-align-score 0\.\d\d keeps it") as refused:
        load_pair(task, IngestOptions())
    keeps = float(re.search(r"--min-align-score (0\.\d\d) keeps it", str(refused.value)).group(1))
    assert load_pair(task, IngestOptions(min_align_score=keeps)) is not None  # the value named keeps the pair


def test_registration_quality_identity_flat_and_shapes(vabd_ref):
    same = registration_quality(vabd_ref, vabd_ref)
    assert same["score"] == pytest.approx(1.0) and same["displaced"] == 0.0 and same["matched_blur"] == [0.0, 0.0]
    flat = np.full((64, 96), 0.5, np.float32)
    assert registration_quality(flat, flat)["score"] is None
    with pytest.raises(ValueError, match="shapes"):
        registration_quality(flat, flat[:32])


@pytest.mark.parametrize(("scale", "angle", "needle"),
                         [(1.12, 0.0, r"scale 1\.1\d\d"), (1.0, 6.0, r"rotation -?[56]\.\d\d deg")])
def test_a_warp_beyond_a_tripod_bracket_is_refused_however_well_it_fits(photo, scale, angle, needle):
    ref = photo("VABD/train/input/0002.JPG")
    h, w = ref.shape[:2]
    shot = cv2.warpAffine(photo("VABD/train/2_8/0002.JPG"), cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale),
                          (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    with pytest.raises(RegistrationError, match=rf"implausible warp for a tripod bracket \({needle}"):
        align(shot, ref)


def test_real_brackets_move_as_tripod_brackets_do(photo):
    from defocuskit.data.bracket import tripod_motion

    for moving, reference in (("EBB/train/target/2977.jpg", "EBB/train/input/2977.jpg"),
                              ("VABD/train/1_8/0001.JPG", "VABD/train/input/0001.JPG")):
        ref = photo(reference)
        _, record = align(photo(moving), ref)  # accepted: within the bracket's limits
        motion = tripod_motion(np.array(record["matrix"]), (ref.shape[1], ref.shape[0]))
        assert abs(motion["scale"] - 1) < 0.01 and abs(motion["rotation_deg"]) < 1.0 and motion["shift"] < 0.01
