"""A JPEG damaged in the middle of its compressed data (bytes cut out or overwritten, the end-of-image marker still
there) is a damaged image, not a photo with a garbage lower half: libjpeg only prints a warning, which io.jpeg_damage
catches, and every reader of user images (ingest, deblur, read_image) refuses it in one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.io.formats import ImageError
from defocuskit.io.images import check_image, decode_image, read_image


def _jpeg(params: tuple[int, ...] = (), gray: bool = False, size: tuple[int, int] = (96, 128)) -> bytes:
    """A textured JPEG (seeded), with OpenCV's write `params` (progressive, restart markers)."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (*size, 3), dtype=np.uint8), (0, 0), 1.5)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, *params])
    assert ok
    return buf.tobytes()


def _entropy_data(data: bytes) -> tuple[int, int]:
    """Where the first scan's compressed data begins (after its SOS header) and where the file's EOI is."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big"), len(data) - 2


def _cut(data: bytes) -> bytes:
    """`data` with a quarter of its compressed data cut out of the middle; it still ends with FFD9."""
    start, end = _entropy_data(data)
    mid, n = (start + end) // 2, (end - start) // 4
    return data[:mid] + data[mid + n:]


def _overwritten(data: bytes) -> bytes:
    """`data` with a quarter of its compressed data, in the middle, overwritten (no 0xFF among the new bytes)."""
    start, end = _entropy_data(data)
    mid, n = (start + end) // 2, (end - start) // 4
    return data[:mid] + bytes((i * 37 + 11) % 255 for i in range(n)) + data[mid + n:]


def _marker(data: bytes) -> bytes:
    """`data` with two bytes in the middle of its compressed data overwritten by a restart marker (FF D3)."""
    start, end = _entropy_data(data)
    mid = (start + end) // 2
    return data[:mid] + b"\xff\xd3" + data[mid + 2:]


@pytest.mark.parametrize("damage", [_cut, _overwritten, _marker])
def test_a_jpeg_damaged_in_the_middle_is_refused_naming_it(tmp_path, capfd, damage):
    good = _jpeg()
    bad = damage(good)
    assert bad.endswith(b"\xff\xd9")
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None  # what OpenCV gives: an image
    assert "Corrupt JPEG data" in capfd.readouterr().err  # and a line on stderr, naming no file
    (tmp_path / "x.jpg").write_bytes(bad)
    with pytest.raises(ImageError, match=r"x\.jpg: damaged JPEG data \(libjpeg: Corrupt JPEG data: .*\)$"):
        read_image(tmp_path / "x.jpg")
    with pytest.raises(ImageError, match=r"x\.jpg: damaged JPEG data"):
        check_image(tmp_path / "x.jpg")
    with pytest.raises(ImageError, match=r"s1/blur\.jpg: damaged JPEG data"):
        decode_image(bad, "s1/blur.jpg")
    assert "Corrupt JPEG" not in capfd.readouterr().err  # said once, in the error, not also on the terminal
    (tmp_path / "ok.jpg").write_bytes(good)
    assert np.array_equal(read_image(tmp_path / "ok.jpg"), cv2.imdecode(np.frombuffer(good, np.uint8), 1)[..., ::-1])


@pytest.mark.parametrize("params", [(cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 2)],
                         ids=["progressive", "restart-markers"])
def test_progressive_and_restart_marker_jpegs_read_intact_and_refused_damaged(tmp_path, params):
    good = _jpeg(params)
    (tmp_path / "ok.jpg").write_bytes(good)
    assert np.array_equal(read_image(tmp_path / "ok.jpg"), cv2.imdecode(np.frombuffer(good, np.uint8), 1)[..., ::-1])
    (tmp_path / "cut.jpg").write_bytes(_cut(good))
    with pytest.raises(ImageError, match=r"cut\.jpg: damaged JPEG data \(libjpeg: "):
        read_image(tmp_path / "cut.jpg")


def test_a_gray_jpeg_reads_as_before(tmp_path):
    good = _jpeg(gray=True)
    (tmp_path / "g.jpg").write_bytes(good)
    gray = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(read_image(tmp_path / "g.jpg"), np.repeat(gray[:, :, None], 3, axis=2))


def test_other_stderr_output_during_a_decode_is_passed_on(capfd):
    from defocuskit.io.jpeg_damage import decode_with_jpeg_damage

    def noisy() -> int:
        os.write(2, b"another thread's line\nCorrupt JPEG data: 3 extraneous bytes before marker 0xd9\n")
        return 7

    assert decode_with_jpeg_damage(noisy) == (7, "Corrupt JPEG data: 3 extraneous bytes before marker 0xd9")
    benign = b"Warning: unknown JFIF revision number 3.01\n"  # a warning about no pixel: no damage
    assert decode_with_jpeg_damage(lambda: os.write(2, benign)) == (len(benign), None)
    err = capfd.readouterr().err
    assert "another thread's line\n" in err and "unknown JFIF revision" in err and "Corrupt JPEG" not in err


def test_ingest_rejects_a_damaged_jpeg_with_the_reason(tmp_path):
    from test_cuhk_blur import make_cuhk

    root = tmp_path / "cuhk"
    make_cuhk(root, "blurred", n=3, extras=False)
    victim = root / "image" / "out_of_focus0002.jpg"
    victim.write_bytes(_cut(victim.read_bytes()))
    res = CliRunner().invoke(app, ["ingest", "--cuhk-blur", str(root), "--out", str(tmp_path / "out"),
                                   "--workers", "0", "--cuhk-white-is", "blurred"])
    assert res.exit_code == 0, res.output
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["reason"].split(" (")[0]) for r in rejects] == [
        ("out_of_focus0002.jpg", "damaged JPEG data")]


def test_deblur_refuses_a_damaged_jpeg_before_any_work(tmp_path):
    from test_infer import _export_nafnet

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    (tmp_path / "x.jpg").write_bytes(_cut(_jpeg((), size=(48, 64))))
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "x.jpg"), "--checkpoint", str(ckpt),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "x.jpg: damaged JPEG data (libjpeg: Corrupt JPEG data" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
