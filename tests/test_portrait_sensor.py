"""A portrait photo's `sensor_width_mm`: the camera's sensor width (its long side, from EXIF or the camera's
specification) spans a photo's long side, so ingest stores, as the field says, the width in mm the stored image's
width covers: the sensor's short side for a portrait (a camera held upright, turned by its EXIF orientation or in its
pixels). `eval --coc fnumber` and the Wiener baseline (pitch = sensor_width_mm / width) then give a portrait the CoC
of its landscape twin; before, they gave a CoC 1.5x too small at 3:2, silently."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions, Task
from defocuskit.data.sources import ebb, vabd
from defocuskit.eval.baselines import wiener_coc_px
from defocuskit.imaging.optics import sensor_width_across
from defocuskit.inference.coc_source import CocSource
from defocuskit.io.images import write_image

# EXIF: the Exif sub-IFD pointer, FNumber, FocalLength, FocalLengthIn35mmFilm; IFD0's Orientation
EXIF_IFD, F_NUMBER, FOCAL, FOCAL_35, ORIENTATION = 0x8769, 0x829D, 0x920A, 0xA405, 0x0112
TURNS = {"landscape": {}, "orientation tag": {"orientation": 6}, "pixels": {"turn": True}}


def _texture(blur: float = 0.0, turn: bool = False) -> np.ndarray:
    """A smooth random RGB texture, 64 x 96 (landscape), 96 x 64 where `turn`, Gaussian-blurred by `blur` px."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.random((64, 96, 3)).astype(np.float32), (0, 0), 2.0)
    img = np.rint(255 * (base - base.min()) / (base.max() - base.min())).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), blur) if blur else img
    return np.ascontiguousarray(np.rot90(img, -1)) if turn else img


def _shot(path: Path, f_number: float, blur: float = 0.0, orientation: int | None = None, turn: bool = False) -> None:
    """A JPEG of a 50 mm lens framing as 50 mm on full frame (a 36 mm sensor width) at `f_number`."""
    exif = Image.Exif()
    ifd = exif.get_ifd(EXIF_IFD)
    ifd[F_NUMBER] = TiffImagePlugin.IFDRational(round(f_number * 10), 10)
    ifd[FOCAL] = TiffImagePlugin.IFDRational(500, 10)
    ifd[FOCAL_35] = 50
    if orientation is not None:
        exif[ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_texture(blur, turn)).save(path, "JPEG", quality=95, exif=exif.tobytes())


def _pair_meta(source: str, root: Path, out: Path, **turn) -> tuple[dict, np.ndarray]:
    """Ingest one f/16 + f/2.8 bracket (--raw-dir) or blur/sharp pair (--pairs), turned as `turn` says; the f/2.8
    sample's metadata and blurred image as a reader gets them back."""
    sharp, blur = ((root / "s" / "ref.jpg", root / "s" / "wide.jpg") if source == "raw"
                   else (root / "sharp" / "a.jpg", root / "blur" / "a.jpg"))
    _shot(sharp, 16.0, **turn)
    _shot(blur, 2.8, blur=1.0, **turn)
    run_ingest({source: root}, IngestOptions(out=str(out), workers=0, split_by="test", register="none"),
               progress=False)
    (pair,) = [s for s in iter_samples(str(out)) if s.get("blur") is not None]
    return pair["meta"], pair["blur"]


def _fnumber_coc(meta: dict, image: np.ndarray) -> float:
    """eval --coc fnumber's CoC (pixels) for a stored sample."""
    return float(CocSource.create("fnumber")(image.astype(np.float32) / 255.0, meta, name="x")[0, 0])


def test_the_width_across_an_image_is_the_sensor_width_for_landscape_and_its_short_side_for_portrait():
    assert sensor_width_across(36.0, 4000, 6000) == 36.0 and sensor_width_across(22.5, 100, 100) == 22.5
    assert sensor_width_across(36.0, 6000, 4000) == 24.0  # 3:2
    assert sensor_width_across(17.3, 4000, 3000) == pytest.approx(12.975)  # 4:3
    assert sensor_width_across(None, 6000, 4000) is None


@pytest.mark.parametrize("source", ["raw", "pairs"])
@pytest.mark.parametrize("turn", ["orientation tag", "pixels"])
def test_a_portrait_shot_stores_the_width_its_image_covers_and_evaluates_as_its_landscape_twin(tmp_path, source,
                                                                                                 turn):
    wide_meta, wide = _pair_meta(source, tmp_path / "wide", tmp_path / "wide-out")
    tall_meta, tall = _pair_meta(source, tmp_path / "tall", tmp_path / "tall-out", **TURNS[turn])
    assert (wide_meta["width"], wide_meta["height"]) == (96, 64) and wide_meta["sensor_width_mm"] == 36.0
    assert (tall_meta["width"], tall_meta["height"]) == (64, 96)
    assert tall_meta["sensor_width_mm"] == pytest.approx(24.0)  # was 36: the sensor's long side across the short
    want = _fnumber_coc(wide_meta, wide)
    assert _fnumber_coc(tall_meta, tall) == pytest.approx(want, rel=1e-4)  # was 1.5x too small
    assert wiener_coc_px(tall_meta, tall.shape[:2]) == pytest.approx(wiener_coc_px(wide_meta, wide.shape[:2]),
                                                                    rel=1e-4)


@pytest.mark.parametrize(("module", "folder", "width_mm"), [(vabd, "2_8", 22.5), (ebb, "target", 22.3)])
def test_a_portrait_vabd_or_ebb_scene_stores_the_cameras_short_side(tmp_path, module, folder, width_mm):
    opts = IngestOptions(register="none", split_by="train")
    metas = {}
    for name, turn in (("wide", False), ("tall", True)):
        write_image(tmp_path / name / "train" / folder / "0001.png", _texture(1.0, turn))
        write_image(tmp_path / name / "train" / "input" / "0001.png", _texture(0.0, turn))
        for task in module.list_tasks(tmp_path / name, opts):
            assert isinstance(task, Task)
            for sample in module.load(task, opts):
                metas[name, sample.blur is not None] = (sample.meta, sample.image)
    for pair in (True, False) if module is vabd else (True,):  # VABD's f/16 reference is a sample of its own
        (wide_meta, wide), (tall_meta, tall) = metas["wide", pair], metas["tall", pair]
        assert wide_meta["sensor_width_mm"] == width_mm  # landscape: as before
        assert tall_meta["sensor_width_mm"] == pytest.approx(width_mm * 64 / 96, abs=1e-4)
        assert _fnumber_coc(tall_meta, tall) == pytest.approx(_fnumber_coc(wide_meta, wide), rel=1e-4)
