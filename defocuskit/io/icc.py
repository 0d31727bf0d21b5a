"""A photo's ICC colour profile, carried from the file read to the PNG written (`deblur`), so that an image in a
colour space other than sRGB (a phone's Display P3, a camera's Adobe RGB) displays in its own colours."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_SPACE = {1: b"GRAY", 2: b"GRAY", 3: b"RGB ", 4: b"RGB "}  # an output's channels -> the profile's data colour space


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
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    return bytes(icc) if icc else None


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
