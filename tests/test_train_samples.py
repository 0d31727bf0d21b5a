"""What the training stream hands the methods from a shard's members: gray images, the CoC map's encoding, and a
folder that data.train names twice (its weight)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from defocuskit.config.recipe import DataConfig
from defocuskit.data.reader import ShardError, decode_sample
from defocuskit.io.images import encode_png
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.augment import to_tensors
from defocuskit.train.data import check_data

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "nafnet-tiny.yaml")


def _raw(**members: np.ndarray) -> dict:
    return {"__key__": "k", **{f"{n}.png": encode_png(a) for n, a in members.items()},
            "json": json.dumps({"f_number": 2.8}).encode()}


@pytest.mark.parametrize("channels", [1, 3])
def test_a_gray_pair_trains_as_its_own_luminance(channels):
    # before: "axes don't match array" (data.channels 3) or a matmul error (1) stopped the run at the first gray sample
    gray = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    sample = decode_sample(_raw(sharp=gray, blur=gray // 2))
    out = to_tensors(sample, "paired", DataConfig(image_size=8, channels=channels, augment=False),
                     np.random.default_rng(0))
    assert out["sharp"].shape == (channels, 8, 8)
    for c in range(channels):  # 16-bit values kept, the same in every channel
        np.testing.assert_allclose(out["sharp"][c].numpy(), gray / 65535.0, atol=1e-7)
        np.testing.assert_allclose(out["blur"][c].numpy(), (gray // 2) / 65535.0, atol=1e-7)


@pytest.mark.parametrize("coc", [np.full((8, 8), 12, np.uint8), np.full((8, 8, 3), 12 * 256, np.uint16)])
def test_a_coc_png_that_is_not_16_bit_grey_is_refused_not_read_256_times_too_small(coc):
    # before: an 8-bit map of 12 px trained as 0.047 px, without a word; a colour one stopped later in the loss
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ShardError, match="coc.png is .* PNG, not 16-bit grey"):
        decode_sample(_raw(sharp=img, blur=img, coc=coc))


def test_the_16_bit_coc_png_reads_in_pixels():
    img = np.zeros((8, 8, 3), np.uint8)
    sample = decode_sample(_raw(sharp=img, blur=img, coc=np.full((8, 8), 12 * 256, np.uint16)))
    assert float(sample["coc"].max()) == 12.0


def test_a_folder_named_twice_by_data_train_is_read_twice_its_weight(tmp_path):
    # an entry repeated is how a list weights a folder (tools/loso_real.py --real-pairs N lists the real pairs N times)
    (tmp_path / "s").mkdir()
    with wds.TarWriter(str(tmp_path / "s" / "train-000000.tar")) as w:
        w.write(_raw(sharp=np.zeros((8, 8, 3), np.uint8), blur=np.zeros((8, 8, 3), np.uint8)))
    shard = str(tmp_path / "s" / "train-000000.tar")
    urls = check_data(load_recipe(TINY, [f"data.train=[{tmp_path / 's'}, {tmp_path / 's'}]"]), get_method("nafnet"))
    assert urls == [shard, shard]
