"""Real DNG files for the tests, written from numpy with pidng: a 16-bit Bayer CFA (RGGB) with the tags LibRaw
reads (black and white level, ColorMatrix1, AsShotNeutral, Orientation) and an EXIF sub-IFD carrying FNumber,
ExposureTime, ISO, FocalLength, LensModel and DateTimeOriginal. A test helper, not part of the package."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# Adobe's ColorMatrix2 (D65) of the Canon EOS 70D, XYZ -> camera: a real camera's matrix, far from the identity
CANON_70D_MATRIX = ((0.7034, -0.0804, -0.1014), (-0.4420, 1.2564, 0.2058), (-0.0851, 0.1994, 0.5758))
# the camera's raw response to a neutral grey under daylight (red and blue well below green), as cameras record it
DAYLIGHT_NEUTRAL = (0.47, 1.0, 0.66)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """The sRGB tone curve undone (0..1 in, linear light out)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def camera_mosaic(linear: np.ndarray, neutral: Sequence[float] = (1.0, 1.0, 1.0), black: int = 0,
                  white: int = 4095) -> np.ndarray:
    """The RGGB Bayer mosaic (uint16) a camera records of a scene in linear light (H, W, 3; 1.0: the white level):
    each channel times the camera's response to neutral (`neutral`, AsShotNeutral), on top of `black`."""
    cam = np.asarray(linear, dtype=np.float64) * np.asarray(neutral, dtype=np.float64)
    h, w = cam.shape[:2]
    cfa = np.empty((h, w), np.float64)
    cfa[0::2, 0::2] = cam[0::2, 0::2, 0]
    cfa[0::2, 1::2] = cam[0::2, 1::2, 1]
    cfa[1::2, 0::2] = cam[1::2, 0::2, 1]
    cfa[1::2, 1::2] = cam[1::2, 1::2, 2]
    return np.clip(np.rint(black + cfa * (white - black)), 0, 65535).astype(np.uint16)


def mosaic_rggb(rgb: np.ndarray, exposure: float = 1.0, white: int = 4095) -> np.ndarray:
    """An RGGB Bayer mosaic (uint16, 0..white) of an sRGB float image in linear light, times `exposure`."""
    return camera_mosaic(exposure * srgb_to_linear(rgb), white=white)


def _rational(value: float, den: int = 10000) -> list[int]:
    return [round(value * den), den]


def _pidng():
    from pidng.dng import Type, dngTag

    class ExifIFDTag(dngTag):
        """pidng 4.0.9 builds IFD-typed tags from a str, which breaks its padding; use bytes."""

        def setValue(self, value):  # noqa: N802 (pidng's name)
            if self.DataType == Type.IFD:
                self.Value = b"\x00\x00\x00\x00"
                self.subIFD = value[0]
            else:
                super().setValue(value)

    return ExifIFDTag


def write_dng(path: Path, cfa: np.ndarray, f_number: float | None = 4.0, exposure: tuple[int, int] = (1, 250),
              iso: int = 200, focal: float = 50.0, when: str | None = "2024:05:01 10:00:00",
              make: str = "Canon", model: str = "Canon EOS 70D", lens: str = "EF50mm f/1.8 STM", black: int = 0,
              white: int = 4095, neutral: Sequence[float] = (1.0, 1.0, 1.0),
              color_matrix: Sequence[Sequence[float]] | None = None, orientation: int = 1) -> Path:
    """Write `cfa` (H, W uint16, RGGB) as an uncompressed DNG at `path` (its parents made); returns the path.
    `f_number` None: no FNumber tag (a manual lens). `color_matrix`: ColorMatrix1 (XYZ -> camera, D65), the
    identity by default; `neutral`: AsShotNeutral; `orientation`: the TIFF Orientation (1, 3, 6, 8)."""
    import pidng.core as core
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
    from pidng.dng import dngIFD, dngTag

    Tag = core.Tag
    h, w = cfa.shape
    t = core.DNGTags()
    for tag, value in ((Tag.ImageWidth, w), (Tag.ImageLength, h), (Tag.TileWidth, w), (Tag.TileLength, h),
                       (Tag.Orientation, orientation), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
                       (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB),
                       (Tag.BlackLevel, black), (Tag.WhiteLevel, white),
                       (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65), (Tag.Make, make), (Tag.Model, model),
                       (Tag.UniqueCameraModel, model), (Tag.DNGVersion, DNGVersion.V1_4),
                       (Tag.DNGBackwardVersion, DNGVersion.V1_2)):
        t.set(tag, value)
    matrix = np.eye(3) if color_matrix is None else np.asarray(color_matrix, dtype=np.float64)
    t.set(Tag.ColorMatrix1, [_rational(v) for v in matrix.ravel()])
    t.set(Tag.AsShotNeutral, [_rational(v) for v in neutral])
    exif = dngIFD()
    if f_number is not None:
        exif.tags.append(dngTag(Tag.FNumber, [[round(f_number * 10), 10]]))
    exif.tags.append(dngTag(Tag.FocalLength, [[round(focal * 10), 10]]))
    exif.tags.append(dngTag(Tag.ExposureTime, [list(exposure)]))
    exif.tags.append(dngTag(Tag.PhotographicSensitivity, [iso]))
    exif.tags.append(dngTag(Tag.EXIFPhotoLensModel, lens))
    if when:
        exif.tags.append(dngTag(Tag.DateTimeOriginal, when))
    t.__tags__[Tag.EXIF_IFD] = _pidng()(Tag.EXIF_IFD, [exif])
    converter = core.RAW2DNG()
    converter.options(t, path="", compress=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = Path(converter.convert(np.ascontiguousarray(cfa, dtype=np.uint16), filename=str(path.with_suffix(""))))
    if written != path:  # pidng names it <stem>.dng: keep the name asked for (IMG_1.DNG)
        written.replace(path)
    return path
