"""`ingest --render`: what a render keeps of its photo (the sharp reference, what stays in focus) and the thin lens
of metric depth as a camera's sensor gives it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.sample import IngestError, IngestOptions
from defocuskit.io.images import srgb_to_linear

H, W = 48, 72


def run(root: Path, out: Path, **kw) -> dict[str, dict]:
    base = {"out": str(out), "workers": 0, "render_f_numbers": (2.0,), "render_noise": False, "split_by": "train"}
    run_ingest({"render": root}, IngestOptions(**{**base, **kw}), progress=False)
    return {s["key"]: s for s in iter_samples(out)}


def test_near_white_highlights_keep_their_colour_in_the_reference_and_in_focus(tmp_path):
    """Restored highlights are light for the blur to spread: the sharp reference is the photo, and a near-white
    highlight in focus keeps its colour in the blurred shot (it was (255, 153, 153) for (250, 140, 140)), while one
    in the blurred background still spreads its restored light."""
    root = tmp_path / "photos"
    for sub in ("image", "depth", "focal"):
        (root / sub).mkdir(parents=True)
    bgr = np.full((H, W, 3), 90, np.uint8)
    bgr[23, 13] = bgr[23, 55] = (140, 140, 250)  # near-white point highlights, in focus and behind
    depth = np.full((H, W), 230, np.uint8)
    depth[:, : W // 2] = 50
    assert cv2.imwrite(str(root / "image" / "h.png"), bgr) and cv2.imwrite(str(root / "depth" / "h.png"), depth)
    assert cv2.imwrite(str(root / "focal" / "h.png"), np.where(depth == 50, 255, 0).astype(np.uint8))
    got = run(root, tmp_path / "out", render_coc_scale=24.0)
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float64)
    sharp, blur = got["render/h/sharp"]["sharp"] / 257.0, got["render/h/f2"]["blur"] / 257.0
    assert np.abs(sharp - photo).max() <= 0.6
    assert np.abs(blur[18:29, 8:19] - photo[18:29, 8:19]).max() <= 0.6
    plain = run(root, tmp_path / "plain", render_coc_scale=24.0, render_highlights=1.0)["render/h/f2"]["blur"] / 257.0
    behind = (slice(16, 31), slice(48, 63))
    light = [float(srgb_to_linear(b[behind] / 255.0).sum() - srgb_to_linear(90 / 255.0) * b[behind].size)
             for b in (blur, plain)]
    assert light[0] > 1.5 * light[1]


def thin_lens_px(f_number: float, depth_m: float, focus_m: float, focal_mm: float, sensor_mm: float,
                 long_side: int) -> float:
    """The textbook blur circle c = A |S2 - S1| / S2 f / (S1 - f), A = f / N, on a sensor `sensor_mm` wide across
    `long_side` pixels."""
    s1, s2, f = focus_m * 1000.0, depth_m * 1000.0, focal_mm
    return (f / f_number) * abs(s2 - s1) / s2 * f / (s1 - f) / sensor_mm * long_side


def test_metric_depth_spans_the_camera_sensor_over_the_long_side_of_a_portrait_photo(tmp_path):
    """--render-sensor-width is the camera's (36 mm full frame): a portrait photo's long side spans it as a
    landscape one's does, so the same scene gives the same CoC in pixels (a portrait's was 2/3 of it)."""
    for name, (h, w) in {"land": (H, W), "port": (W, H)}.items():
        root = tmp_path / name
        for sub in ("image", "depth"):
            (root / sub).mkdir(parents=True)
        assert cv2.imwrite(str(root / "image" / "a.png"), np.full((h, w, 3), 120, np.uint8))
        depth = np.full((h, w), 5.0, np.float32)
        depth[: h // 2] = 1.0
        np.save(root / "depth" / "a.npy", depth)
        got = run(root, tmp_path / f"{name}-out", render_depth_kind="metric", render_focus="2",
                  render_focal_length_mm=50.0, render_sensor_width_mm=36.0)["render/a/f2"]
        coc = signed_coc(got)
        for row, depth_m in ((2, 1.0), (h - 3, 5.0)):
            want = thin_lens_px(2.0, depth_m, 2.0, 50.0, 36.0, max(h, w))
            assert abs(abs(coc[row, w // 2]) - want) < 0.01  # coc.png holds 1/256 px
        assert coc[2, w // 2] < 0 < coc[h - 3, w // 2]  # in front of the focal plane negative
        assert got["meta"]["sensor_width_mm"] == round(36.0 * w / max(h, w), 4)


def test_metric_depth_with_no_data_zeros_is_one_line_naming_the_depth_map(tmp_path):
    """A 16-bit depth PNG in mm with 0 where the depth camera saw nothing: one reject line naming the map and its
    zeros for every sample of the photo (it was a CoC 'more than twice the long side' naming the photo, at every
    f-number, with the sharp reference kept)."""
    root = tmp_path / "photos"
    for sub in ("image", "depth"):
        (root / sub).mkdir(parents=True)
    assert cv2.imwrite(str(root / "image" / "z.png"), np.full((H, W, 3), 120, np.uint8))
    depth = np.full((H, W), 5000, np.uint16)
    depth[:, : W // 2], depth[:3, :3] = 2000, 0
    assert cv2.imwrite(str(root / "depth" / "z.png"), depth)
    out = tmp_path / "out"
    with pytest.raises(IngestError):
        run(root, out, render_depth_kind="metric", render_focus="2", render_f_numbers=(2.0, 8.0))
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 3 and {r["file"] for r in rejects} == {str(root / "depth" / "z.png")}
    assert all("metric depth of 0 or less at 9 of" in r["reason"] for r in rejects)


def test_a_mask_marking_nothing_in_focus_says_so(tmp_path):
    """A 0/1 mask (black in a viewer) is a reject line saying that nothing is marked in focus and how bright it
    is, not 'empty or does not match the depth map (48, 72)' beside a map of the same shape."""
    root = tmp_path / "photos"
    for sub in ("image", "depth", "focal"):
        (root / sub).mkdir(parents=True)
    assert cv2.imwrite(str(root / "image" / "m.png"), np.full((H, W, 3), 120, np.uint8))
    assert cv2.imwrite(str(root / "depth" / "m.png"), np.tile(np.arange(W, dtype=np.uint8) * 3, (H, 1)))
    mask = np.zeros((H, W), np.uint8)
    mask[:, :10] = 1
    assert cv2.imwrite(str(root / "focal" / "m.png"), mask)
    with pytest.raises(IngestError):
        run(root, tmp_path / "out")
    reasons = {json.loads(line)["reason"] for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()}
    assert reasons == {"focal mask with no pixel marked in focus (brightest 1 of 255): white (above half) marks what "
                       "is in focus"}


def test_a_focus_value_beyond_an_8_bit_maps_0_to_1_is_a_reject_line(tmp_path):
    """--render-focus 128 meant in 8-bit units, on a grey PNG read as 0-1: a reject line naming the map (it put
    nothing in focus: f/2 rejected as 'a CoC of 196 px', f/8 written with everything blurred by ~49 px)."""
    root = tmp_path / "photos"
    for sub in ("image", "depth"):
        (root / sub).mkdir(parents=True)
    assert cv2.imwrite(str(root / "image" / "v.png"), np.full((H, W, 3), 120, np.uint8))
    depth = np.full((H, W), 200, np.uint8)
    depth[:, : W // 2] = 50
    assert cv2.imwrite(str(root / "depth" / "v.png"), depth)
    with pytest.raises(IngestError):
        run(root, tmp_path / "out", render_focus="128", render_f_numbers=(2.0, 8.0))
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 3 and {r["file"] for r in rejects} == {str(root / "depth" / "v.png")}
    assert all(r["reason"].startswith("--render-focus 128 is beyond this map's 0-1") for r in rejects)
    got = run(root, tmp_path / "ok", render_focus="0.2", render_f_numbers=(8.0,))  # 51/255: the left half in focus
    assert np.abs(signed_coc(got["render/v/f8"])[:, : W // 2]).max() < 0.01


def test_a_sampled_or_given_focus_renders_past_a_mask_it_does_not_use(tmp_path):
    """--render-focus sample (or a value) does not read focal/: a blank mask there no longer rejects the photo."""
    root = tmp_path / "photos"
    for sub in ("image", "depth", "focal"):
        (root / sub).mkdir(parents=True)
    assert cv2.imwrite(str(root / "image" / "s.png"), np.full((H, W, 3), 120, np.uint8))
    assert cv2.imwrite(str(root / "depth" / "s.png"), np.tile(np.arange(W, dtype=np.uint8) * 3, (H, 1)))
    assert cv2.imwrite(str(root / "focal" / "s.png"), np.zeros((H, W), np.uint8))
    for focus in ("sample", "0.5"):
        got = run(root, tmp_path / focus, render_focus=focus)
        assert set(got) == {"render/s/f2", "render/s/sharp"}
