"""`ingest --render` with depth maps as depth estimators save them: float TIFFs and `.npy` arrays of any range are
read as their values (they were refused outside 0-1, or as an "array not read"), metric ones in metres by default."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.ingest_checks import check_unused
from defocuskit.data.plan import content_options
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.sample import IngestError, IngestOptions
from defocuskit.io.images import ImageError, read_image

H, W = 24, 32
METRES = np.tile(np.linspace(1.5, 12.0, W, dtype=np.float32), (H, 1))  # a scene from 1.5 m to 12 m
METRIC = {"render_depth_kind": "metric", "render_sensor_width_mm": 4.0}  # 32 px over 4 mm: a CoC of pixels
RELATIVE = np.tile(np.linspace(0.1, 0.9, W, dtype=np.float32), (H, 1))


def photo() -> np.ndarray:
    return (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)


def write_depth(path: Path, depth: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, depth)
    else:
        assert cv2.imwrite(str(path), depth)


def folder(root: Path, depths: dict[str, np.ndarray]) -> Path:
    """A --render folder: one photo per depth map, by the map's file name (`a.tif`, `b.npy`, ...)."""
    for sub in ("image", "depth"):
        (root / sub).mkdir(parents=True)
    for name, depth in depths.items():
        assert cv2.imwrite(str(root / "image" / f"{Path(name).stem}.png"), photo())
        write_depth(root / "depth" / name, depth)
    return root


def ingest(root: Path, out: Path, **kw) -> tuple[dict[str, dict], dict[str, str]]:
    """({stem: its f/2.8 sample}, {file name under root: reject reason})."""
    opts = IngestOptions(out=str(out), workers=0, render_f_numbers=(2.8,), render_noise=False, split_by="train", **kw)
    run_ingest({"render": root}, opts, progress=False)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    shots = {s["key"].split("/")[1]: s for s in iter_samples(out) if s["key"].endswith("f2_8")}
    return shots, {str(Path(r["file"]).relative_to(root)): r["reason"] for r in rejects}


def test_float_tiff_and_npy_depth_in_metres_render_as_the_16_bit_png_in_mm(tmp_path):
    """Metric depth in metres as a float TIFF or a .npy array (a depth estimator's output) was refused ("float samples
    from 1.5 to 12: read as 0 to 1") or not read ("a depth array (.npy) is not read"); by default it is metres (1 per
    unit), the 16-bit PNG's mm (65.535 per unit) as before: all three render the same CoC and focus distance."""
    maps = {"png": np.rint(METRES * 1000).astype(np.uint16), "tif": METRES, "npy": METRES,
            "f64npy": METRES.astype(np.float64)[..., None]}
    got = {}
    for kind, depth in maps.items():  # one folder each: the same stem, so the same seeded focus percentile
        name = "a.npy" if kind.endswith("npy") else f"a.{kind}"
        shots, rejects = ingest(folder(tmp_path / kind, {name: depth}), tmp_path / f"out-{kind}", **METRIC)
        assert not rejects and set(shots) == {"a"}, rejects
        got[kind] = shots["a"]
    ref = signed_coc(got["png"])
    assert np.abs(ref).max() > 1.0  # a render with blur to compare
    for kind in ("tif", "npy", "f64npy"):
        assert np.abs(signed_coc(got[kind]) - ref).max() < 0.02, kind
        assert got[kind]["meta"]["focus_distance_m"] == pytest.approx(got["png"]["meta"]["focus_distance_m"],
                                                                      abs=2e-3)
    assert 1.5 < got["tif"]["meta"]["focus_distance_m"] < 12.0
    # an explicit scale still applies to every map: a float map in mm
    shots, _ = ingest(folder(tmp_path / "mm", {"a.tif": METRES * 1000}), tmp_path / "out-mm", **METRIC,
                      render_metric_scale=0.001)
    assert np.abs(signed_coc(shots["a"]) - ref).max() < 0.02


def test_relative_and_inverse_float_depth_beyond_1_is_read_as_its_values(tmp_path):
    """A relative or inverse depth of values beyond 1 (0 to 300, as depth networks give) was refused; it is read as
    its values: the CoC per unit (--render-coc-scale) applies to them, 300 times the 0-1 map's at 1/300 its scale."""
    shots, rejects = ingest(folder(tmp_path / "unit", {"a.png": np.rint(RELATIVE * 65535).astype(np.uint16)}),
                            tmp_path / "out-unit", render_coc_scale=30.0)
    ref = signed_coc(shots["a"])
    assert not rejects and np.abs(ref).max() > 1.0
    for kind, name in (("relative", "a.tif"), ("relative", "a.npy")):
        shots, rejects = ingest(folder(tmp_path / name, {name: RELATIVE * 300}), tmp_path / f"out-{name}",
                                render_coc_scale=0.1, render_depth_kind=kind)
        assert not rejects, rejects
        assert np.abs(signed_coc(shots["a"]) - ref).max() < 0.02, name
    # inverse depth (a disparity of 0 to 300 from a network): the same CoC but for its focus, drawn from its values
    shots, rejects = ingest(folder(tmp_path / "inv", {"a.tif": (1.0 - RELATIVE) * 300}), tmp_path / "out-inv",
                            render_coc_scale=0.1, render_depth_kind="inverse")
    assert not rejects and np.ptp(signed_coc(shots["a"]) - ref) < 0.05


def test_nan_depth_or_an_npy_of_another_shape_or_type_is_one_reject_line_naming_it(tmp_path, monkeypatch):
    """NaN in a float map, and a .npy that holds no depth map, are reject lines naming the file; the rest render."""
    nan = METRES.copy()
    nan[3, 3] = np.nan
    maps = {"ok.npy": METRES, "nantif.tif": nan, "nan.npy": nan, "inf.npy": np.where(METRES > 5, np.inf, METRES),
            "rgb.npy": np.repeat(METRES[..., None], 3, axis=2), "flags.npy": METRES > 5, "flat.npy": METRES.ravel()}
    root = folder(tmp_path / "photos", maps)
    np.save(root / "depth" / "objects.npy", np.array([METRES, "x"], dtype=object), allow_pickle=True)
    assert cv2.imwrite(str(root / "image" / "objects.png"), photo())
    (root / "depth" / "broken.npy").write_bytes((root / "depth" / "ok.npy").read_bytes()[:200])
    assert cv2.imwrite(str(root / "image" / "broken.png"), photo())
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", str(H * W + 2))  # the limit images have: the photos under it
    np.save(root / "depth" / "huge.npy", np.ones((H * 2, W * 2), np.float32))  # a map may be larger than its photo
    assert cv2.imwrite(str(root / "image" / "huge.png"), photo())
    shots, rejects = ingest(root, tmp_path / "out", **METRIC)  # a camera that blurs 32 px (36 mm: under a pixel)
    assert set(shots) == {"ok"}
    assert set(rejects) == {f"depth/{n}" for n in ("nantif.tif", "nan.npy", "inf.npy", "rgb.npy", "flags.npy",
                                                   "flat.npy", "objects.npy", "broken.npy", "huge.npy")}, rejects
    assert "NaN or inf" in rejects["depth/nantif.tif"] and "NaN or inf" in rejects["depth/nan.npy"]
    assert "NaN or inf" in rejects["depth/inf.npy"]
    for name in ("rgb.npy", "flags.npy", "flat.npy"):
        assert "a 2-D (H, W) or (H, W, 1) array of integers or floats is read" in rejects[f"depth/{name}"], rejects
    assert "not a readable .npy array" in rejects["depth/objects.npy"]
    assert "not a readable .npy array" in rejects["depth/broken.npy"]
    assert "more than the limit" in rejects["depth/huge.npy"]


def test_the_metric_scale_defaults_by_sample_type_and_photos_keep_their_float_reading(tmp_path):
    """--render-metric-scale's default is None (by the map's sample type), recorded as such; relative depth does not
    read it, so its fingerprint keeps the old default (folders ingested before are not rendered again)."""
    assert IngestOptions().render_metric_scale is None
    assert content_options(IngestOptions())["render_metric_scale"] == 65.535
    assert content_options(IngestOptions(render_depth_kind="metric"))["render_metric_scale"] is None
    check_unused({"render": "p"}, IngestOptions())  # the default is not "given"; any value given is, 65.535 too
    with pytest.raises(IngestError, match="--render-metric-scale needs --render-depth metric"):
        check_unused({"render": "p"}, IngestOptions(render_metric_scale=65.535))
    # photos: a float TIFF beyond 0-1 is still refused as an image
    assert cv2.imwrite(str(tmp_path / "p.tif"), METRES)
    with pytest.raises(ImageError, match="read as 0 to 1"):
        read_image(tmp_path / "p.tif")
    # an 8-bit relative map decodes as before (value / 255) beside the float ones
    shots, rejects = ingest(folder(tmp_path / "eight", {"a.png": np.rint(RELATIVE * 255).astype(np.uint8)}),
                            tmp_path / "out", render_coc_scale=30.0)
    assert not rejects and np.abs(signed_coc(shots["a"])).max() > 1.0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["options"]["render_metric_scale"] is None


def test_a_float_or_16_bit_false_colour_depth_decodes_as_its_8_bit_copy():
    """A false-colour map saved with float (0-1) or 16-bit samples decodes through its detected colormap as the 8-bit
    one does; float colours beyond 0-1 are no colormap's: refused, naming the map."""
    import matplotlib

    from defocuskit.imaging.depth import DepthError, decode_depth

    rgb = matplotlib.colormaps["Spectral"](RELATIVE)[..., :3].astype(np.float32)
    eight = decode_depth(np.rint(rgb * 255).astype(np.uint8), "auto")
    assert np.abs(decode_depth(rgb, "auto") - eight).max() <= 1 / 255 + 1e-6
    # a 16-bit one too (its colours were compared with the colormap clipped at 255: "in no known colormap")
    assert np.abs(decode_depth(np.rint(rgb * 65535).astype(np.uint16), "auto") - eight).max() <= 1 / 255 + 1e-6
    with pytest.raises(DepthError, match="d.tif: a float colour depth image with samples from"):
        decode_depth(rgb * 300, "Spectral", name="d.tif")


def test_a_relative_map_beyond_1_needs_its_coc_scale_and_a_metric_focus_value_is_metres(tmp_path):
    """A relative map of 0 to 300 with the default --render-coc-scale (fitted on maps in 0-1) would render 300 times
    the blur: a reject line saying what to give. A metric `--render-focus 4` is 4 m, for a 16-bit PNG in mm (it was
    4 x 65.535 m) as for a float map in metres."""
    shots, rejects = ingest(folder(tmp_path / "rel", {"a.tif": RELATIVE * 300, "b.tif": RELATIVE}), tmp_path / "o1")
    assert set(shots) == {"b"} and "give --render-coc-scale" in rejects["depth/a.tif"], rejects
    for kind, depth in (("png", np.rint(METRES * 1000).astype(np.uint16)), ("tif", METRES)):
        shots, rejects = ingest(folder(tmp_path / kind, {f"a.{kind}": depth}), tmp_path / f"o-{kind}", **METRIC,
                                render_focus="4")
        assert not rejects and shots["a"]["meta"]["focus_distance_m"] == pytest.approx(4.0, abs=1e-3), rejects
        coc = signed_coc(shots["a"])
        in_focus = np.argmin(np.abs(METRES[0] - 4.0))
        assert abs(coc[:, in_focus]).max() < 0.3 < abs(coc[:, 0]).min(), kind  # sharp at 4 m, not at 1.5 m
