"""`ingest --render --render-depth metric` with a depth map in other units than it is read in (a float map in mm read
as metres, a 16-bit PNG in cm read as mm, a relative 0-1 map declared metric): one reject line naming the map, the
depth range read and the unit that fits, where such renders were near-identity or absurd pairs with exit 0."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.render_photo import render_shot, restore_highlights
from defocuskit.data.sample import IngestError, IngestOptions

H, W = 24, 32
ROOM = np.tile(np.linspace(0.45, 12.0, W, dtype=np.float32), (H, 1))  # a room and beyond: 0.45 m to 12 m
CAMERA = {"render_depth_kind": "metric", "render_sensor_width_mm": 4.0}  # 50 mm lens, 32 px over 4 mm


def folder(root: Path, depths: dict[str, np.ndarray]) -> Path:
    """A --render folder: a photo per depth map (`a.npy`, `b.png`, ...), and `ok.npy`, the room in metres."""
    return render_folder(root, {"ok.npy": ROOM, **depths}, (H, W))


def render_folder(root: Path, depths: dict[str, np.ndarray], shape: tuple[int, int]) -> Path:
    """A --render folder: a random photo of `shape` per depth map (`.npy` saved as an array, else written as an
    image by OpenCV)."""
    for sub in ("image", "depth"):
        (root / sub).mkdir(parents=True)
    for name, depth in depths.items():
        photo = (np.random.default_rng(0).random((*shape, 3)) * 255).astype(np.uint8)
        assert cv2.imwrite(str(root / "image" / f"{Path(name).stem}.png"), photo)
        if name.endswith(".npy"):
            np.save(root / "depth" / name, depth)
        else:
            assert cv2.imwrite(str(root / "depth" / name), depth)
    return root


def ingest(root: Path, out: Path, **kw) -> tuple[dict[str, dict], dict[str, str]]:
    """({stem: its f/2.8 sample}, {file under root: its reject reason}); every reject of a file has one reason."""
    opts = IngestOptions(out=str(out), workers=0, render_f_numbers=(2.8,), render_noise=False, split_by="train",
                         **{**CAMERA, **kw})
    run_ingest({"render": root}, opts, progress=False)
    lines = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    reasons = {str(Path(r["file"]).relative_to(root)): r["reason"] for r in lines}
    assert len(lines) == 2 * len(reasons)  # the photo's f/2.8 and sharp samples: the same line each
    shots = {s["key"].split("/")[1]: s for s in iter_samples(out) if s["key"].endswith("f2_8")}
    return shots, reasons


def test_a_float_map_in_millimetres_read_as_metres_is_a_reject_line_not_an_unblurred_pair(tmp_path):
    """The room in mm as a float map is read as 450 m to 12 km: every aperture rendered the photo unchanged (CoC
    under 0.05 px) with exit 0; now one line names the map, the values read and millimetres, the unit that fits."""
    shots, rejects = ingest(folder(tmp_path / "p", {"mm.npy": ROOM * 1000, "mmtif.tif": ROOM * 1000}), tmp_path / "o")
    assert set(shots) == {"ok"} and np.abs(signed_coc(shots["ok"])).max() > 2.0  # the room in metres blurs
    for name in ("mm.npy", "mmtif.tif"):
        reason = rejects[f"depth/{name}"]
        assert reason.startswith("metric depth in metres: values 450-12000 read (a float map is read in metres)")
        assert "at f/2.8, the widest asked, no point is blurred by more than" in reason
        assert "millimetres? (--render-metric-scale 0.001 reads 0.45-12 m" in reason
        assert "declare --render-depth relative" in reason
    # read as millimetres, as the line says, it renders the room's blur (the same stem: the same focus percentile)
    metres = signed_coc(shots["ok"])
    shots, rejects = ingest(folder(tmp_path / "q", {"ok.npy": ROOM * 1000, "m.npy": ROOM}), tmp_path / "o2",
                            render_metric_scale=0.001)
    assert set(shots) == {"ok"} and np.abs(signed_coc(shots["ok"]) - metres).max() < 0.02
    assert rejects["depth/m.npy"].startswith("metric depth in metres: 0.00045-0.012 read (values x 0.001, "
                                             "--render-metric-scale)")  # and the map in metres is refused


def test_a_16_bit_png_in_centimetres_or_a_relative_map_declared_metric_lies_within_the_focal_length(tmp_path):
    """A 16-bit PNG in cm read as mm puts the room's near wall at 4.5 cm, a relative 0-1 map declared metric its
    nearest point at 2 cm: nearer than the 50 mm lens's focal length, where no lens forms an image. They rendered
    discs of up to ~40 px at f/2.8 on a 32 px photo (or were refused as "more than coc.png holds: give
    --render-coc-scale", an option metric depth refuses); now a line each, with centimetres for the PNG."""
    cm = np.rint(ROOM * 100).astype(np.uint16)
    relative = np.tile(np.linspace(0.02, 1.0, W, dtype=np.float32), (H, 1))
    shots, rejects = ingest(folder(tmp_path / "p", {"cm.png": cm, "rel.npy": relative}), tmp_path / "o")
    assert set(shots) == {"ok"}
    assert rejects["depth/cm.png"].startswith("metric depth in metres: 0.045-1.2 read (an 8/16-bit map as 16-bit "
                                              "millimetres")
    assert "pixels are nearer than the 50 mm focal length" in rejects["depth/cm.png"]
    assert "centimetres? (--render-metric-scale 655.35 reads 0.45-12 m" in rejects["depth/cm.png"]
    reason = rejects["depth/rel.npy"]
    assert reason.startswith("metric depth in metres: values 0.02-1 read") and "nearer than the 50 mm" in reason
    assert "Another unit or a relative map declared metric?" in reason and "millimetres?" not in reason
    # the focal length is the camera's: a phone's 4.3 mm lens images the 2 cm and it renders
    shots, rejects = ingest(folder(tmp_path / "phone", {"rel.npy": relative}), tmp_path / "o2",
                            render_focal_length_mm=4.3)
    assert "rel" in shots and "depth/rel.npy" not in rejects


def test_a_photo_that_is_all_rejected_exits_1_naming_the_units(tmp_path):
    """With every photo's map in mm, no sample is written: the run fails naming the cause, not exit 0."""
    root = folder(tmp_path / "p", {})
    np.save(root / "depth" / "ok.npy", ROOM * 1000)
    with pytest.raises(IngestError, match=r"no sample written.*values 450-12000 read.*millimetres\?"):
        ingest(root, tmp_path / "o")


def test_the_point_bound_is_the_renderers_and_the_check_follows_it():
    """POINT_PX is where the renderer's disc stops being a point: a CoC map within +-1 px renders the photo
    unchanged, a little more does not. The check refuses a map just under the bound at the widest f-number and
    passes one just over it (a single depth plane behind a focus: its CoC is the thin lens's)."""
    from defocuskit.data.sources import render_units  # (new: imported here, so the others run on older code)

    rng = np.random.default_rng(0)
    x = rng.random((H, W, 3)).astype(np.float32) * 1.2  # highlights above white too
    for bound, same in ((render_units.POINT_PX, True), (1.05 * render_units.POINT_PX, False)):
        coc = rng.uniform(-bound, bound, (H, W)).astype(np.float32)
        assert (np.abs(render_shot(x, restore_highlights(x), coc) - x).max() < 1e-6) == same
    opts = IngestOptions(render_f_numbers=(2.8, 8.0), render_sensor_width_mm=4.0, render_ref_f_number=16.0)
    depth = np.full((H, W), 10.0)
    depth[:, 0] = 2.0  # focused at 2 m, the rest at 10 m
    widest, most = render_units.widest_blur_px(2.0, 10.0, 2.0, (H, W), opts)
    at_f1 = float(np.abs(render_units.metric_unit_coc(depth, 2.0, opts)).max())
    assert widest == 2.8 and most == pytest.approx(at_f1 * np.sqrt(1 / 2.8**2 - 1 / 16**2), rel=1e-5) and most > 1
    for f_number, problem in ((at_f1 * 0.99, False), (at_f1 * 1.01, True)):  # 1 px of CoC at f/at_f1
        wide = IngestOptions(render_f_numbers=(f_number,), render_sensor_width_mm=4.0, render_ref_f_number=1e6)
        assert (render_units.metric_problem(depth, 2.0, (H, W), wide) is not None) == problem


def test_a_metric_focus_far_outside_the_map_is_a_reject_line_and_one_a_little_outside_renders(tmp_path):
    """--render-focus 500 (metres) on a room of 0.45-12 m rendered every shot blurred all over, focused on nothing in
    it (a focus in mm or cm given as metres, or a typo), with exit 0; now a reject line naming the map, the value, its
    depth range and the focus that renders, per scene: a street of 3-300 m focused at 500 m renders. A focus a
    little nearer than the room's nearest point, or beyond its farthest, still renders."""
    street = np.tile(np.linspace(3.0, 300.0, W, dtype=np.float32), (H, 1))
    root = folder(tmp_path / "p", {"street.npy": street, "desk.npy": ROOM * 0.3})
    shots, rejects = ingest(root, tmp_path / "far", render_focus="500")
    assert set(shots) == {"street"} and shots["street"]["meta"]["focus_distance_m"] == 500.0
    assert rejects["depth/ok.npy"] == (
        "--render-focus 500: 500 m is far outside this map's metric depth (0.45-12 m), over twice its farthest "
        "point's distance: the focal plane nearer infinity than the scene; the focus lies on nothing in the photo "
        "and every shot would be blurred all over. A focus in another unit than metres, or a typo? Give one within "
        "0.25-23.95 m")
    shots, rejects = ingest(root, tmp_path / "near", render_focus="0.2")  # under (0.45 m + 50 mm) / 2
    assert set(shots) == {"desk"} and "0.2 m is far outside this map's metric depth (0.45-12 m), under half its " \
                                      "nearest point's distance" in rejects["depth/ok.npy"]
    for focus in ("0.4", "20"):  # a subject a little nearer than the map's nearest point; beyond its farthest
        shots, rejects = ingest(root, tmp_path / f"ok{focus}", render_focus=focus)
        assert "ok" in shots and "depth/ok.npy" not in rejects
        assert shots["ok"]["meta"]["focus_distance_m"] == float(focus)


def test_the_focus_range_is_the_thin_lens_s():
    """At the near end the map's nearest point is as blurred as with the lens at infinity; at the far end its farthest
    point gets half of that (the CoC's thin lens, imaging.optics)."""
    from defocuskit.data.sources.render_units import focus_range_m  # (new: imported here, as above)
    from defocuskit.imaging.optics import signed_coc_diameter_mm

    low, high = focus_range_m(0.45, 12.0, 50.0)
    assert (low, high) == pytest.approx((0.25, 23.95))

    def coc(focus: float, depth: float) -> float:
        return abs(signed_coc_diameter_mm(2.8, 50.0, focus, depth))

    assert coc(low, 0.45) == pytest.approx(coc(np.inf, 0.45))
    assert coc(high, 12.0) == pytest.approx(coc(np.inf, 12.0) / 2)
