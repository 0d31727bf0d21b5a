"""`ingest --render --render-focus VALUE` with relative or inverse depth: a value far outside the values the map
holds (0.95 on an 8-bit map of 0.1-0.5) focused on nothing in the scene, every shot blurred all over, exit 0; now a
reject line per scene naming the map, the value, its range and the focus that renders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.sample import IngestError, IngestOptions
from tests.test_render_depth_units import render_folder

H, W = 16, 24


def folder(root: Path, depths: dict[str, np.ndarray]) -> Path:
    """A --render folder: a photo per depth map (`near.png` 8-bit grey, `disp.npy` a float array, ...)."""
    return render_folder(root, depths, (H, W))


def ingest(root: Path, out: Path, **kw) -> tuple[dict[str, dict], dict[str, str]]:
    """({stem: its f/2.8 sample}, {file under root: its reject reason}); no sample at all fails the run."""
    opts = IngestOptions(out=str(out), workers=0, render_f_numbers=(2.8,), render_noise=False, split_by="train", **kw)
    try:
        run_ingest({"render": root}, opts, progress=False)
        shots = {s["key"].split("/")[1]: s for s in iter_samples(out) if s["key"].endswith("f2_8")}
    except IngestError as exc:  # every photo rejected: the run fails, the lines are in rejects.jsonl
        assert "no sample written" in str(exc)
        shots = {}
    lines = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return shots, {str(Path(r["file"]).relative_to(root)): r["reason"] for r in lines}


def ramp(lo: float, hi: float) -> np.ndarray:
    return np.tile(np.linspace(lo, hi, W), (H, 1))


def test_a_relative_focus_far_outside_the_maps_values_is_a_reject_line_and_one_a_little_outside_renders(tmp_path):
    """An 8-bit relative map of 26-128 (0.102-0.502) focused at 1.0 or 0.95 rendered every point blurred by more than
    its far end is with the focus at its near end; now a line for it, while a map of 0.502-1 renders at 1.0 (its far
    end sharp). A focus a few percent of the span beyond either end renders."""
    near, far = np.rint(ramp(26, 128)).astype(np.uint8), np.rint(ramp(128, 255)).astype(np.uint8)
    root = folder(tmp_path / "p", {"near.png": near, "far.png": far})
    for focus in ("0.95", "1.0"):
        shots, rejects = ingest(root, tmp_path / focus, render_focus=focus, render_coc_scale=30.0)
        assert set(shots) == {"far"} and set(rejects) == {"depth/near.png"}
        assert rejects["depth/near.png"] == (
            f"--render-focus {focus} is far outside this map's relative depth values (0.102-0.502), beyond its "
            "farthest point by more than the map's span (0.4): that point, the sharpest, blurred more than any point "
            "is with the focus on the map; the focus lies on nothing in the photo and every shot would be blurred all "
            "over. A value on another scale than the map's (an 8/16-bit or false-colour map reads as value / "
            "(2^bits - 1): 128 of 255 is 0.502), or a typo? Give one within 0-0.902")
    assert np.abs(signed_coc(shots["far"])[:, -1]).max() < 0.01  # 255 of 255, the far end, in focus
    for focus in ("0.52", "0.085"):  # beyond the near map's far end, or its near end, by about 4 % of its span
        shots, rejects = ingest(root, tmp_path / f"ok{focus}", render_focus=focus, render_coc_scale=30.0)
        assert set(shots) == {"near", "far"} and not rejects


def test_an_inverse_float_maps_focus_is_checked_in_its_own_values(tmp_path):
    """A disparity map read as its values (2-8, with its CoC scale): 15 lies nearer than its nearest point (the
    largest value) by more than the span, -5 beyond its farthest; 8.3 renders."""
    root = folder(tmp_path / "p", {"disp.npy": ramp(2.0, 8.0).astype(np.float32)})
    kw = {"render_depth_kind": "inverse", "render_coc_scale": 1.0}
    for focus, end in (("15", "nearest"), ("-5", "farthest")):
        shots, rejects = ingest(root, tmp_path / focus, render_focus=focus, **kw)
        assert not shots and rejects["depth/disp.npy"].startswith(
            f"--render-focus {focus} is far outside this map's inverse depth values (2-8), beyond its {end} point by "
            "more than the map's span (6)")
        assert rejects["depth/disp.npy"].endswith("than the map's, or a typo? Give one within -4 to 14")
    shots, rejects = ingest(root, tmp_path / "ok", render_focus="8.3", **kw)
    assert "disp" in shots and not rejects


def test_the_relative_focus_range_is_where_the_sharpest_point_is_as_blurred_as_any_on_the_map():
    """At either end of the range the map's sharpest point gets the CoC that its far end gets with the focus at its
    near end, the most any focus on the map gives (imaging.depth.signed_relative_coc, for both kinds)."""
    from defocuskit.data.sources.render_units import (
        relative_focus_range,  # (new: imported here)
    )
    from defocuskit.imaging.depth import signed_relative_coc

    values = np.linspace(0.1, 0.5, 9)
    low, high = relative_focus_range(0.1, 0.5, as_values=True)
    assert (low, high) == pytest.approx((-0.3, 0.9))
    assert relative_focus_range(0.1, 0.5, as_values=False) == pytest.approx((0.0, 0.9))  # an image map: 0-1
    for kind in ("relative", "inverse"):
        most_on_map = max(np.abs(signed_relative_coc(values, kind, f)).max() for f in values)
        for focus in (low, high):
            assert np.abs(signed_relative_coc(values, kind, focus)).min() == pytest.approx(most_on_map, rel=1e-5)
