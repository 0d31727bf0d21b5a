"""RAW decoding and EXIF (DNGs written with pidng carrying real EXIF), and the --raw-dir source."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from dng_files import mosaic_rggb

from defocuskit.data.metadata import META_KEYS
from defocuskit.data.register import match_gain
from defocuskit.data.sample import IngestOptions, Rejected, RejectError, Task
from defocuskit.data.sources import raw as raw_source
from defocuskit.io.formats import ImageError
from defocuskit.io.images import read_image, srgb_to_linear, to_float
from defocuskit.io.raw import RAW_SETTINGS, decode_raw, read_exif

# real VABD shots of one scene, stored as DNG with these EXIF f-numbers and exposure scales (linear)
BRACKET = {"input": (16.0, 1.0, "10:00:00"), "2_8": (2.8, 0.5, "10:00:05"), "1_8": (1.8, 1.0, "10:00:09")}


def _real_rgb(real_fixture_root: Path, folder: str, size=(192, 128)) -> np.ndarray:
    bgr = cv2.imread(str(real_fixture_root / "VABD" / "train" / folder / "0001.JPG"))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float64) / 255.0


@pytest.fixture
def dng_bracket(tmp_path, dng_writer, real_fixture_root) -> Path:
    """photos/scene_a/IMG_000{1,2,3}.dng: f/16 (reference), f/2.8 one stop darker, f/1.8."""
    folder = tmp_path / "photos" / "scene_a"
    for i, (name, (f_number, scale, clock)) in enumerate(BRACKET.items(), 1):
        cfa = mosaic_rggb(_real_rgb(real_fixture_root, name), exposure=0.7 * scale)
        dng_writer(folder / f"IMG_000{i}.dng", cfa, f_number=f_number, when=f"2024:05:01 {clock}")
    return tmp_path / "photos"


def test_read_exif_from_dng(dng_bracket):
    exif = read_exif(dng_bracket / "scene_a" / "IMG_0002.dng")
    assert exif["f_number"] == pytest.approx(2.8)
    assert exif["exposure_s"] == pytest.approx(1 / 250)
    assert exif["iso"] == 200
    assert exif["focal_length_mm"] == pytest.approx(50.0)
    assert exif["camera"] == "Canon EOS 70D"
    assert exif["lens"] == "EF50mm f/1.8 STM"
    assert exif["datetime"] == datetime(2024, 5, 1, 10, 0, 5)


def test_decode_raw_fixed_settings(dng_bracket, dng_writer, real_fixture_root, tmp_path):
    assert RAW_SETTINGS["use_camera_wb"] and RAW_SETTINGS["no_auto_bright"] and RAW_SETTINGS["output_bps"] == 16
    a = decode_raw(dng_bracket / "scene_a" / "IMG_0001.dng")
    b = read_image(dng_bracket / "scene_a" / "IMG_0002.dng")  # read_image routes RAW through decode_raw
    assert a.dtype == np.uint16 and a.shape == (128, 192, 3)
    assert b.dtype == np.uint16 and b.shape == a.shape
    assert 1000 < a.mean() < 60000
    # no auto-brightening: one stop less exposure decodes to half the linear intensity
    content = _real_rgb(real_fixture_root, "input")
    bright = decode_raw(dng_writer(tmp_path / "e1.dng", mosaic_rggb(content, exposure=0.6)))
    dark = decode_raw(dng_writer(tmp_path / "e2.dng", mosaic_rggb(content, exposure=0.3)))
    ratio = srgb_to_linear(to_float(bright)).mean() / srgb_to_linear(to_float(dark)).mean()
    assert ratio == pytest.approx(2.0, rel=0.05)
    np.testing.assert_array_equal(a, decode_raw(dng_bracket / "scene_a" / "IMG_0001.dng"))  # deterministic


def test_decode_raw_bad_files(tmp_path, dng_bracket):
    text = tmp_path / "notes.CR2"
    text.write_text("not a raw file\n")
    with pytest.raises(ImageError, match="notes.CR2"):
        decode_raw(text)
    with pytest.raises(ImageError, match="notes.CR2"):
        read_exif(text)
    good = (dng_bracket / "scene_a" / "IMG_0001.dng").read_bytes()
    stub = tmp_path / "stub.dng"
    stub.write_bytes(good[:64])
    with pytest.raises(ImageError, match="stub.dng"):
        read_exif(stub)
    fake_jpg = tmp_path / "fake.jpg"
    fake_jpg.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        read_exif(fake_jpg)


def test_raw_source_bracket(dng_bracket, real_fixture_root):
    opts = IngestOptions(split_by="train")
    tasks = list(raw_source.list_tasks(dng_bracket, opts))
    assert all(isinstance(t, Task) for t in tasks)
    assert [t.key for t in tasks] == ["raw/scene_a/IMG_0001", "raw/scene_a/IMG_0002", "raw/scene_a/IMG_0003"]
    ref_task, *pair_tasks = tasks
    assert "blur" not in ref_task.files and ref_task.meta["f_number"] == pytest.approx(16.0)
    assert [t.meta["f_number"] for t in pair_tasks] == [2.8, 1.8]  # EXIF 28/10 and 18/10
    assert all(t.meta["ref_f_number"] == pytest.approx(16.0) and t.split == "train" for t in tasks)
    assert all(t.files["sharp"].endswith("IMG_0001.dng") for t in tasks)

    samples = [s for t in tasks for s in raw_source.load(t, opts)]
    sharp_only, *pairs = samples
    assert sharp_only.blur is None and sharp_only.sharp.dtype == np.uint16
    for sample, task in zip(pairs, pair_tasks):
        assert set(sample.meta) == set(META_KEYS)
        assert sample.meta["f_number"] == task.meta["f_number"]
        assert sample.blur.dtype == np.uint16 and sample.blur.shape == sample.sharp.shape == (128, 192, 3)
        assert sample.meta["bit_depth"] == 16 and sample.meta["camera"] == "Canon EOS 70D"
        assert sample.meta["align"]["method"] in ("ecc", "homography") and sample.meta["align"]["score"] >= 0.8
        assert sample.meta["origin"] == [f"scene_a/{Path(task.files['blur']).name}", "scene_a/IMG_0001.dng"]
    # the gain undoes the recorded stop: compare with the photos' own exposure ratio (JPEG, linear light)
    gains = {s.meta["f_number"]: s.meta["gain"] for s in pairs}
    ref = _real_rgb(real_fixture_root, "input").astype(np.float32)
    for f_number, folder in [(2.8, "2_8"), (1.8, "1_8")]:
        _, photo_gain = match_gain(_real_rgb(real_fixture_root, folder).astype(np.float32), ref)
        assert gains[f_number] == pytest.approx(photo_gain / BRACKET[folder][1], rel=0.1)
    assert gains[2.8] > 1.2 * photo_gain


def test_raw_source_bad_inputs(tmp_path, dng_writer, dng_bracket):
    scene = dng_bracket / "scene_a"
    (scene / "broken.CR2").write_text("a text file, not a raw")
    (scene / "broken2.jpg").write_text("a text file, not a jpeg")
    cfa = mosaic_rggb(np.full((64, 96, 3), 0.4))
    dng_writer(scene / "IMG_0009.dng", cfa, f_number=None)
    good = (scene / "IMG_0002.dng").read_bytes()
    (scene / "IMG_0004.dng").write_bytes(good[:64])  # truncated inside the header
    items = list(raw_source.list_tasks(dng_bracket, IngestOptions(split_by="train")))
    rejected = {Path(r.file).name: r.reason for r in items if isinstance(r, Rejected)}
    assert set(rejected) == {"broken.CR2", "broken2.jpg", "IMG_0009.dng", "IMG_0004.dng"}
    assert rejected["IMG_0009.dng"].startswith("f-number unknown: no EXIF FNumber")
    assert "LibRaw" in rejected["broken.CR2"] and "not an image" in rejected["broken2.jpg"]
    assert len([t for t in items if isinstance(t, Task)]) == 3


def test_raw_truncated_dng(tmp_path, dng_writer):
    folder = tmp_path / "photos" / "s"
    rgb = np.random.default_rng(1).random((128, 192, 3))
    dng_writer(folder / "a.dng", mosaic_rggb(rgb), f_number=16)
    path = dng_writer(folder / "b.dng", mosaic_rggb(rgb), f_number=2)
    full = path.read_bytes()
    opts = IngestOptions(split_by="train")
    pair = next(t for t in raw_source.list_tasks(tmp_path / "photos", opts) if "blur" in t.files)
    path.write_bytes(full[:4096])  # header intact, pixel data cut off (e.g. an interrupted copy)
    with pytest.raises(ImageError, match="truncated"):
        decode_raw(path)
    with pytest.raises(RejectError, match="b.dng") as info:  # truncated after listing: rejected at load
        raw_source.load(pair, opts)
    assert "truncated" in info.value.reason
    rejected = [r for r in raw_source.list_tasks(tmp_path / "photos", opts) if isinstance(r, Rejected)]
    assert [Path(r.file).name for r in rejected] == ["b.dng", "a.dng"]  # LibRaw checks the size when listing
    assert rejected[1].reason == "scene 's' has one usable shot: no pair to make"  # a.dng is left alone


def test_raw_prefers_raw_over_jpeg_and_rejects_single_shot_scene(tmp_path, dng_writer):
    root = tmp_path / "photos"
    dng_writer(root / "one" / "DSC_1.dng", mosaic_rggb(np.full((64, 96, 3), 0.5)), f_number=5.6)
    cv2.imwrite(str(root / "one" / "DSC_1.jpg"), np.full((64, 96, 3), 128, np.uint8))
    items = list(raw_source.list_tasks(root, IngestOptions(split_by="test")))
    # the JPEG twin is not used; the single f/5.6 shot is no all-in-focus reference and has no pair
    assert [(Path(r.file).name, r.reason) for r in items] == [
        ("DSC_1.jpg", "another file of the same shot is used: DSC_1.dng"),
        ("DSC_1.dng", "scene 'one' has one usable shot: no pair to make")]
    dng_writer(root / "one" / "DSC_2.dng", mosaic_rggb(np.full((64, 96, 3), 0.4)), f_number=2.0)
    tasks = [t for t in raw_source.list_tasks(root, IngestOptions(split_by="test")) if isinstance(t, Task)]
    assert [t.files for t in tasks] == [{"sharp": str(root / "one" / "DSC_1.dng")},
                                        {"blur": str(root / "one" / "DSC_2.dng"), "sharp": str(root / "one" / "DSC_1.dng")}]
    assert tasks[0].split == "test" and tasks[0].meta["f_number"] == pytest.approx(5.6)
    (sample,) = raw_source.load(tasks[0], IngestOptions())
    assert sample.blur is None and sample.sharp.dtype == np.uint16


def test_raw_scene_gap_and_hash_split(tmp_path, dng_writer):
    root = tmp_path / "photos"
    flat = mosaic_rggb(np.full((64, 96, 3), 0.5))
    for name, f_number, clock in [("a", 16, "10:00:00"), ("b", 2, "10:00:10"), ("c", 8, "11:00:00"), ("d", 4, "11:00:03")]:
        dng_writer(root / "day" / f"{name}.dng", flat, f_number=f_number, when=f"2024:05:01 {clock}")
    tasks = list(raw_source.list_tasks(root, IngestOptions(scene_gap_s=60)))
    assert [(t.scene, t.key, "blur" in t.files) for t in tasks] == [
        ("day/t00", "raw/day/t00/a", False), ("day/t00", "raw/day/t00/b", True),
        ("day/t01", "raw/day/t01/c", False), ("day/t01", "raw/day/t01/d", True)]
    assert tasks[3].meta["ref_f_number"] == pytest.approx(8.0)
    # scene-hash splits are deterministic and follow test_fraction
    assert {t.split for t in raw_source.list_tasks(root, IngestOptions(test_fraction=1.0))} == {"test"}
    assert {t.split for t in raw_source.list_tasks(root, IngestOptions(test_fraction=0.0))} == {"train"}
    again = [t.split for t in raw_source.list_tasks(root, IngestOptions(scene_gap_s=60))]
    assert again == [t.split for t in tasks]


def test_a_png_without_exif_reads_quietly(tmp_path, caplog):
    import cv2

    from defocuskit.io.raw import read_exif

    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((8, 8, 3), np.uint8))
    assert read_exif(tmp_path / "p.png")["f_number"] is None
    assert not [r for r in caplog.records if r.name == "exifread" and r.levelno >= 30]  # "PNG file does not have
    # exif data." went to stderr on every PNG input: having no EXIF is no fault
