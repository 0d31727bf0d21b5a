"""A training patch (ingest --patch N) keeps its image's pixel pitch: its `sensor_width_mm` is the width in mm the
patch covers (the image's x patch / width), so `eval --split train --coc fnumber` and the Wiener baseline give a
patch its image's CoC; before, a patch kept the whole image's sensor width across its N pixels (a CoC width / N times
too small). Its `align.matrix` maps the patch's own pixel coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from test_portrait_sensor import TURNS, _fnumber_coc, _shot, _texture

from defocuskit.data import postprocess
from defocuskit.data.ingest import run_ingest
from defocuskit.data.postprocess import cut_patches
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions, Sample
from defocuskit.data.sources.synthetic import warp_reflect
from defocuskit.eval.baselines import wiener_coc_px
from defocuskit.imaging import optics


def _bracket(tmp_path, turn: str, patch: int | None) -> list[dict]:
    """The f/2.8 samples (metadata and blurred image) of one --raw-dir bracket, 96 x 64 turned as `turn` says,
    ingested as training patches of `patch` px or whole (None)."""
    root = tmp_path / "in"
    if not root.exists():
        _shot(root / "s" / "ref.jpg", 16.0, **TURNS[turn])
        _shot(root / "s" / "wide.jpg", 2.8, blur=1.0, **TURNS[turn])
    out = tmp_path / f"out{patch}"
    run_ingest({"raw": root}, IngestOptions(out=str(out), workers=0, split_by="train", register="none", patch=patch),
               progress=False)
    return [s for s in iter_samples(str(out)) if s.get("blur") is not None]


@pytest.mark.parametrize("turn", ["landscape", "pixels"])
def test_a_patch_covers_its_share_of_the_sensor_and_gets_its_images_cameras_coc(tmp_path, turn):
    (whole,) = _bracket(tmp_path, turn, None)
    patches = _bracket(tmp_path, turn, 32)
    assert len(patches) == 6
    want = _fnumber_coc(whole["meta"], whole["blur"])
    for p in patches:
        meta = p["meta"]
        assert meta["width"] == 32
        assert meta["sensor_width_mm"] == pytest.approx(whole["meta"]["sensor_width_mm"] * 32 / whole["meta"]["width"])
        assert _fnumber_coc(meta, p["blur"]) == pytest.approx(want, rel=1e-4)  # was width / 32 times too small
        assert wiener_coc_px(meta, p["blur"].shape[:2]) == pytest.approx(want, rel=1e-4)


def test_an_unknown_sensor_width_stays_unknown_in_a_patch():
    assert optics.sensor_width_of_crop(None, 32, 96) is None
    assert optics.sensor_width_of_crop(36.0, 32, 96) == 12.0
    img = np.zeros((40, 60, 3), np.uint8)
    for p in cut_patches(Sample("k", sharp=img, blur=img, meta={"sensor_width_mm": None}), 20):
        assert p.meta["sensor_width_mm"] is None


def test_a_patchs_align_matrix_maps_its_own_pixels(tmp_path):
    """An injected warp (synthetic misalignment: sharp(p) = reference(M p)), cut into patches: each patch's sharp is
    its reference patch warped by the patch's matrix (away from the borders the warp reflects at)."""
    reference = _texture()  # 64 x 96
    scale, (cy, cx), shift = 1.03, (31.5, 47.5), (1.5, -2.0)
    m = np.array([[scale, 0.0, cx - scale * cx + shift[0]], [0.0, scale, cy - scale * cy + shift[1]], [0, 0, 1.0]])
    sharp = warp_reflect(reference, m)
    sample = Sample("k", sharp=sharp, blur=reference, meta={"align": {"method": "injected", "matrix": m.tolist()}})
    for p in cut_patches(sample, 32):
        y, x = (int(v) for v in p.key.split("/p")[1].split("_"))
        patch_m = np.asarray(p.meta["align"]["matrix"])
        again = warp_reflect(reference[y:y + 32, x:x + 32], patch_m)
        inner = (slice(6, 26), slice(6, 26))
        error = np.abs(again[inner].astype(int) - p.sharp[inner].astype(int)).max()
        assert error <= 1, (y, x)  # was the image's matrix: up to 41 levels off
    assert sample.meta["align"]["matrix"] == m.tolist()  # the image's record is not changed


def test_matrix_in_crop_keeps_the_rows_and_is_the_warp_seen_from_the_crops_corner():
    h = np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -2.0], [1e-4, -2e-4, 1.0]])
    crop = np.asarray(postprocess.matrix_in_crop(h, 10, 20))
    u = np.array([5.0, 7.0, 1.0])
    image = h @ (u + [20.0, 10.0, 0.0])
    moved = crop @ u
    assert moved[:2] / moved[2] == pytest.approx(image[:2] / image[2] - [20.0, 10.0])
    assert np.asarray(postprocess.matrix_in_crop(h[:2], 10, 20)).shape == (2, 3)
    assert postprocess.matrix_in_crop(h, 0, 0) == pytest.approx(h)
