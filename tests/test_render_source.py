"""`--render DIR`: aperture stacks rendered from photos with depth maps, and the renderer's core."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.plan import content_options
from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.data.render_photo import add_veil, render_coc, restore_highlights, veil_fraction
from defocuskit.data.sample import IngestError, IngestOptions, RejectError
from defocuskit.data.sources import render as source
from defocuskit.imaging.optics import disc_mtf
from defocuskit.io.images import srgb_to_linear

H, W = 64, 96
NEAR, FAR = 0.2, 0.9  # relative depth values (larger = farther)
X0, X1, Y0, Y1 = 20, 44, 16, 48  # the near object
K = 24.0  # CoC px at f/1 per unit of relative CoC: background CoC ~ 9 px at f/1.8 when focused on the object


def photo() -> np.ndarray:
    """uint8 RGB: a blue-ish textured background (far), a red textured square (near)."""
    rng = np.random.default_rng(0)
    img = np.empty((H, W, 3), np.float32)
    img[...] = (0.15, 0.3, 0.7)
    img += rng.uniform(-0.1, 0.1, (H, W, 1))
    yy, xx = np.mgrid[0:H, 0:W]
    img[Y0:Y1, X0:X1] = (0.85, 0.1, 0.1)
    img[Y0:Y1, X0:X1] *= (0.75 + 0.25 * ((xx[Y0:Y1, X0:X1] // 2 + yy[Y0:Y1, X0:X1] // 2) % 2))[..., None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def depth_values() -> np.ndarray:
    d = np.full((H, W), FAR, np.float32)
    d[Y0:Y1, X0:X1] = NEAR
    return d


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_folder(root: Path) -> Path:
    """near: grey depth, focus on the object; far: Spectral false-colour depth, focus on the background;
    lost: a photo without a depth map."""
    import matplotlib

    for sub in ("image", "depth", "focal"):
        (root / sub).mkdir(parents=True)
    img, d = photo(), depth_values()
    write_rgb(root / "image" / "near.png", img)
    write_rgb(root / "image" / "far.jpg", img)
    write_rgb(root / "image" / "lost.png", img)
    cv2.imwrite(str(root / "depth" / "near.png"), np.rint(d * 255).astype(np.uint8))
    spectral = (matplotlib.colormaps["Spectral"](np.rint(d * 255).astype(int))[..., :3] * 255).round().astype(np.uint8)
    write_rgb(root / "depth" / "far.png", spectral)
    mask = np.where(d == NEAR, 255, 0).astype(np.uint8)
    cv2.imwrite(str(root / "focal" / "near.png"), mask)
    cv2.imwrite(str(root / "focal" / "far.png"), 255 - mask)
    return root


def opts(out: Path, **kw) -> IngestOptions:
    base = {"out": str(out), "workers": 0, "render_f_numbers": (1.8, 8.0), "render_coc_scale": K,
            "render_noise": False, "split_by": "train"}
    return IngestOptions(**{**base, **kw})


def listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def samples(out: Path) -> dict[str, dict]:
    return {s["key"]: s for s in iter_samples(out)}


def sharpness(img: np.ndarray) -> float:
    y = img.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(y, axis=1)).mean() + np.abs(np.diff(y, axis=0)).mean())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    root = make_folder(tmp / "photos")
    before = listing(root)
    manifest = run_ingest({"render": root}, opts(tmp / "out"), progress=False)
    return tmp, root, before, manifest


def test_ingest_writes_blur_sharp_coc_and_sign(ingested):
    got = samples(ingested[0] / "out")
    assert set(got) == {f"render/{s}/{t}" for s in ("near", "far") for t in ("f1_8", "f8", "sharp")}
    for key, s in got.items():
        assert s["sharp"].shape == (H, W, 3) and s["sharp"].dtype == np.uint16
        assert s["meta"]["source"] == "render" and s["meta"]["ref_f_number"] == 16.0
        if key.endswith("sharp"):
            assert s["blur"] is None and s["coc"] is None and s["meta"]["f_number"] is None
            continue
        assert s["blur"].shape == s["sharp"].shape and s["coc"].shape == (H, W) and s["coc_sign"] is not None
        assert s["meta"]["f_number"] in (1.8, 8.0) and s["meta"]["blur_type"] == "defocus"
    # the sharp reference is the photo itself (same tone pipeline, no added noise)
    assert np.abs(got["render/near/sharp"]["sharp"] / 257.0 - photo()).max() <= 1.0
    # CoC ~ 1/N, and its sign: the object is in front of a background focus
    c18, c8 = signed_coc(got["render/far/f1_8"]), signed_coc(got["render/far/f8"])
    assert c18[Y0 + 4, X0 + 4] == pytest.approx(-K * (FAR - NEAR) / 1.8, rel=0.03)
    assert c8[Y0 + 4, X0 + 4] == pytest.approx(-K * (FAR - NEAR) / 8.0, rel=0.05)
    assert abs(c18[2, 2]) < 0.2
    near = signed_coc(got["render/near/f1_8"])
    assert abs(near[Y0 + 4, X0 + 4]) < 0.2 and near[2, 2] == pytest.approx(K * (FAR - NEAR) / 1.8, rel=0.03)


def test_missing_depth_is_a_reject_and_nothing_is_written_outside_out(ingested):
    tmp, root, before, _ = ingested
    rejects = [json.loads(line) for line in (tmp / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["file"].endswith("lost.png") and "depth" in rejects[0]["reason"]
    assert listing(root) == before
    assert sorted(p.name for p in tmp.iterdir()) == ["out", "photos"]


def test_focus_on_the_near_object_keeps_its_edge_and_blurs_the_background(ingested):
    tmp = ingested[0]
    got = samples(tmp / "out")
    sharp = got["render/near/sharp"]["sharp"] / 65535.0
    blur = got["render/near/f1_8"]["blur"] / 65535.0
    inside = (slice(Y0, Y1), slice(X0, X1))
    assert np.abs(blur[inside] - sharp[inside]).max() < 0.02  # in focus: the object untouched up to its edge
    bg = (slice(0, Y0 - 2), slice(0, W))
    assert sharpness(blur[bg]) < 0.4 * sharpness(sharp[bg])  # the background is blurred
    # no red of the sharp object bleeds into the blurred background beside it (occlusion order)
    beside = blur[Y0 + 4:Y1 - 4, X1:X1 + 3]
    assert beside[..., 0].max() < 0.4 and beside[..., 2].min() > 0.5


def test_focus_behind_the_near_object_spreads_its_blur_over_the_background(ingested):
    tmp = ingested[0]
    got = samples(tmp / "out")
    sharp = got["render/far/sharp"]["sharp"] / 65535.0
    blur = got["render/far/f1_8"]["blur"] / 65535.0
    inside = (slice(Y0 + 8, Y1 - 8), slice(X0 + 8, X1 - 8))
    assert sharpness(blur[inside]) < 0.4 * sharpness(sharp[inside])  # the object is blurred
    far_bg = (slice(0, H), slice(X1 + 12, W))
    assert np.abs(blur[far_bg] - sharp[far_bg]).max() < 0.02  # the background, in focus, stays sharp
    # the object's blurred rim spreads OVER the sharp background beside it: red outside its edge
    beside = blur[Y0 + 8:Y1 - 8, X1:X1 + 2]
    assert beside[..., 0].mean() > sharp[Y0 + 8:Y1 - 8, X1 + 14:X1 + 16, 0].mean() + 0.1
    # ... and the rim is semi-transparent over the (hidden) background, not dark
    assert blur[Y0 + 8:Y1 - 8, X1 - 1:X1 + 1].mean() > 0.2


def test_layout_error_and_unreadable_depth(tmp_path):
    (tmp_path / "bad" / "image").mkdir(parents=True)
    with pytest.raises(IngestError, match="depth/"):
        run_ingest({"render": tmp_path / "bad"}, opts(tmp_path / "o1"), progress=False)
    root = make_folder(tmp_path / "photos")
    (root / "depth" / "near.png").write_bytes(b"not a png")
    run_ingest({"render": root}, opts(tmp_path / "o2"), progress=False)
    rejects = [json.loads(line) for line in (tmp_path / "o2" / "rejects.jsonl").read_text().splitlines()]
    assert any(r["file"].endswith("near.png") and "depth" in r["file"] for r in rejects)
    assert {k.split("/")[1] for k in samples(tmp_path / "o2")} == {"far"}


def test_a_coc_no_camera_gives_is_a_reject_line_not_a_render(tmp_path):
    """A CoC more than twice the photo's long side (depth units or lens settings that do not fit the photo; with
    metric depth and a long lens, discs of gigabytes) is the photo's reject line at that f-number; others render."""
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "out"
    run_ingest({"render": root}, opts(out, render_coc_scale=2000.0), progress=False)  # ~750 px at f/1.8, ~170 at f/8
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    wide = [r for r in rejects if "more than twice the image's long side (96 px)" in r["reason"]]
    assert sorted((Path(r["file"]).name, r["reason"].split(":")[0]) for r in wide) == [
        ("far.jpg", "at f/1.8"), ("near.png", "at f/1.8")], rejects
    assert sorted(s["meta"]["f_number"] for s in samples(out).values() if s["meta"]["f_number"]) == [8.0, 8.0]
    with pytest.raises(ValueError, match=r"render: a CoC of 300 px, more than twice the image's long side \(96 px\)"):
        render_coc(np.zeros((H, W, 3), np.float32), np.full((H, W), -300.0, np.float32))


def test_focus_choices_and_depth_kinds():
    values = depth_values()
    mask = values == NEAR
    assert source.choose_focus(values, "auto", mask, 0, "x") == pytest.approx(NEAR)
    sampled = source.choose_focus(values, "auto", None, 0, "x")
    assert sampled == source.choose_focus(values, "sample", None, 0, "x") and NEAR <= sampled <= FAR
    assert source.choose_focus(values, "0.5", None, 0, "x") == 0.5
    with pytest.raises(RejectError):
        source.choose_focus(values, "mask", None, 0, "x")
    inv = source.unit_coc(1.0 - values, 1.0 - NEAR, IngestOptions(render_depth_kind="inverse", render_coc_scale=K))
    rel = source.unit_coc(values, NEAR, IngestOptions(render_coc_scale=K))
    assert np.allclose(inv, rel, atol=1e-5)  # same order, same sign: behind the focus is positive
    metric = source.unit_coc(values * 10.0 / 65.535, 5.0 / 65.535, IngestOptions(render_depth_kind="metric"))
    assert metric[mask].max() < 0.0 < metric[~mask].min()  # 2 m object, 9 m background, focused at 5 m
    assert source.added_coc(np.ones((1, 1), np.float32), 16.0, 16.0).max() == 0.0


def test_highlights_form_bright_discs():
    img = np.full((101, 101, 3), 0.05, np.float32)
    img[50, 50] = 1.0  # a clipped point light
    coc = np.full((101, 101), 9.0, np.float32)
    plain = render_coc(img, coc)
    restored = render_coc(restore_highlights(img, gain=8.0), coc)
    assert restored[50, 50].mean() - 0.05 > 6 * (plain[50, 50].mean() - 0.05)  # the disc carries the lost energy
    assert restored[50, 54].mean() > 0.15 and restored[50, 57].mean() < 0.06  # a disc of diameter ~9
    assert np.allclose(restore_highlights(img * 0.5), img * 0.5)  # nothing near white: unchanged
    sky = img.copy()
    sky[:40] = 1.0  # a large clipped area is not expanded
    assert np.allclose(restore_highlights(sky)[:30], 1.0)


def test_render_coc_constant_map_is_one_disc_blur_and_keeps_flat_fields():
    img = np.full((32, 48, 3), 0.4, np.float32)
    coc = np.linspace(-6, 6, 48, dtype=np.float32)[None].repeat(32, 0)
    assert np.allclose(render_coc(img, coc), 0.4, atol=1e-4)  # no darkening at layer or occlusion edges


def test_render_coc_band_limited_disc_blurs_sub_pixel_cocs_as_their_mtf_says():
    # a grating at a quarter of the sampling rate under a constant 0.8 px CoC: the area-sampled disc leaves it as it is,
    # the band-limited one keeps the disc's MTF of its contrast (0.95), and both keep flat fields
    x = np.arange(64, dtype=np.float32)
    img = np.repeat((0.5 + 0.25 * np.cos(2 * np.pi * 0.25 * x))[None, :, None], 64, 0).repeat(3, 2)
    coc = np.full((64, 64), 0.8, np.float32)
    assert np.allclose(render_coc(img, coc), img, atol=1e-6)
    band = render_coc(img, coc, psf="band")[20:44, 20:44, 0]
    contrast = (band.max() - band.min()) / 0.5
    assert contrast == pytest.approx(float(disc_mtf(0.8, 0.25)), abs=0.02) and contrast < 0.97
    assert np.allclose(render_coc(np.full_like(img, 0.4), coc, psf="band"), 0.4, atol=1e-5)
    with pytest.raises(ValueError, match="psf must be one of area, band"):
        render_coc(img, np.zeros((64, 64), np.float32), psf="gauss")


def test_render_coc_is_exact_without_blur_and_follows_the_disc_at_occlusions():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.1, 0.9, (48, 48, 3)).astype(np.float32)
    ramp = np.linspace(-0.9, 0.9, 48, dtype=np.float32)[None].repeat(48, 0)  # many layers, all under 1 px
    assert np.abs(render_coc(img, ramp) - img).max() < 1e-5  # pixels shared by two layers come back whole
    from defocuskit.imaging.optics import disc_psf

    fg, bg = np.array([0.9, 0.1, 0.1], np.float32), np.array([0.1, 0.2, 0.8], np.float32)
    mask = np.zeros((96, 96), np.float32)
    mask[24:72, 24:72] = 1.0
    rgb = np.where(mask[..., None] > 0, fg, bg).astype(np.float32)
    # a blurred foreground over an in-focus background: coverage of the disc-blurred mask, also inside its edge
    cover = cv2.filter2D(mask, -1, disc_psf(7.0), borderType=cv2.BORDER_REFLECT)[..., None]
    out = render_coc(rgb, np.where(mask > 0, -7.0, 0.0).astype(np.float32))
    assert np.abs(out - (cover * fg + (1 - cover) * bg)).max() < 0.01
    # an in-focus foreground over a blurred background: the background's own blur beside it, no dark rim
    tex = cv2.GaussianBlur(rng.uniform(0.3, 0.7, (96, 96)).astype(np.float32), (0, 0), 3)[..., None].repeat(3, 2)
    rgb = np.where(mask[..., None] > 0, np.float32(0.05), tex).astype(np.float32)
    out = render_coc(rgb, np.where(mask > 0, 0.0, 12.0).astype(np.float32))
    ideal = cv2.filter2D(tex, -1, disc_psf(12.0), borderType=cv2.BORDER_REFLECT)
    ring = (slice(18, 24), slice(30, 66))  # just above the foreground's edge
    assert np.abs(out[ring] - ideal[ring]).max() < 0.03
    assert np.abs(out[24:72, 24:72] - 0.05).max() < 1e-5


def test_cli_render_options_reach_ingest(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data import ingest

    seen = {}

    def fake_ingest(sources, opts, **kw):
        seen.update(sources=sources, opts=opts)
        raise ingest.IngestError("stop here")

    monkeypatch.setattr(ingest, "run_ingest", fake_ingest)
    runner = CliRunner()
    bad = runner.invoke(app, ["ingest", "--out", str(tmp_path / "o"), "--render", "p", "--render-depth", "mm"])
    assert bad.exit_code == 2 and all(f"'{k}'" in bad.output for k in ("metric", "relative", "inverse"))
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "o"), "--render", str(tmp_path), "--render-depth",
                                 "inverse", "--render-f-numbers", "2,4", "--render-coc-scale", "12", "--render-focus",
                                 "sample", "--no-render-noise", "--render-jpeg", "90", "--render-noise-photons", "40000",
                                 "--render-veil", "0.2", "--render-veil-spread", "0.5"])
    assert result.exit_code == 1 and "stop here" in result.output
    o = seen["opts"]
    assert seen["sources"] == {"render": tmp_path} and type(o.render_depth_kind) is str
    assert (o.render_depth_kind, o.render_f_numbers, o.render_coc_scale, o.render_focus, o.render_noise,
            o.render_jpeg_quality, o.render_ref_f_number, o.render_noise_photons) == (
        "inverse", (2.0, 4.0), 12.0, "sample", False, 90, 16.0, 40000.0)
    assert o.render_veil == 0.2 and o.render_veil_spread == 0.5
    assert o.render_metric_scale is None  # by the depth map's sample type (not given: not refused as unused)
    # metric depth's camera (ingest refuses it beside relative or inverse depth: given but not used)
    result = runner.invoke(app, ["ingest", "--out", str(tmp_path / "o"), "--render", str(tmp_path), "--render-depth",
                                 "metric", "--render-metric-scale", "0.001", "--render-focal-length", "35",
                                 "--render-sensor-width", "23.5"])
    assert result.exit_code == 1 and "stop here" in result.output
    o = seen["opts"]
    assert (o.render_depth_kind, o.render_metric_scale, o.render_focal_length_mm, o.render_sensor_width_mm) == (
        "metric", 0.001, 35.0, 23.5)
    too_much = runner.invoke(app, ["ingest", "--out", str(tmp_path / "o"), "--render", str(tmp_path), "--render-veil", "3"])
    assert too_much.exit_code == 2 and "--render-veil" in too_much.output
    assert not (tmp_path / "o").exists()


def test_a_vabd_folder_renders_as_shipped_from_its_f16_references(real_fixture_root, tmp_path):
    """VABD keeps its references in input/ beside 1_8/, 2_8/, 8/: --render reads input/ + depth/ + focal/,
    says which folders it leaves, and blurs the f/1.8 render more than the f/8 one."""
    root = real_fixture_root / "VABD" / "train"
    before = listing(root)
    run_ingest({"render": root}, opts(tmp_path / "out", render_coc_scale=None, render_f_numbers=(1.8, 8.0),
                                      max_side=192), progress=False)
    assert listing(root) == before
    got = samples(tmp_path / "out")
    assert {k.split("/")[1] for k in got} == {"0001", "0002", "0003"} and len(got) == 9
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {Path(r["file"]).name for r in rejects} == {"1_8", "2_8", "8"}
    for scene in ("0001", "0002", "0003"):
        wide, narrow = got[f"render/{scene}/f1_8"], got[f"render/{scene}/f8"]
        assert np.abs(signed_coc(wide)).mean() > 4 * np.abs(signed_coc(narrow)).mean() > 0
        assert sharpness(wide["blur"]) < 0.9 * sharpness(narrow["blur"])
        assert sharpness(narrow["blur"]) <= sharpness(wide["sharp"]) + 1e-3  # f/8 adds about 1 px here, or nothing


def test_the_noise_level_follows_the_photon_count(tmp_path):
    root = make_folder(tmp_path / "photos")
    shots = {}
    for photons in (None, 400.0, 40000.0):  # None: no noise
        out = tmp_path / f"out{photons}"
        run_ingest({"render": root}, opts(out, render_noise=photons is not None, render_noise_photons=photons or 1.0,
                                          render_f_numbers=(8.0,)), progress=False)
        shots[photons] = next(v for k, v in samples(out).items() if "near" in k)["blur"].astype(np.float64)
    spread = {p: float((shots[p] - shots[None]).std()) for p in (400.0, 40000.0)}
    assert spread[400.0] > 3 * spread[40000.0] > 0, spread  # 100x the photons: a tenth of the shot noise (+ read noise)


def test_veiling_glare_spreads_its_share_evenly_and_keeps_each_channels_mean():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, (40, 50, 3)).astype(np.float32) * np.array([0.2, 0.5, 1.0], np.float32)
    v = veil_fraction(0.2, 2.0)
    assert v == pytest.approx(0.05) and veil_fraction(0.2, 0.5) == 0.5 and veil_fraction(0.0, 1.8) == 0.0
    y = add_veil(x, v)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), x.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(y - x, v * (x.mean(axis=(0, 1)) - x), atol=1e-6)  # the shadows rise, highlights fall
    assert np.array_equal(add_veil(x, 0.0), x)


def test_render_veil_spread_draws_one_v_per_photo_for_all_its_apertures(tmp_path):
    """--render-veil-spread S: each photo's glare V is drawn in V (1 - S ... 1 + S) from (seed, stem), the same at
    every aperture of the photo and different between photos; read back from the rendered images."""
    root = make_folder(tmp_path / "photos")
    base = opts(tmp_path / "plain", bit_depth="16")
    run_ingest({"render": root}, base, progress=False)
    spread = opts(tmp_path / "spread", bit_depth="16", render_veil=0.8, render_veil_spread=1.0)
    run_ingest({"render": root}, spread, progress=False)
    plain, veiled = samples(tmp_path / "plain"), samples(tmp_path / "spread")
    drawn = {stem: source.scene_veil(spread, stem) for stem in ("near", "far")}
    assert all(0.0 <= v <= 1.6 for v in drawn.values()) and abs(drawn["near"] - drawn["far"]) > 0.05
    assert drawn["near"] == source.scene_veil(dataclasses.replace(spread, out="elsewhere"), "near")  # seeded by the photo
    assert source.scene_veil(dataclasses.replace(spread, seed=1), "near") != drawn["near"]
    for stem, veil in drawn.items():
        for f_key, n in (("f1_8", 1.8), ("f8", 8.0)):
            a = srgb_to_linear(plain[f"render/{stem}/{f_key}"]["blur"].astype(np.float32) / 65535.0)
            b = srgb_to_linear(veiled[f"render/{stem}/{f_key}"]["blur"].astype(np.float32) / 65535.0)
            lift, room = (b - a).ravel(), (a.mean(axis=(0, 1)) - a).ravel()
            v = float(lift @ room / (room @ room))
            assert v == pytest.approx(veil / n**2 - veil / 16**2, abs=2e-3), (stem, f_key, v)
    assert "render_veil_spread" not in content_options(base)
    assert content_options(spread)["render_veil_spread"] == 1.0
    with pytest.raises(ValueError, match="render_veil_spread"):
        source.scene_veil(dataclasses.replace(spread, render_veil_spread=1.5), "near")


def test_render_veil_lifts_the_wide_open_shots_shadows_by_v_over_n_squared(tmp_path):
    """--render-veil V: the rendered f/N shot carries V / N^2 (less the reference's V / 16^2) of its light spread
    evenly; the sharp side and the CoC are unchanged, and V = 0 keeps the folder's fingerprint as before."""
    root = make_folder(tmp_path / "photos")
    got = {}
    for veil in (0.0, 0.8):
        out = tmp_path / f"out{veil}"
        run_ingest({"render": root}, opts(out, render_veil=veil, bit_depth="16"), progress=False)
        got[veil] = {k: v for k, v in samples(out).items() if "near" in k}
    assert "render_veil" not in content_options(opts(tmp_path, render_veil=0.0))
    assert content_options(opts(tmp_path, render_veil=0.8))["render_veil"] == 0.8
    for f_key, n in (("f1_8", 1.8), ("f8", 8.0)):
        plain, veiled = got[0.0][f"render/near/{f_key}"], got[0.8][f"render/near/{f_key}"]
        assert np.array_equal(plain["sharp"], veiled["sharp"]) and np.array_equal(signed_coc(plain), signed_coc(veiled))
        a = srgb_to_linear(plain["blur"].astype(np.float32) / 65535.0)
        b = srgb_to_linear(veiled["blur"].astype(np.float32) / 65535.0)
        lift, room = (b - a).ravel(), (a.mean(axis=(0, 1)) - a).ravel()
        v = float(lift @ room / (room @ room))  # the share the render spread, read back from the images
        assert v == pytest.approx(0.8 / n**2 - 0.8 / 16**2, abs=2e-3), (f_key, v)


def test_a_coc_beyond_what_coc_png_holds_is_a_reject_line_not_a_clipped_map(tmp_path):
    """coc.png holds at most 255.996 px (16-bit, pixels x 256): a render whose CoC is larger had it stored as
    255.996, a wrong target for every method trained on it; it is the photo's reject line at that f-number."""
    root = tmp_path / "photos"
    for sub in ("image", "depth"):
        (root / sub).mkdir(parents=True)
    big = cv2.resize(photo(), (240, 160), interpolation=cv2.INTER_NEAREST)  # long side 240: 256-480 px renderable
    write_rgb(root / "image" / "big.png", big)
    cv2.imwrite(str(root / "depth" / "big.png"), cv2.resize(np.rint(depth_values() * 255).astype(np.uint8), (240, 160),
                                                            interpolation=cv2.INTER_NEAREST))
    out = tmp_path / "out"
    run_ingest({"render": root}, opts(out, render_coc_scale=800.0, render_focus="0.2"), progress=False)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["reason"].split(":")[0]) for r in rejects] == [("big.png", "at f/1.8")], rejects
    assert "more than the 255.996 px coc.png holds" in rejects[0]["reason"], rejects
    kept = [s for s in samples(out).values() if s["meta"]["f_number"]]
    assert [s["meta"]["f_number"] for s in kept] == [8.0]
    assert 40 < float(kept[0]["coc"].max()) < 255  # the f/8 map as rendered, not clipped


@pytest.mark.parametrize("compositing", ["extend", "normalise"])
def test_render_keeps_the_focal_plane_sharp_between_a_near_and_a_far_plane(compositing):
    """Focus between a near and a far plane: levels spread evenly from -70 to +90 px in 48 layers had none at 0, so
    the in-focus band was rendered as a mix of a -1.9 and a +1.5 px disc: a blurred "sharp" region in every such
    render, which a model trained on them learns to sharpen."""
    rng = np.random.default_rng(5)
    img = rng.random((48, 400, 3)).astype(np.float32)
    coc = np.zeros((48, 400), np.float32)
    coc[:, :100], coc[:, 300:] = -70.0, 90.0
    inside = (slice(None), slice(100 + 48, 300 - 48))  # beyond the reach of the planes' discs
    out = render_coc(img, coc, compositing=compositing)
    assert np.abs(out[inside] - img[inside]).max() < 1e-4
