"""The sensor width behind `--coc fnumber`: the metadata key `sensor_width_mm`, written by the sources that know it
(the built-in synthetic set, camera EXIF) and used by optics.coc_from_metadata; 36 mm (full frame) where unknown.

The oracle is the textbook thin lens: a background at infinity seen through a lens of focal length f at f/N
focused at s has a blur circle c = f^2 / (N (s - f)) on the sensor, c x image width / sensor width pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from defocuskit.data import metadata
from defocuskit.data.reader import decode_sample
from defocuskit.data.render import builtin_scene, scene_camera
from defocuskit.data.sample import IngestOptions
from defocuskit.data.shards import encode_members
from defocuskit.data.sources import pairs, synthetic
from defocuskit.data.sources.fnumbers import GivenFNumbers
from defocuskit.imaging import optics
from defocuskit.inference.coc_source import CocSource
from defocuskit.inference.inputs import f_number_meta as _f_number_meta
from defocuskit.io.raw import read_exif

OPTS = IngestOptions(synthetic_size=48, synthetic_f_numbers=(2.8,))
# EXIF tags (EXIF 2.3): the Exif sub-IFD pointer, FNumber, FocalLength, FocalLengthIn35mmFilm, PixelXDimension,
# FocalPlaneXResolution, FocalPlaneResolutionUnit
EXIF_IFD, F_NUMBER, FOCAL, FOCAL_35, PIXEL_X, PLANE_X, PLANE_UNIT = (
    0x8769, 0x829D, 0x920A, 0xA405, 0xA002, 0xA20E, 0xA210)


def thin_lens_px(f_number: float, focal_mm: float, focus_m: float, sensor_mm: float, width_px: int) -> float:
    """The oracle: CoC (pixels) of a background at infinity, c = f^2 / (N (s - f)) over the pixel pitch."""
    c_mm = focal_mm ** 2 / (f_number * (focus_m * 1000.0 - focal_mm))
    return c_mm * width_px / sensor_mm


def _decoded(sample) -> dict:
    """A sample as a reader gets it back from its shard: metadata through the stored JSON."""
    members = encode_members(sample.sharp, sample.blur, sample.coc, metadata.to_stored(sample.meta),
                             coc_signed=True)
    return decode_sample({"__key__": sample.key, **members})


def test_the_brief_numbers_an_aps_c_shot_and_the_full_frame_default():
    meta = {"f_number": 2.8, "focal_length_mm": 50.0, "focus_distance_m": 2.0}
    assert optics.coc_from_metadata({**meta, "sensor_width_mm": 23.5}, 1000) == pytest.approx(19.48, abs=0.01)
    assert optics.coc_from_metadata(meta, 1000) == pytest.approx(12.72, abs=0.01)  # unknown: 36 mm
    assert optics.coc_from_metadata({**meta, "sensor_width_mm": None}, 1000) == optics.coc_from_metadata(meta, 1000)


def test_the_synthetic_sets_fnumber_coc_is_the_thin_lens_coc_of_its_own_camera():
    tasks = {t.key: t for t in synthetic.list_tasks(Path("builtin"), OPTS)}
    for scene in ("motorcycle_left", "astronaut"):
        (sample,) = synthetic.load(tasks[f"synthetic/{scene}/f2_8"], OPTS)
        decoded = _decoded(sample)
        meta, image = decoded["meta"], decoded["blur"]
        camera = scene_camera(builtin_scene(scene, OPTS.synthetic_size, OPTS.seed))
        width = image.shape[1]
        sensor_mm = camera["pixel_pitch_um"] * width / 1000.0  # the pitch the renderer drew coc.png with
        want = thin_lens_px(2.8, camera["focal_length_mm"], camera["focus_distance_m"], sensor_mm, width)
        got = CocSource.create("fnumber")(image.astype(np.float32) / 65535.0, meta, name=scene)
        assert got.shape == image.shape[:2]
        assert float(got[0, 0]) == pytest.approx(want, rel=1e-3), scene
        assert meta["sensor_width_mm"] == pytest.approx(sensor_mm)
        # and it bounds the rendered map from above: no point of the finite-depth scene blurs more than infinity
        assert float(np.abs(decoded["coc"]).max()) <= want * 1.01


def _jpeg(path: Path, *, focal: float, f_number: float = 2.8, focal_35: int | None = None,
          plane: tuple[float, int, int] | None = None) -> Path:
    """A small JPEG with EXIF FNumber, FocalLength and FocalLengthIn35mmFilm or the focal-plane resolution
    (pixels per unit, FocalPlaneResolutionUnit, PixelXDimension) where given."""
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[F_NUMBER] = TiffImagePlugin.IFDRational(round(f_number * 10), 10)
    ifd[FOCAL] = TiffImagePlugin.IFDRational(round(focal * 10), 10)
    if focal_35 is not None:
        ifd[FOCAL_35] = focal_35
    if plane is not None:
        ifd[PLANE_X] = TiffImagePlugin.IFDRational(round(plane[0] * 1000), 1000)
        ifd[PLANE_UNIT] = plane[1]
        ifd[PIXEL_X] = plane[2]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(path, "JPEG", quality=95,
                                                                            exif=exif.tobytes())
    return path


def test_the_sensor_width_from_focal_length_in_35mm_film(tmp_path):
    path = _jpeg(tmp_path / "aps-c.jpg", focal=18.0, focal_35=29)  # an 18 mm lens framing as 29 mm on full frame
    exif = read_exif(path)
    assert exif["sensor_width_mm"] == pytest.approx(36.0 * 18.0 / 29.0, abs=1e-3)
    meta = _f_number_meta(path, None)  # what `deblur --coc fnumber` reads of a file
    want = thin_lens_px(2.8, 18.0, optics.DEFAULT_FOCUS_DISTANCE_M, 36.0 * 18.0 / 29.0, 48)
    assert optics.coc_from_metadata(meta, 48) == pytest.approx(want, rel=1e-3)
    # a --pairs pair keeps it in the shard's metadata
    sharp = _jpeg(tmp_path / "sharp.jpg", focal=18.0, f_number=16.0, focal_35=29)
    listed = pairs.shot_meta(path, sharp, tmp_path, GivenFNumbers())
    assert listed["sensor_width_mm"] == pytest.approx(36.0 * 18.0 / 29.0, abs=1e-3)


def test_the_sensor_width_from_the_focal_plane_resolution(tmp_path):
    per_inch = 5472 / 22.5 * 25.4  # a Canon EOS 70D: 5472 px over 22.5 mm
    path = _jpeg(tmp_path / "70d.jpg", focal=50.0, plane=(per_inch, 2, 5472))
    assert read_exif(path)["sensor_width_mm"] == pytest.approx(22.5, abs=1e-3)
    per_mm = _jpeg(tmp_path / "mm.jpg", focal=50.0, plane=(5472 / 22.5, 4, 5472))
    assert read_exif(per_mm)["sensor_width_mm"] == pytest.approx(22.5, abs=1e-3)


def test_no_or_implausible_tags_leave_the_width_unknown(tmp_path):
    assert read_exif(_jpeg(tmp_path / "none.jpg", focal=50.0))["sensor_width_mm"] is None
    assert read_exif(_jpeg(tmp_path / "zero.jpg", focal=50.0, focal_35=0))["sensor_width_mm"] is None
    # 5472 px at 10 px per inch: a sensor 14 m wide is a wrong tag, not a camera
    assert read_exif(_jpeg(tmp_path / "odd.jpg", focal=50.0, plane=(10.0, 2, 5472)))["sensor_width_mm"] is None


def test_an_old_shard_without_the_key_reads_as_unknown_and_gets_36_mm():
    stored = metadata.to_stored(metadata.empty_meta(source="dpdd", split="test", scene="a", f_number=2.8,
                                                    focal_length_mm=50.0, focus_distance_m=2.0, bit_depth=8))
    del stored["sensor_width_mm"]  # as a shard written before the key existed
    sharp = np.full((8, 40, 3), 100, np.uint8)
    members = encode_members(sharp, sharp, None, {})
    members["json"] = json.dumps(stored).encode()
    meta = decode_sample({"__key__": "dpdd/a", **members})["meta"]
    assert set(meta) == set(metadata.SCHEMA) and meta["sensor_width_mm"] is None
    got = CocSource.create("fnumber")(sharp.astype(np.float32) / 255.0, meta, name="a")
    assert float(got[0, 0]) == pytest.approx(thin_lens_px(2.8, 50.0, 2.0, 36.0, 40), rel=1e-6)
    stored["sensor_width_mm"] = -1.0  # format 2's unknown
    assert metadata.to_python(stored)["sensor_width_mm"] is None


def test_a_metric_render_records_its_sensor_width_and_a_relative_one_none(tmp_path):
    from test_render_source import make_folder, opts, samples

    from defocuskit.data.ingest import run_ingest

    root = make_folder(tmp_path / "photos")
    run_ingest({"render": root}, opts(tmp_path / "metric", render_depth_kind="metric", render_metric_scale=10.0,
                                      render_sensor_width_mm=23.5, render_coc_scale=None), progress=False)
    metric = samples(tmp_path / "metric").values()
    assert metric and {s["meta"]["sensor_width_mm"] for s in metric} == {23.5}
    run_ingest({"render": root}, opts(tmp_path / "relative"), progress=False)
    assert {s["meta"]["sensor_width_mm"] for s in samples(tmp_path / "relative").values()} == {None}


def test_deblur_takes_the_camera_for_coc_fnumber_from_its_options(tmp_path):
    """`deblur --coc fnumber --sensor-width/--focal-length/--focus-distance`: the CoC is the thin lens's of the camera
    given (an image without EXIF had the 36 mm, 50 mm, 2 m default and nothing to change it); the focus gate weighs
    the model's change by min(1, CoC / 3), so the change scales with the CoC the camera gives."""
    from test_infer import _export_nafnet
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.io.images import read_image, write_image

    rng = np.random.default_rng(0)
    image = (rng.random((40, 60, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "x.png", image)
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors", identity=False)
    runner = CliRunner()

    def deblur(name: str, *camera: str) -> tuple[np.ndarray, dict]:
        args = ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / name),
                "--coc", "fnumber", "--f-number", "2.8", "--focus-gate", "3", "--gate-smooth", "0", *camera]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / name / "deblur.json").read_text())["images"][0]
        return read_image(tmp_path / name / "x.png").astype(float) - image, record

    full, record = deblur("default")
    assert record["camera"] == {"focal_length_mm": None, "sensor_width_mm": None, "focus_distance_m": None}
    small, record = deblur("small", "--sensor-width", "12", "--focal-length", "50", "--focus-distance", "2")
    assert record["camera"] == {"focal_length_mm": 50.0, "sensor_width_mm": 12.0, "focus_distance_m": 2.0}
    # the CoC source's record says the same camera (it said none was given: null for each option)
    assert record["coc"]["camera"]["given"] == {"sensor_width_mm": 12.0, "focal_length_mm": 50.0,
                                                "focus_distance_m": 2.0}
    coc_full, coc_small = thin_lens_px(2.8, 50, 2, 36, 60), thin_lens_px(2.8, 50, 2, 12, 60)  # 0.76 and 2.29 px
    assert coc_small < 3
    ratio = np.abs(small).sum() / np.abs(full).sum()
    assert ratio == pytest.approx(coc_small / coc_full, rel=0.1)  # 3: a third of the sensor, three times the CoC
    for bad, words in ((["--sensor-width", "0.1"], "--sensor-width 0.1: not a sensor width a camera has"),
                       (["--focal-length", "200", "--focus-distance", "0.1"], "--focus-distance 0.1: the focus"),
                       (["--focal-length", "85"], None)):
        result = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out",
                                     str(tmp_path / "bad"), "--coc", "edge", "--focus-gate", "3", *bad])
        assert result.exit_code == 2, result.output
        assert (words or "--focal-length: the camera of --coc fnumber's thin-lens CoC; with --coc edge it would "
                "not be used") in result.output, result.output
        assert not (tmp_path / "bad").exists()
