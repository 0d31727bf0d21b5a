"""A photo's ICC colour profile, carried from the file read to the PNG written (`deblur`), so that an image in a
colour space other than sRGB (a phone's Display P3, a camera's Adobe RGB) displays in its own colours."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_SPACE = {1: b"GRAY", 2: b"GRAY", 3: b"RGB ", 4: b"RGB "}  # an output's channels -> the profile's data colour space
# EXIF tags of DCF's optional colour space: a camera set to Adobe RGB (Canon, and others) embeds no profile in its
# JPEGs but marks them ColorSpace 0xFFFF (uncalibrated) with the interoperability index "R03" (DCF 2.0); some write
# ColorSpace 2, Adobe RGB, outside the standard
_EXIF_IFD, _INTEROP_IFD, _COLOR_SPACE, _INTEROP_INDEX = 0x8769, 0xA005, 0xA001, 0x0001
_UNCALIBRATED, _ADOBE_RGB = 0xFFFF, 2
# Adobe RGB (1998): its colorants adapted to the ICC's D50 (Bradford), its white D65 and its gamma 563/256, as in
# Adobe's own AdobeRGB1998.icc
_ADOBE_COLORANTS = {b"rXYZ": (0.60974, 0.31111, 0.01947), b"gXYZ": (0.20528, 0.62567, 0.06087),
                    b"bXYZ": (0.14919, 0.06322, 0.74457), b"wtpt": (0.95045, 1.0, 1.08905)}
_ADOBE_GAMMA_U8F8 = 563  # 2.19921875


def read_icc(path: str | Path) -> bytes | None:
    """The ICC profile embedded in the image file at `path` (JPEG, PNG, TIFF, WebP), None where there is none or
    the file is not one PIL opens (camera RAW is decoded to sRGB)."""
    from PIL import Image, UnidentifiedImageError

    from defocuskit.io.formats import is_raw

    if is_raw(Path(path)):  # decoded to sRGB: a profile in its TIFF structure is the camera's, not the output's
        return None
    bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header only: any size of photo
    try:
        with Image.open(path) as im:
            icc = im.info.get("icc_profile")
            if not icc and im.format in ("JPEG", "MPO", "TIFF") and _dcf_adobe_rgb(im):
                icc = adobe_rgb_profile()  # a camera's Adobe RGB JPEG, marked in its EXIF alone: shown as sRGB before
    except (OSError, UnidentifiedImageError, ValueError):
        return _tiff_icc(path)  # a TIFF PIL does not open (float samples: an HDR merge's, whose profile is linear)
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    return bytes(icc) if icc else None


def _tiff_icc(path: str | Path) -> bytes | None:
    """The ICC profile (tag 34675, InterColorProfile) of the first page of the TIFF at `path`, read by tifffile; None
    where there is none or it is no TIFF tifffile reads."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(34675)
            icc = tag.value if tag is not None else None
    except Exception:  # not a TIFF, or a damaged one: no profile to carry
        return None
    return bytes(icc) if isinstance(icc, (bytes, bytearray)) and icc else None


def _dcf_adobe_rgb(im: object) -> bool:
    """Whether the EXIF of the open PIL image `im` marks its pixels Adobe RGB without a profile (DCF's optional colour
    space: ColorSpace uncalibrated and the interoperability index R03, or ColorSpace 2)."""
    try:
        exif = im.getexif()  # type: ignore[attr-defined]
        space = exif.get_ifd(_EXIF_IFD).get(_COLOR_SPACE)
        index = exif.get_ifd(_INTEROP_IFD).get(_INTEROP_INDEX) if space == _UNCALIBRATED else None
    except Exception:  # a damaged EXIF block: no colour space read from it
        return False
    index = index.decode("ascii", "replace") if isinstance(index, bytes) else index
    return space == _ADOBE_RGB or (isinstance(index, str) and index.strip("\0 ") == "R03")


def adobe_rgb_profile() -> bytes:
    """An ICC v2 display profile of Adobe RGB (1998) (matrix and gamma: `_ADOBE_COLORANTS`, `_ADOBE_GAMMA_U8F8`)."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    name = b"Adobe RGB (1998) compatible"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(name) + 1) + name + b"\0" + bytes(4 + 4 + 2 + 1 + 67)),
            (b"cprt", b"text" + bytes(4) + b"No copyright, use freely\0")]
    tags += [(sig, b"XYZ " + bytes(4) + b"".join(s15(v) for v in xyz)) for sig, xyz in _ADOBE_COLORANTS.items()]
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, _ADOBE_GAMMA_U8F8)
    tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += bytes(-len(data) % 4)  # every tag's data starts on a 4-byte boundary
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + bytes(24) + struct.pack(">I", 0)
              + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def png_with_icc(png: bytes, icc: bytes | None, channels: int) -> bytes:
    """`png` with `icc` in an iCCP chunk after its IHDR, where the profile is one of the colour space of a
    `channels`-channel PNG (GRAY for 1 and 2, RGB for 3 and 4); otherwise (a CMYK or Lab profile, none) `png` as it
    is."""
    if not icc or len(icc) < 20 or icc[16:20] != _SPACE.get(channels):
        return png
    end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    body = b"ICC Profile\0\0" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    return png[:end] + chunk + png[end:]
