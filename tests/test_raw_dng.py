"""--raw-dir on real DNG files as a camera writes them (tests/dng_files.py: a 16-bit RGGB mosaic with a black level,
a 14-bit white level, a real camera's colour matrix and its raw response to neutral grey, EXIF in a sub-IFD):
what LibRaw decodes them to (level, neutrality, linearity, orientation), and an aperture bracket of them through
`defocuskit ingest --raw-dir` as the README shows it, bad files among them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dng_files import CANON_70D_MATRIX, DAYLIGHT_NEUTRAL, camera_mosaic, write_dng
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.reader import iter_samples
from defocuskit.io import raw as raw_module
from defocuskit.io.images import srgb_to_linear, to_float
from defocuskit.io.raw import decode_raw, read_exif

pytest.importorskip("pidng.core")

BLACK, WHITE = 512, 16383  # a 14-bit sensor's levels
CAMERA = {"black": BLACK, "white": WHITE, "neutral": DAYLIGHT_NEUTRAL, "color_matrix": CANON_70D_MATRIX}
PATCH = (slice(32, 64), slice(80, 112))  # inside the flat grey card of `_scene`, 8 px from its edges


def _dng(path: Path, linear: np.ndarray, **tags) -> Path:
    """A DNG of the camera above recording `linear` (scene light, 1.0: the white level)."""
    return write_dng(path, camera_mosaic(linear, DAYLIGHT_NEUTRAL, BLACK, WHITE), **{**CAMERA, **tags})


def _linear(rgb16: np.ndarray) -> np.ndarray:
    return srgb_to_linear(to_float(rgb16))


def test_a_dng_decodes_to_the_light_it_recorded(tmp_path):
    """Black level subtracted, white level at full scale, the camera's white balance applied (a grey card comes
    out grey though red and blue read at half of green), sRGB tone curve once: linear light back as recorded."""
    grey = _linear(decode_raw(_dng(tmp_path / "grey.dng", np.full((64, 96, 3), 0.18))))
    assert grey.shape == (64, 96, 3)
    np.testing.assert_allclose(grey.mean(axis=(0, 1)), 0.18, rtol=0.01)
    ramp = np.repeat(np.linspace(0.05, 0.6, 96)[None, :, None], 64, axis=0).repeat(3, axis=2)
    out = _linear(decode_raw(_dng(tmp_path / "ramp.dng", ramp)))
    np.testing.assert_allclose(out[8:-8, 8:-8], ramp[8:-8, 8:-8], rtol=0.02)  # linear, neutral, no brightening
    exif = read_exif(tmp_path / "ramp.dng")
    assert (exif["f_number"], exif["exposure_s"], exif["iso"], exif["camera"]) == (4.0, 1 / 250, 200, "Canon EOS 70D")


@pytest.mark.parametrize("orientation, bright_at", [(1, (32, 95)), (3, (32, 0)), (6, (95, 32)), (8, (0, 32))])
def test_a_dng_is_turned_as_its_orientation_says(tmp_path, orientation, bright_at):
    """Orientation 6 (the camera held right side down) comes out portrait, the frame's right side at the bottom."""
    ramp = np.repeat(np.linspace(0.05, 0.6, 96)[None, :, None], 64, axis=0).repeat(3, axis=2)
    out = _linear(decode_raw(_dng(tmp_path / "o.dng", ramp, orientation=orientation))).mean(axis=2)
    assert out.shape == ((64, 96) if orientation in (1, 3) else (96, 64))
    assert out[bright_at] == pytest.approx(0.6, rel=0.03)


def test_a_dngs_brightest_pixel_does_not_set_its_scale(tmp_path):
    """LibRaw's default moves the white level down to a shot's brightest pixel when that lies within 75 % of it,
    so the same grey card decoded 19 % brighter in a shot with a glint at 84 % of white than in one without
    (and read the unclipped glint as clipped). A DNG states its white level: every shot is decoded against it."""
    card = np.full((64, 96, 3), 0.18)
    glint = card.copy()
    glint[8:16, 8:16] = 0.84
    plain = _linear(decode_raw(_dng(tmp_path / "plain.dng", card)))[PATCH].mean()
    lit = _linear(decode_raw(_dng(tmp_path / "glint.dng", glint)))
    assert lit[PATCH].mean() == pytest.approx(plain, rel=0.005) == pytest.approx(0.18, rel=0.01)
    assert lit[10:14, 10:14].mean() == pytest.approx(0.84, rel=0.02)


def _scene() -> np.ndarray:
    """128 x 96 scene light: a smooth colour texture (0.05-0.35 of white), a flat grey card (0.18) and a bright
    wall (0.42), both wide enough to stay flat at every aperture's blur."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((96, 128, 3)), (0, 0), 2.0)
    scene = 0.05 + 0.3 * (tex - tex.min()) / (tex.max() - tex.min())
    scene[24:72, 72:120] = 0.18
    scene[76:96, 0:40] = 0.42
    return scene


# an aperture bracket shot in manual exposure: f-number, Gaussian blur (px) of the wider apertures, shutter (s)
BRACKET = {"IMG_0001": (16.0, 0.0, (1, 100)), "IMG_0002": (5.6, 0.8, (1, 200)), "IMG_0003": (2.8, 1.5, (1, 50)),
           "IMG_0004": (1.8, 2.2, (1, 100))}


def _bracket(photos: Path) -> Path:
    """BRACKET's DNGs of `_scene` in `photos`, the light each recorded scaled by its shutter (1/100 s: as is)."""
    scene = _scene()
    for i, (stem, (f_number, sigma, shutter)) in enumerate(BRACKET.items()):
        light = scene if not sigma else cv2.GaussianBlur(scene, (0, 0), sigma)
        _dng(photos / f"{stem}.dng", light * shutter[0] / shutter[1] * 100, f_number=f_number, exposure=shutter,
             when=f"2024:05:01 10:00:0{i}")
    return photos


def _ingest(photos: Path, out: Path) -> str:
    """`defocuskit ingest --raw-dir photos --out out` as the README shows it (in one process); its output."""
    result = CliRunner().invoke(app, ["ingest", "--raw-dir", str(photos), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_a_dng_bracket_through_ingest_raw_dir(tmp_path):
    """Four DNGs of one scene (f/16 ... f/1.8, the shutter changed between them), a DNG cut short by an interrupted
    copy and one without FNumber (a manual lens): `defocuskit ingest --raw-dir photos --out shards` pairs the
    three wider shots with the f/16 one, each gain-matched by the exposure its EXIF records; the two bad files
    get one reject line each, naming them, and nothing else of theirs is written."""
    photos = _bracket(tmp_path / "photos" / "bench")
    whole = (photos / "IMG_0002.dng").read_bytes()
    (photos / "IMG_0005.dng").write_bytes(whole[:len(whole) * 6 // 10])
    _dng(photos / "IMG_0006.dng", _scene(), f_number=None)
    out = tmp_path / "shards"
    _ingest(tmp_path / "photos", out)
    samples = {s["key"]: s for s in iter_samples(out)}
    assert sorted(samples) == ["raw/bench/IMG_0001", "raw/bench/IMG_0002", "raw/bench/IMG_0003", "raw/bench/IMG_0004"]
    ref = samples.pop("raw/bench/IMG_0001")
    assert ref["blur"] is None and ref["meta"]["f_number"] == ref["meta"]["ref_f_number"] == 16.0
    ref_card = _linear(ref["sharp"])[PATCH].mean(axis=(0, 1))
    np.testing.assert_allclose(ref_card, 0.18, rtol=0.01)  # the reference as shot: the card's own level
    for key, sample in samples.items():
        meta, (f_number, _, shutter) = sample["meta"], BRACKET[key.rsplit("/", 1)[1]]
        assert (meta["f_number"], meta["ref_f_number"], meta["bit_depth"]) == (f_number, 16.0, 16)
        assert meta["origin"] == [f"bench/{key.rsplit('/', 1)[1]}.dng", "bench/IMG_0001.dng"]
        assert sample["blur"].shape == sample["sharp"].shape == (96, 128, 3) and sample["blur"].dtype == np.uint16
        assert meta["exposure_s"] == pytest.approx(shutter[0] / shutter[1])
        assert meta["gain"] == pytest.approx(0.01 / meta["exposure_s"], rel=0.02)  # the shutter's ratio undone
        np.testing.assert_allclose(_linear(sample["blur"])[PATCH].mean(axis=(0, 1)), ref_card, rtol=0.02)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {Path(r["file"]).name: r["reason"] for r in rejects}
    assert len(rejects) == 2 and all("\n" not in r for r in reasons.values())
    assert reasons["IMG_0005.dng"].startswith("unreadable file or EXIF header: LibRaw cannot open it: corrupt, "
                                              "truncated or not a RAW file")
    assert reasons["IMG_0006.dng"].startswith("f-number unknown: no EXIF FNumber")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rejects"] == 2
    assert manifest["options"]["raw_decode"] == {"dng": json.loads(json.dumps(raw_module.DNG_SETTINGS))}
    assert manifest["options"]["raw_decode"]["dng"]["adjust_maximum_thr"] == 0.0
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".tar", ".partial")) == \
        [s["name"] for s in manifest["shards"]]  # every shard whole and listed, no partial one left


def test_a_bad_dng_with_strict_stops_naming_it_and_writes_nothing(tmp_path):
    photos = tmp_path / "photos" / "bench"
    for stem, f_number in (("IMG_0001", 16.0), ("IMG_0002", 2.8)):
        _dng(photos / f"{stem}.dng", _scene(), f_number=f_number)
    whole = (photos / "IMG_0002.dng").read_bytes()
    (photos / "IMG_0002.dng").write_bytes(whole[:len(whole) // 2])
    out = tmp_path / "shards"
    result = CliRunner().invoke(app, ["ingest", "--raw-dir", str(tmp_path / "photos"), "--out", str(out),
                                      "--workers", "0", "--strict"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {photos / 'IMG_0002.dng'}: ") and "truncated" in lines[0]
    assert not list(out.glob("*.tar*")) and not (out / "manifest.json").exists()


def test_dng_shards_written_with_the_old_settings_are_decoded_again(tmp_path, monkeypatch):
    """A folder ingested before DNGs were decoded against their white level (LibRaw's default for them too) holds
    f/2.8's gain 0.42 for the shutter's 0.5; running the same command again decodes its DNGs anew rather than
    keeping those shards as done."""
    photos = _bracket(tmp_path / "photos" / "bench")
    out = tmp_path / "shards"
    monkeypatch.setattr(raw_module, "DNG_SETTINGS", raw_module.RAW_SETTINGS)  # what ingest did before
    _ingest(photos.parent, out)
    gain = {s["key"]: s["meta"]["gain"] for s in iter_samples(out)}
    assert gain["raw/bench/IMG_0003"] == pytest.approx(0.42, abs=0.01)
    monkeypatch.undo()
    assert "1 shards written, 0 already done" in _ingest(photos.parent, out)
    gain = {s["key"]: s["meta"]["gain"] for s in iter_samples(out)}
    assert gain["raw/bench/IMG_0003"] == pytest.approx(0.5, rel=0.02)
    assert "0 shards written, 1 already done" in _ingest(photos.parent, out)
