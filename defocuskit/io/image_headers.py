"""What an image file's header tells before anything is decoded: its dimensions (judged against the pixel limit,
`max_pixels`), its EXIF orientation, and a TIFF's tags (`images` decodes)."""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from defocuskit.io.formats import ImageError

MAX_PIXELS_ENV = "DEFOCUSKIT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 200_000_000  # a 200-megapixel frame: above every camera sensor; 0 in the variable = no limit


def max_pixels() -> int:
    """The largest image (width x height) that is decoded: $DEFOCUSKIT_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        limit = int(float(value)) if value.strip() else DEFAULT_MAX_PIXELS
    except (ValueError, OverflowError):
        limit = -1
    if limit < 0:
        raise ValueError(f"${MAX_PIXELS_ENV}={value!r}: not a number of pixels >= 0 (0: no limit)")
    return limit


def _megapixels(n: int) -> str:
    """A pixel count as megapixels, with the digits that tell small numbers apart ("4 MP", "0.002 MP")."""
    return f"{n / 1e6:.0f} MP" if n >= 10**6 else f"{n / 1e6:.3g} MP"


def check_dimensions(source: str | Path | bytes | np.ndarray, name: str | Path) -> None:
    """Raise ImageError naming `name` when the image's header declares more than `max_pixels()` pixels, read
    before anything is decoded (a small file can declare a huge frame), or when no header gives its dimensions
    (not an image, or a format OpenCV decodes whose size nothing here reads: it is not decoded unjudged)."""
    limit = max_pixels()
    if limit <= 0:
        return
    if isinstance(source, np.ndarray):
        data = source.tobytes()
    else:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    judge_size(pillow_header(data)[0] or header_size(data), name, limit)


def judge_size(size: tuple[int, int] | None, name: str | Path, limit: int) -> None:
    """The ImageError of `check_dimensions` for an image whose header gives `size` (None: no header gives it)."""
    if size is None:
        raise ImageError(name, "not a readable image: cannot read its dimensions from the header (not an image, "
                               f"damaged, or a format whose size is known only once decoded; ${MAX_PIXELS_ENV}=0 "
                               "decodes it unjudged)")
    width, height = size
    if width * height > limit:
        raise ImageError(name, f"declares {width}x{height} pixels ({_megapixels(width * height)}), more than the "
                               f"limit of {_megapixels(limit)}; set ${MAX_PIXELS_ENV} to a larger number (or 0) "
                               "to decode it")


ANIMATED = ("PNG", "WEBP", "GIF")  # formats whose frames Pillow counts from the headers (APNG's acTL, WebP's ANIM)


def pillow_header(data: bytes) -> tuple[tuple[int, int] | None, int, int]:
    """(width, height) from the header, as Pillow reads it (PNG, JPEG, TIFF of integer samples, BMP, WebP, ...;
    None for others), the EXIF Orientation it declares (1-8; 1 where it has none or a damaged one) and the frames of
    an animated PNG, WebP or GIF (1 for any other file: a JPEG's MPF previews are no frames; TIFF: `tiff_pages`)."""
    from PIL import Image

    bomb_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the header only: judged by the caller
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
            animated = im.format in ANIMATED and getattr(im, "is_animated", False)
            frames = im.n_frames if animated and isinstance(getattr(im, "n_frames", 1), int) else 1
            try:
                if im.format == "PNG" and "exif" not in im.info:  # an eXIf chunk after the pixels: Pillow would
                    im.info["exif"] = _png_exif(data)  # decode them all to reach it
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # a damaged EXIF block: the pixels as stored
                orientation = 1
    except Exception:  # not a format Pillow knows, or a damaged header
        return None, 1, 1
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    return size, orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1, frames


def frames_wrong(data: bytes, animated: int) -> str | None:
    """Why a file that holds several pictures is not one photograph (the reason of an ImageError), else None: an
    animated PNG, WebP or GIF (`animated`: the frames `pillow_header` counted), a TIFF of several full-size pages
    (`tiff_pages`). Read from the headers alone; without this only the first frame was read."""
    tiff = data[:4] in TIFF_MAGIC
    frames = tiff_pages(data) if tiff else animated
    if frames <= 1:
        return None
    kind = f"a TIFF of {frames} full-size pages" if tiff else f"an animated image of {frames} frames"
    return (f"{kind}, not a photograph of one scene: save the frame you mean as an image of its own (only the first "
            "would be read)")


def _png_exif(data: bytes) -> bytes | None:
    """The contents of a PNG's eXIf chunk, found by the chunk lengths alone; None where it has none."""
    return _png_chunk(data, b"eXIf", b"IEND")


def _png_chunk(data: bytes, wanted: bytes, last: bytes) -> bytes | None:
    """The contents of a PNG's first `wanted` chunk before its `last` chunk, found by the chunk lengths alone."""
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind == wanted:
            return data[at + 8:at + 8 + length]
        if kind == last or kind == b"IEND":
            break
        at += 12 + length
    return None


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_colour_type(data: bytes) -> int | None:
    """A PNG's colour type from its header (0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA); None for another
    file."""
    return data[25] if data[:8] == PNG_MAGIC and len(data) >= 26 and data[12:16] == b"IHDR" else None


def png_gray_key(data: bytes) -> int | None:
    """The sample a gray PNG's tRNS chunk marks transparent, as OpenCV decodes it (samples of 1, 2 or 4 bits scaled
    to 0-255); None for another file, a gray PNG without one, or a key outside its bit depth. (OpenCV drops a gray
    PNG's tRNS; a palette or RGB PNG's it reads as an alpha channel itself.)"""
    if png_colour_type(data) != 0 or (trns := _png_chunk(data, b"tRNS", b"IDAT")) is None or len(trns) < 2:
        return None
    depth, (key,) = data[24], struct.unpack_from(">H", trns)
    top = (1 << depth) - 1
    if key > top:
        return None
    return key * 255 // top if depth < 8 else key



_RADIANCE_SIZE = re.compile(rb"\r?\n\r?\n([-+])([XY]) +(\d+) +[-+]([XY]) +(\d+)\r?\n")
_PFM_SIZE = re.compile(rb"P[Ff]\s+(\d+)\s+(\d+)\s")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of the formats OpenCV decodes and Pillow does not size: Radiance HDR (its
    resolution line), PFM, TIFF (float samples; BigTIFF); None for anything else."""
    if data.startswith(b"#?"):
        found = _RADIANCE_SIZE.search(data[:65536])
        if found is None or found[2] == found[4]:
            return None
        first, second = int(found[3]), int(found[5])
        return (second, first) if found[2] == b"Y" else (first, second)  # "-Y H +X W": rows first
    if data[:2] in (b"PF", b"Pf"):
        found = _PFM_SIZE.match(data[:256])
        return (int(found[1]), int(found[2])) if found else None
    if data[:4] in TIFF_MAGIC:
        return _tiff_size(data)
    return None


TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


_Tags = dict[int, tuple[int, int, str]]  # tag -> (value, where the value lies, its struct format)
MAX_PAGES = 1024  # a TIFF's image file directories followed at most (a chain that loops ends where it meets itself)


def _tiff_ifds(data: bytes, tags: tuple[int, ...]) -> Iterator[_Tags]:
    """The `tags` (of integer values) of each image file directory in a TIFF's (or BigTIFF's) chain, those it has;
    the chain ends where the file is cut short, loops, or after MAX_PAGES."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\0", b"\0+")
    offset_of, count_of, entry, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    seen: set[int] = set()
    try:
        (ifd,) = struct.unpack_from(order + offset_of, data, 8 if big else 4)
        while ifd and ifd not in seen and len(seen) < MAX_PAGES:
            seen.add(ifd)
            (count,) = struct.unpack_from(order + count_of, data, ifd)
            first = ifd + struct.calcsize(count_of)
            found: _Tags = {}
            for i in range(min(count, 4096)):
                tag, kind = struct.unpack_from(order + "HH", data, first + entry * i)
                if tag in tags and kind in (3, 4, 16):  # SHORT, LONG, LONG8
                    fmt, at = order + {3: "H", 4: "I", 16: "Q"}[kind], first + entry * i + value_at
                    found[tag] = (struct.unpack_from(fmt, data, at)[0], at, fmt)
            yield found
            (ifd,) = struct.unpack_from(order + offset_of, data, first + entry * count)
    except struct.error:  # cut short
        return


def _tiff_tags(data: bytes) -> _Tags:
    """ImageWidth (256), ImageLength (257) and Orientation (274) of a TIFF's (or BigTIFF's) first image file
    directory, as tag -> (value, where the value lies, its struct format); those it has."""
    return next(_tiff_ifds(data, (256, 257, 274)), {})


def tiff_planar(data: bytes) -> bool:
    """True for a TIFF whose first picture stores its channels in separate planes (PlanarConfiguration 2, with more
    than one sample per pixel: what tifffile writes from a channel-first array, Photoshop's "Per Channel" order)."""
    found = next(_tiff_ifds(data, (277, 284)), {})
    return found.get(284, (1,))[0] == 2 and found.get(277, (1,))[0] > 1


def tiff_pages(data: bytes) -> int:
    """The full-size pictures of a TIFF: its image file directories whose NewSubfileType (254) marks neither a
    reduced-resolution copy (a thumbnail, a preview) nor a mask, and (a thumbnail left unmarked, as some writers leave
    it) that hold at least half the first one's pixels; at least 1."""
    pages = [ifd for ifd in _tiff_ifds(data, (254, 256, 257)) if not ifd.get(254, (0,))[0] & 0b101]

    def pixels(ifd: _Tags) -> int:
        return ifd.get(256, (0,))[0] * ifd.get(257, (0,))[0]

    first = pixels(pages[0]) if pages else 0
    return max(1, sum(pixels(ifd) * 2 >= first for ifd in pages))


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth x ImageLength of a TIFF's (or BigTIFF's) first image file directory; None where it has none."""
    found = _tiff_tags(data)
    return (found[256][0], found[257][0]) if 256 in found and 257 in found else None


def tiff_as_stored(data: bytes) -> tuple[bytes, int]:
    """A TIFF's bytes with its Orientation set to 1 (OpenCV's decoder turns some TIFFs itself, not all: this way
    it turns none), and the orientation it had (1-8)."""
    value, at, fmt = _tiff_tags(data).get(274, (1, 0, "H"))
    if not 2 <= value <= 8:
        return data, 1
    patched = bytearray(data)
    struct.pack_into(fmt, patched, at, 1)
    return bytes(patched), value
