"""A PNG's tRNS transparency is read and kept: OpenCV reads a palette or RGB PNG's tRNS as an alpha channel, but drops
a gray PNG's (one gray value marked transparent), so `deblur` wrote such a PNG back fully opaque. Now a gray PNG with
a tRNS value reads as gray + alpha, and `deblur` writes a gray PNG with transparency (tRNS or an alpha channel) as a
gray + alpha PNG of its bit depth: the deblurred gray values as they are, the input's transparent pixels transparent."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.inference.files import deblur_files
from defocuskit.io.images import read_image, read_image_channels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(samples: np.ndarray, depth: int, colour: int, trns: bytes | None = None, plte: bytes | None = None,
         icc: bytes | None = None) -> bytes:
    """A PNG of `samples` ((H, W, C) integers at `depth` bits, filter 0) of colour type `colour`, with the chunks
    given."""
    h, w = samples.shape[:2]
    flat = samples.reshape(h, -1)
    if depth == 16:
        rows = [r.astype(">u2").tobytes() for r in flat]
    elif depth == 8:
        rows = [r.astype(np.uint8).tobytes() for r in flat]
    else:  # samples packed `depth` bits each, high bits first
        rows = [np.packbits(np.unpackbits(r.astype(np.uint8)[:, None], axis=1)[:, 8 - depth:].ravel()).tobytes()
                for r in flat]
    chunks = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
    if icc is not None:
        chunks += _chunk(b"iCCP", b"gray\0\0" + zlib.compress(icc))
    chunks += (_chunk(b"PLTE", plte) if plte else b"") + (_chunk(b"tRNS", trns) if trns is not None else b"")
    body = zlib.compress(b"".join(b"\0" + r for r in rows))
    return b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _gray(depth: int, key: int, shape: tuple[int, int] = (24, 40)) -> np.ndarray:
    """Seeded gray samples of `depth` bits with a block of the `key` value (the transparent corner)."""
    rng = np.random.default_rng(depth)
    g = rng.integers(0, 1 << depth, shape)
    g[:6, :8] = key
    return g


@pytest.mark.parametrize("depth, key, decoded", [(8, 7, 7), (16, 1234, 1234), (2, 1, 85)])
def test_a_gray_png_with_a_trns_value_reads_with_its_transparency(tmp_path, depth, key, decoded):
    g = _gray(depth, key)
    (tmp_path / "t.png").write_bytes(_png(g[:, :, None], depth, 0, trns=struct.pack(">H", key)))
    arr = read_image_channels(tmp_path / "t.png")
    assert arr.shape == (*g.shape, 4) and arr.dtype == (np.uint16 if depth == 16 else np.uint8)
    assert np.array_equal(arr[:, :, 3] == 0, g == key)  # transparent exactly where the tRNS value is
    assert np.all(arr[:, :, 3][g != key] == np.iinfo(arr.dtype).max)
    gray = cv2.imread(str(tmp_path / "t.png"), cv2.IMREAD_UNCHANGED)  # the samples as OpenCV reads them
    assert np.all(gray[g == key] == decoded)
    assert np.array_equal(arr[:, :, :3], np.repeat(gray[:, :, None], 3, axis=2))
    assert np.array_equal(read_image(tmp_path / "t.png"), arr[:, :, :3])  # read_image: gray repeated, as before
    if depth < 16:  # a key beyond the bit depth marks nothing (libpng ignores it)
        (tmp_path / "bad.png").write_bytes(_png(g[:, :, None], depth, 0, trns=struct.pack(">H", 1 << depth)))
        assert read_image_channels(tmp_path / "bad.png").shape == (*g.shape, 1)


def test_deblur_keeps_the_transparency_of_trns_pngs(tmp_path: Path) -> None:
    from PIL import Image
    from test_infer import _export_nafnet

    import defocuskit

    profile = bytearray(128)
    profile[16:20] = b"GRAY"  # a gray profile (the colour space is all deblur looks at)
    (tmp_path / "in").mkdir()
    g8, g16 = _gray(8, 7), _gray(16, 1234)
    (tmp_path / "in" / "gray8.png").write_bytes(_png(g8[:, :, None], 8, 0, struct.pack(">H", 7), icc=bytes(profile)))
    (tmp_path / "in" / "gray16.png").write_bytes(_png(g16[:, :, None], 16, 0, struct.pack(">H", 1234)))
    la = np.dstack([g8, np.where(g8 == 7, 0, 255)])  # the same picture as a gray + alpha PNG
    (tmp_path / "in" / "la8.png").write_bytes(_png(la, 8, 4))
    rgb = np.dstack([g8, g8[::-1], g8[:, ::-1]])
    (tmp_path / "in" / "rgb8.png").write_bytes(_png(rgb, 8, 2, struct.pack(">HHH", *(int(v) for v in rgb[0, 0]))))
    palette = np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes()
    (tmp_path / "in" / "pal8.png").write_bytes(_png(g8[:, :, None], 8, 3, bytes([255] * 7 + [0]), palette))
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    deblur_files([tmp_path / "in"], ckpt, tmp_path / "out", progress=False)
    api = defocuskit.load(ckpt, device="cpu")
    for name, g, depth in (("gray8", g8, 8), ("gray16", g16, 16), ("la8", g8, 8)):
        data = (tmp_path / "out" / f"{name}.png").read_bytes()
        assert (data[24], data[25]) == (depth, 4), name  # gray + alpha, the input's bit depth
        out = cv2.imread(str(tmp_path / "out" / f"{name}.png"), cv2.IMREAD_UNCHANGED)  # read as gray repeated + alpha
        assert np.array_equal(out[:, :, 3] == 0, g == (1234 if depth == 16 else 7)), name  # the same pixels
        assert np.all(out[:, :, 3][out[:, :, 3] != 0] == (1 << depth) - 1), name
        gray = np.asarray(g, np.uint16 if depth == 16 else np.uint8)
        assert np.abs(out[:, :, 0].astype(np.int64) - api.deblur(gray)).max() <= 1, name  # gray deblurred as gray
    with Image.open(tmp_path / "out" / "gray8.png") as im:
        assert im.mode == "LA" and im.info.get("icc_profile") == bytes(profile)  # the gray profile carried too
    for name, transparent in (("rgb8", np.all(rgb == rgb[0, 0], axis=2)), ("pal8", g8 == 7)):
        out = cv2.imread(str(tmp_path / "out" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert out.shape == (*g8.shape, 4) and np.array_equal(out[:, :, 3] == 0, transparent), name  # RGBA
