"""An animated PNG / WebP or a TIFF of several pages given as a photograph: its first frame was read silently (ingest,
deblur, every reader of `io.images`); now it is refused in one line naming the file and its frame count, read from
the headers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from defocuskit.io.formats import ImageError
from defocuskit.io.images import read_image, write_image


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [(rng.random((24, 32, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _pil(ext: str) -> Callable[[Path, list[np.ndarray]], None]:
    def write(path: Path, frames: list[np.ndarray]) -> None:
        first, *rest = [Image.fromarray(f) for f in frames]
        extra = {"lossless": True} if ext == "webp" else {}
        first.save(path, save_all=bool(rest), append_images=rest, duration=100, **extra)
    return write


def _cv_pages(path: Path, frames: list[np.ndarray]) -> None:
    assert cv2.imwritemulti(str(path), [f[:, :, ::-1] for f in frames])


WRITERS = {"apng": ("png", _pil("png"), "an animated image of 3 frames"),
           "webp": ("webp", _pil("webp"), "an animated image of 3 frames"),
           "tiff": ("tif", _pil("tif"), "a TIFF of 3 full-size pages"),
           "opencv tiff": ("tiff", _cv_pages, "a TIFF of 3 full-size pages")}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_multi_frame_image_is_refused_naming_its_frame_count(tmp_path, kind):
    ext, write, said = WRITERS[kind]
    path = tmp_path / f"shot.{ext}"
    write(path, _frames(3))
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value) == (f"{path}: {said}, not a photograph of one scene: save the frame you mean as an image "
                                 "of its own (only the first would be read)")
    write(path, _frames(1))  # one frame of the same format is read as before
    np.testing.assert_array_equal(read_image(path), _frames(1)[0])


def test_a_tiffs_thumbnail_page_is_not_a_second_picture(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    photo = _frames(1)[0]
    with tifffile.TiffWriter(tmp_path / "shot.tif") as tif:
        tif.write(photo, photometric="rgb")
        tif.write(photo[::4, ::4], photometric="rgb", subfiletype=1)  # a reduced-resolution copy
    np.testing.assert_array_equal(read_image(tmp_path / "shot.tif"), photo)
    with tifffile.TiffWriter(tmp_path / "unmarked.tif") as tif:  # a thumbnail some writers leave unmarked
        tif.write(photo, photometric="rgb")
        tif.write(photo[::4, ::4], photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "unmarked.tif"), photo)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for frame in _frames(2):
            tif.write(frame, photometric="rgb")
    with pytest.raises(ImageError, match="a TIFF of 2 full-size pages"):
        read_image(tmp_path / "pages.tif")


def test_ingest_rejects_an_animated_shot_and_keeps_the_others(tmp_path):
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    root = tmp_path / "pairs"
    sharp = np.kron(_frames(1)[0][:6, :8], np.ones((4, 4, 1), np.uint8))
    blur = cv2.GaussianBlur(sharp, (0, 0), 1.5)
    for stem in ("a", "b"):
        write_image(root / "sharp" / f"{stem}.png", sharp)
    write_image(root / "blur" / "a.png", blur)
    _pil("webp")(root / "blur" / "b.webp", [blur, sharp])
    manifest = run_ingest({"pairs": root}, IngestOptions(out=str(tmp_path / "out"), workers=0, register="none",
                                                         split_by="train"), progress=False)
    assert manifest["counts"]["samples"] == 1
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["reason"].split(",")[0]) for r in rejects] == \
        [("b.webp", "an animated image of 2 frames")]


def test_cli_deblur_refuses_an_animated_input_before_any_work(tmp_path):
    from test_infer import _export_nafnet
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    write_image(tmp_path / "in" / "good.png", _frames(1)[0])
    _pil("png")(tmp_path / "in" / "anim.png", _frames(3))
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "in" / "good.png"), str(tmp_path / "in" / "anim.png"),
                                   "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"{tmp_path / 'in' / 'anim.png'}: an animated image of 3 frames" in res.output
    assert not (tmp_path / "o").exists()
