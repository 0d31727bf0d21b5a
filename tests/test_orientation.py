"""Raster images are read as they display: the EXIF Orientation tag (1-8) applied, as PIL's exif_transpose does and
as camera RAW files come out of the decoder (JPEG, TIFF, PNG eXIf, WebP; gray, RGB, RGBA, 8 and 16 bits)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from defocuskit.io.formats import ImageError
from defocuskit.io.images import read_image, read_image_channels

ORIENTATIONS = range(1, 9)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()  # b"Exif\0\0" + the TIFF structure


def _pattern(height: int, width: int, channels: int, dtype=np.uint8) -> np.ndarray:
    """A smooth, asymmetric picture (no flip or turn of it equals another), tolerant of JPEG coding."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [x / width, y / height, (x + 2 * y) / (width + 2 * height), 0.5 + 0.5 * np.sin(x / 5 + y / 9)]
    top = np.iinfo(dtype).max
    return np.stack([np.rint(p * top) for p in planes[:channels]], axis=2).astype(dtype)


def _stored(path: Path) -> np.ndarray:
    """The stored pixels, orientation ignored, in RGB(A) order and (H, W, C) shape."""
    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return arr if arr.shape[2] == 1 else arr[:, :, [2, 1, 0, 3][:arr.shape[2]]]


def _displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """PIL's exif_transpose of `stored`, channel by channel (PIL holds no 16-bit RGB)."""
    planes = []
    for c in range(stored.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(stored[:, :, c]))
        im.info["exif"] = _exif(orientation)
        planes.append(np.asarray(ImageOps.exif_transpose(im)))
    return np.stack(planes, axis=2)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_exif(arr: np.ndarray, orientation: int, after_idat: bool) -> bytes:
    """A PNG of `arr` (RGB(A), any depth) with an eXIf chunk before IDAT or after it (both are allowed)."""
    bgr = arr[:, :, [2, 1, 0, 3][:arr.shape[2]]] if arr.shape[2] in (3, 4) else arr
    png = cv2.imencode(".png", np.ascontiguousarray(bgr))[1].tobytes()
    exif = _chunk(b"eXIf", _exif(orientation)[6:])
    at = png.rindex(b"IEND") - 4 if after_idat else png.index(b"IDAT") - 4
    return png[:at] + exif + png[at:]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_is_read_as_it_displays(tmp_path: Path, orientation: int, mode: str) -> None:
    pixels = _pattern(24, 40, 3)
    image = Image.fromarray(pixels).convert(mode)
    image.save(tmp_path / "a.jpg", exif=_exif(orientation), quality=95)
    expected = _displayed(_stored(tmp_path / "a.jpg"), orientation)
    with Image.open(tmp_path / "a.jpg") as im:  # the same as PIL's own decode, up to the JPEG decoders
        assert ImageOps.exif_transpose(im).size == (expected.shape[1], expected.shape[0])
    channels = read_image_channels(tmp_path / "a.jpg")
    assert channels.dtype == np.uint8 and channels.shape == expected.shape
    assert np.array_equal(channels, expected)
    rgb = read_image(tmp_path / "a.jpg")
    assert rgb.shape == expected.shape[:2] + (3,)
    assert np.array_equal(rgb, np.repeat(expected, 3, axis=2) if mode == "L" else expected)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("kind", ["gray16", "rgb8"])
def test_tiff_is_read_as_it_displays(tmp_path: Path, orientation: int, kind: str) -> None:
    """OpenCV's TIFF decoder turns 8-bit RGB fully, other TIFFs in part (and Pillow's, some at open): whatever they
    do, the result is the stored pixels turned by PIL's exif_transpose."""
    pixels = _pattern(24, 40, 1, np.uint16)[:, :, 0] if kind == "gray16" else _pattern(24, 40, 3)
    Image.fromarray(pixels).save(tmp_path / "a.tif", tiffinfo={0x0112: orientation})
    out = read_image_channels(tmp_path / "a.tif")
    assert out.dtype == pixels.dtype
    assert np.array_equal(out, _displayed(pixels.reshape(24, 40, -1), orientation))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("after_idat", [False, True])
def test_16bit_rgba_png_with_exif_chunk_is_read_as_it_displays(tmp_path: Path, orientation: int,
                                                               after_idat: bool) -> None:
    pixels = _pattern(24, 40, 4, np.uint16)
    (tmp_path / "a.png").write_bytes(_png_with_exif(pixels, orientation, after_idat))
    with Image.open(tmp_path / "a.png") as im:
        assert im.getexif().get(0x0112) == orientation  # Pillow reads the chunk we wrote
    out = read_image_channels(tmp_path / "a.png")
    assert out.dtype == np.uint16 and out.shape[2] == 4
    assert np.array_equal(out, _displayed(pixels, orientation))
    assert np.array_equal(read_image(tmp_path / "a.png"), _displayed(pixels[:, :, :3], orientation))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_webp_is_read_as_it_displays(tmp_path: Path, orientation: int) -> None:
    pixels = _pattern(24, 40, 3)
    Image.fromarray(pixels).save(tmp_path / "a.webp", exif=_exif(orientation), lossless=True)
    with Image.open(tmp_path / "a.webp") as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "a.webp"), expected)


def test_pixel_limit_still_judges_a_turned_image(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_pattern(24, 40, 3)).save(tmp_path / "a.jpg", exif=_exif(6), quality=95)
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", str(24 * 40 - 1))
    with pytest.raises(ImageError, match=r"a\.jpg.*declares 40x24 pixels"):
        read_image(tmp_path / "a.jpg")
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", str(24 * 40))
    assert read_image(tmp_path / "a.jpg").shape == (40, 24, 3)
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "0")
    assert read_image(tmp_path / "a.jpg").shape == (40, 24, 3)


def test_a_damaged_or_odd_orientation_tag_leaves_the_pixels_as_stored(tmp_path: Path) -> None:
    pixels = _pattern(24, 40, 3)
    for value in (0, 9, 65535):
        Image.fromarray(pixels).save(tmp_path / "a.jpg", exif=_exif(value), quality=95)
        assert np.array_equal(read_image(tmp_path / "a.jpg"), _stored(tmp_path / "a.jpg"))
    Image.fromarray(pixels).save(tmp_path / "b.jpg", exif=b"Exif\0\0MM\0*junk", quality=95)
    assert np.array_equal(read_image(tmp_path / "b.jpg"), _stored(tmp_path / "b.jpg"))
