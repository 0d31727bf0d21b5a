"""A training patch (ingest --patch N) records the image it was cut from (`patch_of`: that image's height and width,
the patch's corner y, x), so what is relative to a photo's long side reads the image's, not the patch's
(optics.source_long_side): the f-number bound K (`coc_bound_of`, `inference.coc_bound: auto`, `inspect --coc-bound`)
was image side / N times too large on patched shards, a bound that never binds, and a camera's sensor width (the
36 mm default where none is known, as for DPDD; eval's --sensor-width) spanned the patch's side, a CoC image side / N
times too small in `eval --coc fnumber` and the Wiener baseline. A whole image's metadata is stored as before."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_coc_bound import _tar
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data import metadata
from defocuskit.data.coc_bound import coc_bound_of
from defocuskit.data.ingest import run_ingest
from defocuskit.data.inspect import sample_label
from defocuskit.data.postprocess import cut_patches
from defocuskit.data.reader import ShardError, decode_sample, iter_samples, shard_urls
from defocuskit.data.sample import IngestOptions, Sample
from defocuskit.data.shards import encode_members
from defocuskit.eval.baselines import wiener_coc_px
from defocuskit.imaging import optics
from defocuskit.inference.coc_source import CocSource

DPDD_COC = 0.8547  # f/4, 50 mm focused at 2 m, 36 mm (the default) across a 96 x 64 image's long side


def _dpdd(root: Path, out: Path, patch: int | None) -> list[dict]:
    """A one-pair DPDD folder (96 x 64, no sensor width known) ingested whole or as `patch` px patches."""
    if not root.exists():
        rng = np.random.default_rng(0)
        img = (cv2.resize(rng.random((16, 24, 3)), (96, 64), interpolation=cv2.INTER_NEAREST) * 60000)
        for sub in ("source", "target"):
            (root / "train_c" / sub).mkdir(parents=True)
            cv2.imwrite(str(root / "train_c" / sub / "1.png"), img.astype(np.uint16))
    run_ingest({"dpdd": root}, IngestOptions(out=str(out), workers=0, patch=patch), progress=False)
    return list(iter_samples(str(out)))


def _fnumber(source: CocSource, sample: dict) -> float:
    return float(source(sample["blur"].astype(np.float32) / 65535.0, sample["meta"], name=sample["key"])[0, 0])


def test_a_patch_records_its_image_and_a_whole_image_stores_what_it_did():
    img = np.zeros((40, 60, 3), np.uint8)
    patches = cut_patches(Sample("k", sharp=img, blur=img, meta={}), 20)
    assert [p.meta["patch_of"] for p in patches[:2]] == [{"height": 40, "width": 60, "y": 0, "x": 0},
                                                         {"height": 40, "width": 60, "y": 0, "x": 20}]
    assert patches[-1].meta["patch_of"] == {"height": 40, "width": 60, "y": 20, "x": 40}
    whole = metadata.empty_meta(source="dpdd", height=40, width=60)
    assert "patch_of" not in metadata.to_stored(whole)  # an optional key: no whole image's shard changes
    stored = metadata.to_stored({**whole, "height": 20, "width": 20, "patch_of": patches[-1].meta["patch_of"]})
    assert list(stored)[-1] == "patch_of" and metadata.to_python(stored)["patch_of"] == patches[-1].meta["patch_of"]
    assert metadata.to_python(metadata.to_stored(whole))["patch_of"] is None


def test_a_wrong_patch_of_is_refused_in_one_line_naming_it():
    meta = metadata.empty_meta(source="dpdd", height=20, width=20)
    with pytest.raises(metadata.MetadataError, match=r"metadata patch_of: a 20x20 patch at \(x 50, y 0\) does not lie"):
        metadata.to_stored({**meta, "patch_of": {"height": 40, "width": 60, "y": 0, "x": 50}})
    good = metadata.to_stored({**meta, "patch_of": {"height": 40, "width": 60, "y": 0, "x": 40}})
    img = np.zeros((20, 20, 3), np.uint8)
    for wrong, said in (({"height": 40, "width": -1, "y": 0, "x": 0}, "expected the source image's height"),
                        ("40x60", "expected the source image's height"),
                        ({"height": 40, "width": 30, "y": 0, "x": 20}, "does not lie inside a 30x40 image")):
        members = encode_members(img, img, None, {})
        members["json"] = json.dumps({**good, "patch_of": wrong}).encode()
        with pytest.raises(ShardError, match=f"sample k: json: patch_of: .*{said}") as err:
            decode_sample({"__key__": "k", **members})
        assert "\n" not in str(err.value)


def test_the_bound_of_patches_is_relative_to_their_images_long_side(tmp_path: Path) -> None:
    members = encode_members(np.full((32, 32, 3), 128, np.uint8), np.full((32, 32, 3), 128, np.uint8),
                             np.full((32, 32), 2.0, np.float32), {"source": "synthetic", "f_number": 4.0})
    meta = json.loads(members["json"])
    members["json"] = json.dumps({**meta, "patch_of": {"height": 64, "width": 128, "y": 0, "x": 96}}).encode()
    found = coc_bound_of([str(_tar(tmp_path / "train-000000.tar", [("a/p0_96", members)]))])
    assert found.bound == pytest.approx(2.0 * 4.0 / 128)  # was 2 x 4 / 32 = 0.25


def test_patched_shards_give_the_bound_of_the_whole_images(tmp_path: Path) -> None:
    bounds = {}
    for patch in (None, 24):
        out = tmp_path / f"s{patch}"
        run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                   synthetic_f_numbers=(2.8,), split_by="train", patch=patch), progress=False)
        bounds[patch] = coc_bound_of(shard_urls(out, "train")).bound
    assert bounds[24] == pytest.approx(bounds[None], rel=0.1)  # was 2x (48 / 24)
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "s24"), "--coc-bound", "--sheet",
                                      str(tmp_path / "sheet.png")])
    assert result.exit_code == 0 and f"--coc-bound {bounds[24]:.5f}" in result.output
    assert f"--coc-bound {2 * bounds[24]:.5f}" not in result.output


def test_a_patch_is_bounded_at_its_images_long_side():
    edge = CocSource.create("edge", bound=0.1)
    coc = np.full((32, 32), 100.0, np.float32)
    meta = {"f_number": 1.0, "patch_of": {"height": 96, "width": 128, "y": 32, "x": 64}}
    assert edge.bounded(coc, meta).max() == pytest.approx(12.8)  # 0.1 x 128 / f/1; was 0.1 x 32
    assert edge.bounded(coc, {"f_number": 1.0}).max() == pytest.approx(3.2)  # a whole 32 px image
    assert optics.source_long_side(meta, 32, 32) == 128 and optics.source_long_side({}, 32, 48) == 48


def test_a_dpdd_patch_gets_its_images_36mm_default_coc(tmp_path: Path) -> None:
    (whole,) = _dpdd(tmp_path / "dpdd", tmp_path / "whole", None)
    patches = _dpdd(tmp_path / "dpdd", tmp_path / "patches", 32)
    assert len(patches) == 6 and whole["meta"]["sensor_width_mm"] is None
    plain, given = CocSource.create("fnumber"), CocSource.create("fnumber", camera={"sensor_width_mm": 36.0})
    assert _fnumber(plain, whole) == pytest.approx(DPDD_COC, rel=1e-3)
    for p in patches:
        assert _fnumber(plain, p) == pytest.approx(DPDD_COC, rel=1e-3)  # was 0.2849: 36 mm across 32 px
        assert _fnumber(given, p) == pytest.approx(DPDD_COC, rel=1e-3)  # eval --sensor-width 36
        assert wiener_coc_px(p["meta"], p["blur"].shape[:2]) == pytest.approx(DPDD_COC, rel=1e-3)
        assert p["meta"]["patch_of"]["height"] == 64 and p["meta"]["patch_of"]["width"] == 96
    assert "patch at (x 32, y 32) of 96x64" in sample_label(next(p for p in patches if p["key"].endswith("p32_32")))
    assert "patch at" not in sample_label(whole)
