"""Built-in synthetic aperture stacks and the `--synthetic builtin` ingest source."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.metadata import META_KEYS
from defocuskit.data.render import (
    PHOTOS,
    builtin_scene,
    builtin_scene_names,
    render_defocus,
    render_stack,
)
from defocuskit.data.sample import IngestOptions, Sample, Task
from defocuskit.data.sources import synthetic


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def two_plane_scene(h=48, w=64):
    """Left: vertical stripes at 1 m (the focus plane). Right: horizontal stripes at 10 m."""
    rgb = np.zeros((h, w, 3), np.float32)
    depth = np.full((h, w), 10.0, np.float32)
    cols = np.arange(w // 2)
    rgb[:, : w // 2] = (0.2 + 0.6 * ((cols // 2) % 2))[None, :, None]
    rows = np.arange(h)
    rgb[:, w // 2:] = (0.2 + 0.6 * ((rows // 2) % 2))[:, None, None]
    depth[:, : w // 2] = 1.0
    return rgb, depth


CAM = dict(focal_length_mm=50.0, focus_distance_m=1.0, pixel_pitch_um=300.0)


def test_render_is_deterministic_for_a_seed():
    rgb, depth = two_plane_scene()
    a, coc_a = render_defocus(rgb, depth, 2.0, rng=np.random.default_rng(3), **CAM)
    b, coc_b = render_defocus(rgb, depth, 2.0, rng=np.random.default_rng(3), **CAM)
    c, _ = render_defocus(rgb, depth, 2.0, rng=np.random.default_rng(4), **CAM)
    assert a.dtype == np.float32 and a.shape == rgb.shape and coc_a.shape == depth.shape
    assert np.array_equal(a, b) and np.array_equal(coc_a, coc_b)
    assert not np.array_equal(a, c)
    assert 0.0 < np.abs(a - c).mean() < 0.05  # only the noise differs


def test_occlusion_in_focus_foreground_stays_sharp_over_blurred_background():
    rgb, depth = two_plane_scene()
    out, coc = render_defocus(rgb, depth, 1.4, rng=np.random.default_rng(0), noise=None, **CAM)
    w = rgb.shape[1]
    assert coc[:, : w // 2].max() == pytest.approx(0.0, abs=1e-6)
    assert coc[:, w // 2:].min() > 5.0
    # the in-focus foreground is untouched right up to its edge: no background bleeds into it
    assert np.abs(out[:, : w // 2] - rgb[:, : w // 2]).max() < 1e-4
    # the background is blurred: its stripes lose contrast, and no foreground stripes leak over the edge
    bg_in, bg_out = rgb[:, w // 2:, 0], out[:, w // 2:, 0]
    assert bg_out.std(axis=0).mean() < 0.3 * bg_in.std(axis=0).mean()
    profile = out[10:-10, w // 2: w // 2 + 4, 0]
    assert profile.std(axis=1).max() < 0.05  # flat across columns next to the edge
    assert np.abs(profile.mean() - 0.5) < 0.1  # the background's own mean grey


def test_blurred_foreground_spreads_over_sharp_background():
    rgb, depth = two_plane_scene()
    out, _ = render_defocus(rgb, depth, 1.4, 50.0, 10.0, 300.0, np.random.default_rng(0), noise=None)
    w = rgb.shape[1]
    assert np.abs(out[:, -8:] - rgb[:, -8:]).max() < 1e-4  # far background, in focus
    assert out[:, : w // 2 - 8, 0].std(axis=1).mean() < 0.3 * rgb[:, : w // 2 - 8, 0].std(axis=1).mean()


def test_bad_render_input_raises():
    rgb, depth = two_plane_scene()
    with pytest.raises(ValueError, match="depth"):
        render_defocus(rgb, depth[:-1], 2.0, rng=np.random.default_rng(0), **CAM)
    with pytest.raises(ValueError, match="positive"):
        render_defocus(rgb, np.zeros_like(depth), 2.0, rng=np.random.default_rng(0), **CAM)


def test_scene_names_and_scene_determinism():
    names = builtin_scene_names()
    assert len(names) >= 24 and len(set(names)) == len(names)
    assert all("." not in n and "/" not in n for n in names)
    a, b = builtin_scene("chelsea_v2", 48, seed=1), builtin_scene("chelsea_v2", 48, seed=1)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth_m, b.depth_m)
    c = builtin_scene("chelsea_v2", 48, seed=2)
    assert not np.array_equal(a.depth_m, c.depth_m)
    assert max(a.rgb.shape[:2]) == 48 and a.rgb.dtype == np.float32
    assert 0.0 <= a.rgb.min() and a.rgb.max() <= 1.0 and np.all(a.depth_m > 0)
    with pytest.raises(ValueError):
        builtin_scene("lena", 48, 0)


def test_motorcycle_depth_comes_from_its_real_disparity():
    import skimage.data

    scene = builtin_scene("motorcycle_left", 96, seed=0)
    assert scene.depth_source == "disparity"
    _, _, disp = skimage.data.stereo_motorcycle()
    h, w = scene.depth_m.shape
    valid = cv2.resize(np.isfinite(disp).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) == 1.0
    small = cv2.resize(np.nan_to_num(disp, posinf=0.0), (w, h), interpolation=cv2.INTER_AREA)
    r = np.corrcoef(1.0 / scene.depth_m[valid], small[valid])[0, 1]
    assert r > 0.99
    assert 1.5 < scene.depth_m.min() and scene.depth_m.max() < 6.0  # Middlebury motorcycle: about 2-5 m


def test_background_coc_at_f1_4_and_256_px():
    for name in ("astronaut", "motorcycle_left"):
        scene = builtin_scene(name, 256, seed=0)
        _, coc = render_defocus(scene.rgb[:8, :8], scene.depth_m[:8, :8], 1.4, scene.focal_length_mm,
                                scene.focus_distance_m, 23.5e3 / scene.rgb.shape[1], np.random.default_rng(0))
        from defocuskit.imaging.optics import coc_diameter_px

        full = coc_diameter_px(1.4, scene.focal_length_mm, scene.focus_distance_m, scene.depth_m,
                               23.5e3 / scene.rgb.shape[1])
        assert 8.0 <= full.max() <= 25.0
        assert np.allclose(coc, full[:8, :8], rtol=1e-5)


def test_stack_reference_and_psnr_fall_as_aperture_opens():
    for photo in PHOTOS:
        scene = builtin_scene(photo, 96, seed=0)
        stack = render_stack(scene, (1.4, 4.0, 8.0), seed=0)
        assert psnr(stack["sharp"], scene.rgb) > 35.0  # f/22: almost sharp (noise and < 1 px blur)
        p = {n: psnr(stack["shots"][n][0], scene.rgb) for n in (1.4, 4.0, 8.0)}
        assert p[8.0] > p[4.0] > p[1.4], (photo, p)


def test_stack_is_deterministic_and_shots_are_independent():
    scene = builtin_scene("coffee_v1", 48, seed=0)
    a = render_stack(scene, (2.0, 5.6), seed=5)
    b = render_stack(scene, (5.6,), seed=5)
    c = render_stack(scene, (5.6,), seed=6)
    assert np.array_equal(a["shots"][5.6][0], b["shots"][5.6][0])
    assert np.array_equal(a["sharp"], b["sharp"])
    assert not np.array_equal(a["shots"][5.6][0], c["shots"][5.6][0])
    assert a["camera"]["ref_f_number"] == 22.0 and a["camera"]["focal_length_mm"] == 50.0
    assert render_stack(scene, (1.4,), noise=None)["shots"][1.4][1].max() > 1.0


# ----- the ingest source -----

OPTS = IngestOptions(synthetic_size=32, synthetic_f_numbers=(1.4, 2.8, 8.0))


def test_synthetic_tasks_keys_and_metadata():
    tasks = list(synthetic.list_tasks(Path("builtin"), OPTS))
    assert all(isinstance(t, Task) for t in tasks)
    names = builtin_scene_names()
    assert len(tasks) == len(names) * 4
    keys = [t.key for t in tasks]
    assert len(set(keys)) == len(keys) and all("." not in k for k in keys)
    assert "synthetic/astronaut_v1/f2_8" in keys and "synthetic/rocket/f8" in keys and "synthetic/chelsea/sharp" in keys
    splits = {t.scene: t.split for t in tasks}
    assert set(splits.values()) == {"train", "test"}
    for photo in PHOTOS:  # variants follow their photograph
        assert len({s for n, s in splits.items() if n == photo or n.startswith(photo + "_v")}) == 1
    t = next(t for t in tasks if t.key == "synthetic/coffee/f1_4")
    assert t.source == "synthetic" and t.files == {}
    assert t.meta["f_number"] == 1.4 and t.meta["ref_f_number"] == 22.0 and t.meta["blur_type"] == "defocus"
    assert t.meta["camera"] == "defocuskit thin-lens renderer" and t.meta["focal_length_mm"] == 50.0
    assert t.meta["focus_distance_m"] > 0
    assert all(t.split == "train" for t in synthetic.list_tasks(Path("builtin"), IngestOptions(split_by="train",
                                                                                             synthetic_size=32)))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9, 0.99])
def test_the_two_views_of_a_stereo_pair_share_a_split(fraction: float) -> None:
    held = synthetic.test_photos(IngestOptions(test_fraction=fraction))
    assert ("motorcycle_left" in held) == ("motorcycle_right" in held)  # one scene seen from two places
    assert held and set(PHOTOS) - held


def test_synthetic_rejects_other_roots():
    with pytest.raises(ValueError, match="only 'builtin'"):
        list(synthetic.list_tasks(Path("photos"), OPTS))


def test_synthetic_load_gives_16_bit_samples_with_coc():
    tasks = {t.key: t for t in synthetic.list_tasks(Path("builtin"), OPTS)}
    (sample,) = synthetic.load(tasks["synthetic/motorcycle_left/f1_4"], OPTS)
    assert isinstance(sample, Sample) and sample.key == "synthetic/motorcycle_left/f1_4"
    assert sample.sharp.dtype == np.uint16 and sample.blur.dtype == np.uint16
    assert sample.sharp.shape == sample.blur.shape and max(sample.sharp.shape[:2]) == 32
    assert sample.coc.dtype == np.float32 and sample.coc.shape == sample.sharp.shape[:2] and sample.coc.max() > 0.5
    assert set(sample.meta) == set(META_KEYS)
    assert sample.meta["f_number"] == 1.4 and sample.meta["bit_depth"] == 16 and sample.meta["source"] == "synthetic"
    assert sample.meta["height"] == sample.sharp.shape[0] and sample.meta["focal_length_mm"] == 85.0
    (again,) = synthetic.load(tasks["synthetic/motorcycle_left/f1_4"], OPTS)
    assert np.array_equal(again.blur, sample.blur)
    (sharp_only,) = synthetic.load(tasks["synthetic/motorcycle_left/sharp"], OPTS)
    assert sharp_only.blur is None and sharp_only.coc is None and sharp_only.meta["f_number"] is None
    assert np.array_equal(sharp_only.sharp, sample.sharp)
    (eight,) = synthetic.load(tasks["synthetic/motorcycle_left/f8"], IngestOptions(
        synthetic_size=32, synthetic_f_numbers=(1.4, 2.8, 8.0), bit_depth="8"))
    assert eight.blur.dtype == np.uint8 and eight.meta["bit_depth"] == 8
