"""TIFFs whose channels lie in separate planes (PlanarConfiguration 2: tifffile writing a channel-first array,
Photoshop's "Per Channel" pixel order): OpenCV's decoder interleaved the planes wrongly at 16 bits, with an alpha
plane or float samples, and ingest stored that noise as the photo without a word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.data.sources import realdof
from defocuskit.io.formats import ImageError
from defocuskit.io.images import read_image, read_image_channels


def _photo(channels: int, dtype: type = np.uint16) -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60].astype(np.float64)
    planes = [(x / 59), (y / 39), ((x + y) % 17) / 16, 1 - x / 59][:channels]
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    return (np.stack(planes, axis=-1) * top).astype(dtype)


def _write_planar(path: Path, rgb: np.ndarray, **kwargs) -> Path:
    extra = ["unassalpha"] if rgb.shape[2] == 4 else None
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb", extrasamples=extra,
                     **kwargs)
    return path


@pytest.mark.parametrize("channels,dtype,compression", [(3, np.uint16, None), (3, np.uint16, "zlib"),
                                                        (4, np.uint16, None), (4, np.uint8, None),
                                                        (3, np.float32, None)])
def test_a_tiff_of_separate_planes_is_read_as_written(tmp_path: Path, channels, dtype, compression) -> None:
    rgb = _photo(channels, dtype)
    got = read_image_channels(_write_planar(tmp_path / "p.tif", rgb, compression=compression))
    want = np.rint(rgb * 65535.0).astype(np.uint16) if dtype == np.float32 else rgb
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_a_big_endian_tiff_of_separate_planes_turned_by_its_orientation(tmp_path: Path) -> None:
    rgb = _photo(3)
    path = _write_planar(tmp_path / "p.tif", rgb, byteorder=">", extratags=[(274, "H", 1, 6, False)])
    assert np.array_equal(read_image(path), np.rot90(rgb, -1))


def test_separate_planes_it_cannot_decode_are_one_line_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    """LZW or JPEG strips need imagecodecs, which tifffile may lack: a reject line, not OpenCV's noise."""
    path = _write_planar(tmp_path / "p.tif", _photo(3))

    def lacking(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", lacking)
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert caught.value.path == str(path) and "separate planes" in caught.value.reason
    assert "imagecodecs" in caught.value.reason and "\n" not in str(caught.value)


def test_ingest_stores_the_pixels_of_a_16bit_tiff_of_separate_planes(tmp_path: Path) -> None:
    sharp, blur = _photo(3), _photo(3)[::-1].copy()
    for folder, name, rgb in (("target", "1_gt.tif", sharp), ("source", "1.tif", blur)):
        (tmp_path / "rdof" / folder).mkdir(parents=True)
        _write_planar(tmp_path / "rdof" / folder / name, rgb)
    assert [t.key for t in realdof.list_tasks(tmp_path / "rdof", IngestOptions())] == ["realdof/test/1"]
    result = CliRunner().invoke(app, ["ingest", "--workers", "0", "--realdof", str(tmp_path / "rdof"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (sample,) = iter_samples(tmp_path / "out")
    assert np.array_equal(sample["sharp"], sharp) and np.array_equal(sample["blur"], blur)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is True
