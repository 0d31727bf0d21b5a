"""Image files in and out: 8/16-bit PNG, JPEG, TIFF and camera RAW, always RGB, never cropped, read as they
display (EXIF orientation applied). A TIFF of channels in separate planes is decoded by tifffile (OpenCV's decoder
gives noise for one)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from defocuskit.io.atomic import atomic_write
from defocuskit.io.formats import ImageError, is_raw
from defocuskit.io.image_headers import (  # noqa: F401 (MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS: imported from here too)
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    PNG_MAGIC,
    TIFF_MAGIC,
    check_dimensions,
    frames_wrong,
    header_size,
    judge_size,
    max_pixels,
    pillow_header,
    png_colour_type,
    png_gray_key,
    tiff_as_stored,
    tiff_planar,
)
from defocuskit.io.jpeg_damage import decode_with_jpeg_damage, is_jpeg
from defocuskit.io.raw import decode_raw, libraw_reason, libraw_stderr

FLOAT_SLACK = 1e-3  # float samples may stray this far outside [0, 1] (rounding), as the API's arrays may

# EXIF Orientation -> the stored pixels turned as they display (what PIL.ImageOps.exif_transpose does)
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: a[::-1].transpose(1, 0, 2),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: a[:, ::-1].transpose(1, 0, 2),
}


def _to_rgb(arr: np.ndarray, path: str | Path) -> np.ndarray:
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(path, f"unsupported image shape {arr.shape}")
    return np.ascontiguousarray(arr[:, :, ::-1])  # OpenCV's BGR -> RGB


def _check_file(path: Path) -> int:
    """The size of `path` in bytes; ImageError if it is missing, not a file, empty or not readable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "no such file") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ImageError(path, "not a file")
    if st.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    return st.st_size


def _read_bytes(path: Path) -> np.ndarray:
    """The bytes of `path` as a uint8 array; ImageError naming the file for every I/O problem."""
    _check_file(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    return data


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an RGB uint8 or uint16 array (H, W, 3), as it displays (EXIF orientation applied): gray
    repeated, alpha dropped; RAW goes through the ingest decoder.

    A missing, empty, unreadable (permissions), truncated or corrupt file raises ImageError naming it, as does a
    JPEG whose compressed data libjpeg reports damaged (bytes overwritten or cut out in the middle: it decodes the
    rest as garbage or gray and only prints a warning).
    """
    return as_rgb(read_image_channels(path))


def as_rgb(arr: np.ndarray) -> np.ndarray:
    """An (H, W, 1|3|4) image of `read_image_channels` as (H, W, 3): gray repeated, alpha dropped."""
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3]) if arr.shape[2] == 4 else arr


def is_monochrome(arr: np.ndarray) -> bool:
    """True for an image that carries no colour: one channel, or red, green and blue equal at every pixel."""
    if arr.shape[2] < 3:
        return True
    return bool(np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2]))


def read_image_channels(path: str | Path, float_values: bool = False) -> np.ndarray:
    """Read an image in the channels it has: (H, W, 1) gray, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16
    (a camera RAW file: RGB; a gray PNG with alpha, or with a tRNS chunk marking one gray value transparent: RGBA,
    the gray repeated, as a palette or RGB PNG's tRNS is read), turned as it displays (its EXIF Orientation applied,
    as for RAW); the errors of `read_image`. Float samples (a float TIFF) are read as 0 to 1 (16 bits); with
    `float_values` they are kept as float32 values of any range (depth maps), NaN and inf refused either way."""
    path = Path(path)
    if is_raw(path):
        _check_readable(path)
        return decode_raw(path)
    data = _read_bytes(path).tobytes()
    size, orientation, frames = pillow_header(data)
    if (limit := max_pixels()) > 0:
        judge_size(size or header_size(data), path, limit)
    if (wrong := frames_wrong(data, frames)) is not None:
        raise ImageError(path, wrong)
    if data[:4] in TIFF_MAGIC:
        data, orientation = tiff_as_stored(data)
    try:
        flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR  # orientation not applied: below
        planar = data[:4] in TIFF_MAGIC and tiff_planar(data)
        arr = _planar_tiff(data, path) if planar else _imdecode(data, flags, path)
    except cv2.error:
        arr = None
    if arr is not None and arr.ndim == 2 and (key := png_gray_key(data)) is not None:
        arr = _with_key_alpha(arr, key)
    if arr is None or arr.size == 0:
        kinds = " or a TIFF of samples it does not read, e.g. 16-bit floats" if data[:4] in TIFF_MAGIC else ""
        raise ImageError(path, f"not a readable image (corrupt, truncated or not an image{kinds})")
    if arr.dtype not in (np.uint8, np.uint16):
        if arr.dtype in (np.float32, np.float64):
            if not np.isfinite(arr).all():
                raise ImageError(path, "float samples hold NaN or inf")
            if float_values:
                return _oriented(arr.astype(np.float32), orientation, path)
            lo, hi = float(arr.min()), float(arr.max())
            if not (-FLOAT_SLACK <= lo and hi <= 1.0 + FLOAT_SLACK):  # 0..255 floats read as all white before
                raise ImageError(path, f"float samples from {lo:.6g} to {hi:.6g}: read as 0 to 1 (scale it into "
                                       "[0, 1], or save it with 8 or 16-bit samples)")
            arr = np.clip(np.rint(arr * 65535.0), 0, 65535).astype(np.uint16)
        else:
            raise ImageError(path, f"unsupported sample type {arr.dtype}")
    return _oriented(arr, orientation, path)


def _imdecode(data: bytes, flags: int, name: str | Path) -> np.ndarray | None:
    """`cv2.imdecode` of `data`; ImageError naming `name` for a JPEG that libjpeg decoded while reporting its
    compressed data damaged (one warning line on stderr, the pixels after the damage garbage or gray)."""
    buf = np.frombuffer(data, np.uint8)
    if not is_jpeg(data):
        return cv2.imdecode(buf, flags)
    arr, damage = decode_with_jpeg_damage(lambda: cv2.imdecode(buf, flags))
    if damage is not None and arr is not None:  # nothing decoded: the caller's "not a readable image"
        raise ImageError(name, f"damaged JPEG data (libjpeg: {damage})")
    return arr


def _with_key_alpha(gray: np.ndarray, key: int) -> np.ndarray:
    """An (H, W) gray image whose `key` sample is transparent (a PNG's tRNS) as (H, W, 4): the gray repeated and
    an alpha of 0 at the key, full elsewhere (as OpenCV reads a gray + alpha PNG)."""
    alpha = np.where(gray == key, 0, np.iinfo(gray.dtype).max).astype(gray.dtype)
    return np.stack([gray, gray, gray, alpha], axis=2)


def png_is_gray(path: str | Path) -> bool:
    """Whether `path` is a gray PNG (with or without alpha or a tRNS value), from its header."""
    try:
        with open(path, "rb") as f:
            return png_colour_type(f.read(26)) in (0, 4)
    except OSError:
        return False


def _planar_tiff(data: bytes, path: str | Path) -> np.ndarray:
    """The first picture of a TIFF whose channels lie in separate planes, decoded with tifffile as OpenCV's (H, W)
    or (H, W, 3|4) BGR(A) would be: OpenCV's decoder interleaves the planes wrongly (16-bit and float samples, an
    alpha plane: noise, no error). ImageError where tifffile cannot decode it."""
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr, axes, photometric = page.asarray(), page.axes, int(page.photometric)
    except Exception as exc:  # a codec tifffile lacks (LZW, JPEG without imagecodecs), damaged strips
        raise ImageError(path, f"a TIFF of channels in separate planes that cannot be decoded ({type(exc).__name__}"
                               f": {exc}); save it with interleaved channels") from None
    if photometric not in (1, 2) or axes[-2:] != "YX" or arr.ndim != 3:  # MinIsBlack, RGB; planes first
        raise ImageError(path, f"a TIFF of channels in separate planes of photometric {photometric} ({axes}): save "
                               "it as interleaved RGB")
    arr = np.moveaxis(arr, 0, -1)
    arr = arr.astype(arr.dtype.newbyteorder("="))
    if photometric == 1 or arr.shape[2] == 2:  # grey (+ alpha): the grey plane
        return np.ascontiguousarray(arr[:, :, 0])
    return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3][:arr.shape[2]]])  # RGB(A) -> OpenCV's BGR(A)


def _oriented(arr: np.ndarray, orientation: int, path: str | Path) -> np.ndarray:
    """OpenCV's decoded (H, W) or (H, W, 1|3|4) BGR(A) as (H, W, C) RGB(A), turned as EXIF `orientation` says."""
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(path, f"unsupported image shape {arr.shape}")
    arr = _ORIENT[orientation](arr) if orientation in _ORIENT else arr
    return np.ascontiguousarray(arr if arr.shape[2] == 1 else arr[:, :, [2, 1, 0, 3][:arr.shape[2]]])  # BGR(A)


def _check_readable(path: Path) -> None:
    """ImageError unless `path` is a non-empty file that can be opened for reading."""
    _check_file(path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read ({exc.strerror or exc})") from None


def check_image(path: str | Path) -> None:
    """Raise ImageError if `path` cannot be read as an image: missing, empty, unreadable or undecodable.

    PNG, JPEG, TIFF and the other raster formats are decoded in full (truncation is found); a camera
    RAW file is opened and its header parsed, but not demosaiced.
    """
    path = Path(path)
    if not is_raw(path):
        read_image(path)
        return
    _check_readable(path)
    import rawpy

    try:
        with libraw_stderr(path) as said, rawpy.imread(str(path)):
            pass
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as exc:
        raise ImageError(path, "cannot decode RAW: corrupt, truncated or not a RAW file "
                               f"({libraw_reason(exc, said)})") from None


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode PNG/JPEG bytes to an RGB (or single-channel, for coc maps) array, keeping 16 bits."""
    data = bytes(data)
    check_dimensions(data, name)
    arr = _imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR, name)
    if arr is None:
        raise ImageError(name, "cannot decode image bytes")
    if arr.ndim == 2:
        return arr
    return _to_rgb(arr, name)


def encode_png(arr: np.ndarray) -> bytes:
    """Encode an RGB (H, W, 3) or single-channel (H, W) uint8/uint16 array as PNG bytes."""
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png needs uint8 or uint16, got {arr.dtype}")
    bgr = arr[:, :, ::-1] if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def encode_image(path: str | Path, arr: np.ndarray) -> bytes:
    """The file `write_image(path, arr)` writes, as bytes: the format follows the extension (16-bit needs PNG or
    TIFF); `arr` is gray (H, W) or (H, W, 1), gray + alpha (H, W, 2: PNG only), RGB (H, W, 3) or RGBA (H, W, 4)."""
    path = Path(path)
    if arr.ndim == 3 and arr.shape[2] == 2:
        if path.suffix.lower() not in (".png", "") or arr.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{path}: gray + alpha is written as an 8 or 16-bit .png, not {path.suffix} {arr.dtype}")
        return _gray_alpha_png(arr)
    bgr = arr[:, :, [2, 1, 0, 3][:arr.shape[2]]] if arr.ndim == 3 and arr.shape[2] in (3, 4) else arr
    ext = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    if arr.dtype == np.uint16 and ext in (".jpg", ".jpeg"):
        raise ValueError(f"{path}: 16-bit output needs .png or .tif, not {ext}")
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"{path}: cannot encode as {ext}")
    return buf.tobytes()


def _gray_alpha_png(arr: np.ndarray) -> bytes:
    """PNG bytes of colour type 4 (gray and alpha, 8 or 16 bits as `arr`) of an (H, W, 2) array: OpenCV writes no
    two-channel PNG. Rows filtered by Sub, compressed at zlib level 1 as `encode_png`'s."""
    h, w = arr.shape[:2]
    wide = arr.dtype == np.uint16
    rows = np.ascontiguousarray(arr, dtype=">u2" if wide else np.uint8).view(np.uint8).reshape(h, -1)
    step = 4 if wide else 2  # bytes per pixel
    sub = rows.copy()
    sub[:, step:] -= rows[:, :-step]  # each byte less the same byte of the pixel before it, modulo 256
    body = zlib.compress(np.concatenate([np.ones((h, 1), np.uint8), sub], axis=1).tobytes(), 1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", w, h, 16 if wide else 8, 4, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def write_image(path: str | Path, arr: np.ndarray) -> None:
    """Write a gray, RGB or RGBA uint8/uint16 array (`encode_image`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, encode_image(path, arr))


def bit_depth(arr: np.ndarray) -> int:
    """8 or 16, from the array's sample type."""
    return 16 if arr.dtype == np.uint16 else 8


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1]."""
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    return arr.astype(np.float32) / scale


def from_float(x: np.ndarray, depth: int) -> np.ndarray:
    """float in [0, 1] -> uint8 (depth 8) or uint16 (depth 16), rounded and clipped."""
    if depth == 16:
        return np.clip(np.rint(x * 65535.0), 0, 65535).astype(np.uint16)
    if depth == 8:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"bit depth must be 8 or 16, got {depth}")


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding, x in [0, 1]."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding, x in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)
