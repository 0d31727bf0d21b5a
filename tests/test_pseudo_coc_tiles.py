"""`defocuskit pseudo-coc` runs the JDRL network in tiles of its training size, as eval runs a tiled model: a whole
2048 x 2048 image took 8 GB (jdrl-tiny), a 512 one 0.9; in tiles 0.55 and 0.43 GB."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_jdrl import jdrl_model_file


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shard folder of one 72 x 100 pair (--pairs): more than one 32 px tile of jdrl-tiny on each axis."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    sharp = cv2.GaussianBlur((rng.random((72, 100, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    for sub, image in (("sharp", sharp), ("blur", cv2.GaussianBlur(sharp, (0, 0), 2.5))):
        (root / "in" / sub).mkdir(parents=True)
        cv2.imwrite(str(root / "in" / sub / "a.png"), image)
    run_ingest({"pairs": root / "in"}, IngestOptions(out=str(root / "shards"), workers=0, register="none"),
               progress=False)
    return root / "shards"


def test_the_network_sees_tiles_of_its_training_size_not_the_whole_image(pairs, tmp_path, monkeypatch):
    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data.reader import iter_samples
    from defocuskit.models.jdrl import JDRL

    seen, real = [], JDRL.pseudo_map

    def spy(self, blur):
        seen.append(tuple(blur.shape))
        return real(self, blur)

    monkeypatch.setattr(JDRL, "pseudo_map", spy)
    write_pseudo_coc(jdrl_model_file(tmp_path / "jdrl.safetensors"), pairs, tmp_path / "coc")
    blur = next(iter_samples(pairs))["blur"]
    assert blur.shape[:2] == (72, 100)
    assert seen and all(b <= 4 and h <= 32 and w <= 32 for b, _, h, w in seen), seen  # jdrl-tiny: 32 px; TILE_BATCH
    assert sum(b for b, *_ in seen) == 3 * 4  # tiles of 32 overlapping by 8: 3 rows of 4
    coc = next(iter_samples(tmp_path / "coc"))["coc"]
    assert coc.shape == (72, 100) and np.isfinite(coc).all() and coc.min() >= 0


def test_tiles_agree_with_the_whole_image_pass(pairs, tmp_path):
    """Within one tile the map is the whole pass's, exactly; across tiles the blended seams move it by about 0.01 px
    (of maps of ~8.6 px), as tiling moves eval's --coc map estimates (0.004-0.012 px on the demo's)."""
    from defocuskit.cli.pseudo_coc import coc_map
    from defocuskit.data.reader import iter_samples
    from defocuskit.inference.load import load_model

    import torch

    torch.manual_seed(0)  # the initial weights: the seams' size depends on them, not on the tests run before
    _, _, model = load_model(jdrl_model_file(tmp_path / "jdrl.safetensors"), expect_method="jdrl")
    blur = next(iter_samples(pairs))["blur"]
    small = blur[:30, :32]
    assert np.array_equal(coc_map(model, small, tile=32), coc_map(model, small))
    whole, tiled = coc_map(model, blur), coc_map(model, blur, tile=32)
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.005 * whole.mean() and diff.max() < 0.02 * whole.mean(), (diff.mean(), diff.max(),
                                                                                    whole.mean())
