"""Shared fixtures: DNG files with real EXIF (pidng) and downsized copies of the real photo fixtures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N workers share the cores, one thread each (and their
    os.environ["OMP_NUM_THREADS"] = "1"   # subprocesses): torch's default threads in every worker oversubscribe
    os.environ["DEFOCUSKIT_THREADS"] = "1"

import cv2  # noqa: E402 (after the thread settings)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REAL_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"  # ../shared beside the checkout


def _pidng():
    pidng_core = pytest.importorskip("pidng.core")
    from pidng.dng import Type, dngIFD, dngTag

    class ExifIFDTag(dngTag):
        """pidng 4.0.9 builds IFD-typed tags from a str, which breaks its padding; use bytes."""

        def setValue(self, value):  # noqa: N802 (pidng's name)
            if self.DataType == Type.IFD:
                self.Value = b"\x00\x00\x00\x00"
                self.subIFD = value[0]
            else:
                super().setValue(value)

    return pidng_core, dngIFD, dngTag, ExifIFDTag


def mosaic_rggb(rgb: np.ndarray, exposure: float = 1.0, white: int = 4095) -> np.ndarray:
    """An RGGB Bayer mosaic (uint16, 0..white) of an sRGB float image in linear light, times `exposure`."""
    lin = exposure * np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    h, w = lin.shape[:2]
    cfa = np.empty((h, w), np.float64)
    cfa[0::2, 0::2] = lin[0::2, 0::2, 0]
    cfa[0::2, 1::2] = lin[0::2, 1::2, 1]
    cfa[1::2, 0::2] = lin[1::2, 0::2, 1]
    cfa[1::2, 1::2] = lin[1::2, 1::2, 2]
    return np.clip(np.rint(cfa * white), 0, white).astype(np.uint16)


@pytest.fixture
def dng_writer() -> Callable[..., Path]:
    """write(path, cfa, f_number=..., exposure=(1, 250), iso=200, focal=50, when="2024:05:01 10:00:00", ...)
    -> Path of a DNG whose EXIF sub-IFD carries FNumber, ExposureTime, ISO, FocalLength, DateTimeOriginal."""
    core, dngIFD, dngTag, ExifIFDTag = _pidng()
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, Orientation, PhotometricInterpretation

    Tag = core.Tag

    def write(path: Path, cfa: np.ndarray, f_number: float | None = 4.0, exposure: tuple[int, int] = (1, 250),
              iso: int = 200, focal: float = 50.0, when: str | None = "2024:05:01 10:00:00",
              make: str = "Canon", model: str = "Canon EOS 70D", lens: str = "EF50mm f/1.8 STM") -> Path:
        h, w = cfa.shape
        t = core.DNGTags()
        t.set(Tag.ImageWidth, w)
        t.set(Tag.ImageLength, h)
        t.set(Tag.TileWidth, w)
        t.set(Tag.TileLength, h)
        t.set(Tag.Orientation, Orientation.Horizontal)
        t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
        t.set(Tag.SamplesPerPixel, 1)
        t.set(Tag.BitsPerSample, 16)
        t.set(Tag.CFARepeatPatternDim, [2, 2])
        t.set(Tag.CFAPattern, CFAPattern.RGGB)
        t.set(Tag.BlackLevel, 0)
        t.set(Tag.WhiteLevel, 4095)
        t.set(Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]])
        t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
        t.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
        t.set(Tag.Make, make)
        t.set(Tag.Model, model)
        t.set(Tag.UniqueCameraModel, model)
        t.set(Tag.DNGVersion, DNGVersion.V1_4)
        t.set(Tag.DNGBackwardVersion, DNGVersion.V1_2)
        exif = dngIFD()
        if f_number is not None:  # None: a manual lens without electronic contacts records no FNumber
            exif.tags.append(dngTag(Tag.FNumber, [[round(f_number * 10), 10]]))
        exif.tags.append(dngTag(Tag.FocalLength, [[round(focal * 10), 10]]))
        exif.tags.append(dngTag(Tag.ExposureTime, [list(exposure)]))
        exif.tags.append(dngTag(Tag.PhotographicSensitivity, [iso]))
        exif.tags.append(dngTag(Tag.EXIFPhotoLensModel, lens))
        if when:
            exif.tags.append(dngTag(Tag.DateTimeOriginal, when))
        t.__tags__[Tag.EXIF_IFD] = ExifIFDTag(Tag.EXIF_IFD, [exif])
        converter = core.RAW2DNG()
        converter.options(t, path="", compress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = Path(converter.convert(np.ascontiguousarray(cfa, dtype=np.uint16), filename=str(path.with_suffix(""))))
        return out

    return write


@pytest.fixture(scope="session")
def real_fixture_root() -> Path:
    """../shared/fixtures/real beside the checkout (skips where it is absent)."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip("real photo fixtures not present")
    return REAL_FIXTURES


def vabd_subset(fixtures: Path, dst: Path, stem: str, folders: tuple[str, ...]) -> Path:
    """A VABD root at `dst` (train/{input,8,2_8,1_8}/) holding only `stem`'s images of `folders`, linked from the
    real fixtures: one scene at chosen apertures, for an ingest end to end."""
    for sub in ("input", "8", "2_8", "1_8"):
        (dst / "train" / sub).mkdir(parents=True)
    for sub in folders:
        (dst / "train" / sub / f"{stem}.JPG").symlink_to(fixtures / "VABD" / "train" / sub / f"{stem}.JPG")
    return dst


def ingest_vabd_pair(root: Path, out: Path, max_side: int, *extra: str) -> tuple[dict, dict]:
    """`defocuskit ingest --vabd root --out out` (one process, `extra` options) as a user runs it; returns the
    manifest and the one pair it wrote (decoded). Asserts the command succeeded."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.reader import iter_samples

    res = CliRunner().invoke(app, ["ingest", "--vabd", str(root), "--out", str(out), "--max-side", str(max_side),
                                   "--workers", "0", *extra])
    assert res.exit_code == 0, res.output
    (pair,) = [s for s in iter_samples(str(out)) if s.get("blur") is not None]
    return json.loads((out / "manifest.json").read_text()), pair


def copy_resized(src_root: Path, dst_root: Path, width: int = 384) -> Path:
    """Copy an image tree, resizing every image to `width` px wide (INTER_AREA), names unchanged."""
    for src in sorted(src_root.rglob("*")):
        if not src.is_file():
            continue
        dst = dst_root / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            shutil.copy(src, dst)
            continue
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        h, w = img.shape[:2]
        small = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dst.suffix.lower() in (".jpg", ".jpeg") else []
        cv2.imwrite(str(dst), small, params)
    return dst_root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread per test module: the tiny tensors here run faster without thread hand-offs,
    and much faster when the cores are shared (measured 10x on this 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
