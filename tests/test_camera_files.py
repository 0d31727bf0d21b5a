"""A researcher's own camera files through `deblur` as `ingest --raw-dir` reads them: the EXIF f-number that
`--coc fnumber` uses, and the colour space a camera marks in its EXIF alone (DCF's Adobe RGB)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from defocuskit.data.sources.fnumbers import GivenFNumbers, resolve_f_number
from defocuskit.inference.files import deblur_files
from defocuskit.inference.inputs import f_number_meta as _f_number_meta
from defocuskit.io.raw import read_exif
from tests.test_infer import _export_nafnet
from tests.test_sensor_width import _jpeg

# Adobe RGB (1998) -> XYZ (D65) and XYZ -> linear sRGB, from the two standards: the oracle of the profile's colours
ADOBE_TO_XYZ = np.array([[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741],
                         [0.0270343, 0.0706872, 0.9911085]])
XYZ_TO_SRGB = np.array([[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]])


def test_deblur_does_not_use_an_exif_f_number_ingest_rejects(tmp_path: Path) -> None:
    # a corrupt FNumber of f/0.5: ingest rejects the shot ("implausible"), deblur --coc fnumber used it, a CoC 5.6x
    # that of f/2.8, without a word
    (tmp_path / "in").mkdir()
    path = _jpeg(tmp_path / "in" / "shot.jpg", focal=50.0, f_number=0.5)
    assert read_exif(path)["f_number"] == 0.5
    assert "implausible" in resolve_f_number(path, read_exif(path), tmp_path, GivenFNumbers())
    assert _f_number_meta(path, None)["f_number"] is None
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    with pytest.raises(ValueError, match=r"shot\.jpg \(its f/0\.5 is implausible: lenses span f/0\.7 to f/64\); "
                                         r"give --f-number N"):
        deblur_files([path], ckpt, tmp_path / "out", coc="fnumber", focus_gate=1.0, progress=False)
    assert not (tmp_path / "out").exists()
    (written,) = deblur_files([path], ckpt, tmp_path / "out", coc="fnumber", f_number=2.8, focus_gate=1.0,
                              progress=False)
    assert written.is_file()


def _dcf_exif(colour_space: int, index: bytes | None) -> bytes:
    """An EXIF block as a camera writes it: IFD0 -> Exif IFD (ColorSpace) -> Interop IFD (InteroperabilityIndex)."""
    def ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
        return (struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", t, k, n) + v for t, k, n, v in entries)
                + struct.pack("<I", 0))

    exif_at = 8 + 18
    interop_at = exif_at + 2 + 12 * (2 if index else 1) + 4
    entries = [(0xA001, 3, 1, struct.pack("<HH", colour_space, 0))]
    if index:
        entries.append((0xA005, 4, 1, struct.pack("<I", interop_at)))
    tiff = (b"II*\x00" + struct.pack("<I", 8) + ifd([(0x8769, 4, 1, struct.pack("<I", exif_at))]) + ifd(entries)
            + (ifd([(0x0001, 2, 4, index.ljust(4, b"\x00"))]) if index else b""))
    return b"Exif\x00\x00" + tiff


def test_deblur_keeps_the_adobe_rgb_a_camera_marks_in_its_exif(tmp_path: Path) -> None:
    # a camera set to Adobe RGB (Canon's _MG_ files) embeds no profile: DCF marks the colour space in the EXIF
    # (ColorSpace uncalibrated, interoperability index R03); the deblurred PNG carried none, so it showed as sRGB,
    # its colours washed out
    rgb = np.array([[[150, 120, 90], [60, 160, 200], [200, 60, 40], [128, 128, 128]]], np.uint8).repeat(8, 0)
    rgb = np.tile(rgb, (1, 4, 1))  # 8 x 16
    (tmp_path / "in").mkdir()
    for name, colour_space, index in (("_MG_0001", 0xFFFF, b"R03"), ("IMG_0002", 1, b"R98"),
                                      ("IMG_0003", 0xFFFF, b"R98"), ("_DSC0004", 2, None)):
        Image.fromarray(rgb).save(tmp_path / "in" / f"{name}.JPG", exif=_dcf_exif(colour_space, index), quality=100)
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    deblur_files([tmp_path / "in"], ckpt, tmp_path / "out", progress=False)
    profiles = {}
    for name in ("_MG_0001", "IMG_0002", "IMG_0003", "_DSC0004"):
        with Image.open(tmp_path / "out" / f"{name}.png") as im:
            profiles[name] = im.info.get("icc_profile")
    assert profiles["IMG_0002"] is None and profiles["IMG_0003"] is None  # sRGB; an uncalibrated one not Adobe's
    assert profiles["_MG_0001"] is not None and profiles["_DSC0004"] == profiles["_MG_0001"]
    # the profile is Adobe RGB's: LittleCMS takes its colours to sRGB as the two standards' matrices do
    with Image.open(tmp_path / "out" / "_MG_0001.png") as im:
        pixels = np.asarray(im.convert("RGB"))[:1, :4]
    to_srgb = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profiles["_MG_0001"])),
                                      ImageCms.createProfile("sRGB"), "RGB", "RGB", renderingIntent=1)
    got = np.asarray(ImageCms.applyTransform(Image.fromarray(pixels), to_srgb)).astype(float)
    linear = np.clip((pixels / 255.0) ** (563 / 256) @ ADOBE_TO_XYZ.T @ XYZ_TO_SRGB.T, 0, 1)
    want = 255 * np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    assert np.abs(got - want).max() <= 1.0
    assert np.abs(got - pixels).max() >= 20  # not sRGB: shown as sRGB, these colours were that far off


def test_deblur_carries_the_profile_of_a_float_tiff(tmp_path: Path) -> None:
    # an HDR merge saved as a 32-bit float TIFF carries its (often linear) profile; PIL does not open float RGB TIFFs,
    # so the profile was lost and the PNG showed as sRGB (a linear one: far too dark)
    import tifffile

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = np.random.default_rng(0).random((16, 24, 3)).astype(np.float32)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "hdr.tif", pixels, photometric="rgb", extratags=[(34675, "B", len(icc), icc,
                                                                                         True)])
    (written,) = deblur_files([tmp_path / "in" / "hdr.tif"], _export_nafnet(tmp_path / "nafnet.safetensors"),
                              tmp_path / "out", progress=False)
    with Image.open(written) as im:
        assert im.info.get("icc_profile") == icc
