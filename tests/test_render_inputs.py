"""`ingest --render` with depth maps and masks that do not fit their photo: a reject line naming the file, never a
silently wrong render."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.imaging.depth import DepthError, colormap_lut, decode_depth

H, W = 48, 64


def photo() -> np.ndarray:
    return (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)


def ramp(h: int = H, w: int = W) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w), (h, 1)).astype(np.uint8)


def folder(root: Path, depths: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None) -> Path:
    for sub in ("image", "depth", "focal"):
        (root / sub).mkdir(parents=True)
    for stem, depth in depths.items():
        assert cv2.imwrite(str(root / "image" / f"{stem}.png"), photo())
        assert cv2.imwrite(str(root / "depth" / f"{stem}.png"), depth)
    for stem, mask in (masks or {}).items():
        assert cv2.imwrite(str(root / "focal" / f"{stem}.png"), mask)
    return root


def ingest(root: Path, out: Path, **kw) -> tuple[set[str], dict[str, str]]:
    """(the scenes written, {file name under root: reject reason})."""
    opts = IngestOptions(out=str(out), workers=0, render_f_numbers=(2.8,), render_noise=False, split_by="train", **kw)
    run_ingest({"render": root}, opts, progress=False)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    scenes = {s["key"].split("/")[1] for s in iter_samples(out)}
    return scenes, {str(Path(r["file"]).relative_to(root)): r["reason"] for r in rejects}


def test_a_depth_map_or_mask_of_another_aspect_ratio_is_a_reject_line_not_stretched(tmp_path):
    """A map of another shape than its photo (a square crop, a map turned 90 degrees as for an EXIF-rotated photo,
    a mask of another framing) was stretched over the photo without a word; a smaller copy still renders."""
    turned = np.ascontiguousarray(cv2.resize(ramp(), (H, W)))
    root = folder(tmp_path / "photos", {"square": ramp(H, H), "turned": turned, "masked": ramp(),
                                        "half": ramp(H // 2, W // 2), "slightly": ramp(H, W + 1)},
                  {"masked": np.full((20, 20), 255, np.uint8)})
    scenes, rejects = ingest(root, tmp_path / "out")
    assert scenes == {"half", "slightly"}
    assert f"depth map {H}x{H} is not the shape of its photo {W}x{H}" in rejects["depth/square.png"]
    assert "turned 90 degrees" in rejects["depth/turned.png"]
    assert "focal mask 20x20 is not the shape of its photo" in rejects["focal/masked.png"]


def test_a_constant_depth_map_is_a_reject_line_not_unblurred_shots(tmp_path):
    """One depth value everywhere (a blank export) with the focus taken from the map rendered every aperture as
    the photo itself, labelled f/2.8, exit 0; a focus given off that value still blurs it evenly."""
    root = folder(tmp_path / "photos", {"blank": np.zeros((H, W), np.uint8), "grey": np.full((H, W), 128, np.uint8),
                                        "tiny": np.full((1, 1), 9, np.uint8), "ramp": ramp()})
    scenes, rejects = ingest(root, tmp_path / "out")
    assert scenes == {"ramp"}
    for stem in ("blank", "grey", "tiny"):
        assert "every aperture would render the photo unchanged" in rejects[f"depth/{stem}.png"]
    scenes, _ = ingest(root, tmp_path / "given", render_focus="0.25", render_coc_scale=10.0)
    assert scenes == {"blank", "grey", "tiny", "ramp"}


def test_a_colour_depth_image_of_many_colours_decodes_in_bounded_memory():
    """Each distinct colour was compared with all 256 colormap entries at once: 3 KiB per colour, gigabytes for a
    photo (or a JPEG-compressed map) in depth/. Now a block at a time, and an image in no colormap is refused from
    a sample of its pixels."""
    rng = np.random.default_rng(0)
    v = np.tile(np.linspace(0.0, 1.0, 320), (320, 1))
    lut = colormap_lut("Spectral")
    noisy = np.clip(np.rint(lut[np.rint(v * 255).astype(int)] + rng.integers(-5, 6, (320, 320, 3))), 0, 255)
    noisy = noisy.astype(np.uint8)  # ~57k distinct colours, each within 9/255 of the map: a compressed map
    tracemalloc.start()
    try:
        values = decode_depth(noisy, "Spectral")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with pytest.raises(DepthError, match="away from colormap 'Spectral'"):
            decode_depth((rng.random((320, 320, 3)) * 255).astype(np.uint8), "Spectral")
        _, refused_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.abs(values - v).mean() < 0.01 and np.abs(values - v).max() < 0.15
    assert peak < 100 * 2**20, peak / 2**20
    assert refused_peak < 100 * 2**20, refused_peak / 2**20


def test_a_photo_or_map_in_a_format_the_renderer_cannot_read_is_a_reject_line(tmp_path):
    """HEIC, AVIF, GIF, ... in image/, depth/ or focal/ were passed over without a word (exit 0 on the rest), the
    depth map of such a photo rejected as having no photo."""
    root = folder(tmp_path / "photos", {"ok": ramp()})
    (root / "image" / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic" + bytes(64))
    (root / "depth" / "phone.png").write_bytes((root / "depth" / "ok.png").read_bytes())
    (root / "image" / "anim.gif").write_bytes(b"GIF89a" + bytes(64))
    (root / "focal" / "ok.avif").write_bytes(b"\0\0\0\x1cftypavif" + bytes(64))
    scenes, rejects = ingest(root, tmp_path / "out")
    assert scenes == {"ok"}
    for name in ("image/phone.heic", "image/anim.gif", "focal/ok.avif"):
        assert rejects[name].startswith(f"unsupported image format ({Path(name).suffix})"), rejects


def test_a_depth_array_file_is_a_reject_line_naming_it(tmp_path):
    """A depth map saved as .exr or .pfm (.npy is read: test_render_depth_files) was passed over: its photo's line
    said "no depth map depth/a.*" with depth/a.pfm right there."""
    root = folder(tmp_path / "photos", {"ok": ramp(), "arr": ramp()})
    (root / "depth" / "arr.png").unlink()
    (root / "depth" / "arr.pfm").write_bytes(b"Pf\n64 48\n-1.0\n" + bytes(4 * 48 * 64))
    scenes, rejects = ingest(root, tmp_path / "out")
    assert scenes == {"ok"}
    assert rejects["depth/arr.pfm"].startswith("a depth array (.pfm) is not read: save it as a 16-bit PNG, a float "
                                               "TIFF or a .npy array"), rejects


def test_a_dataset_folder_given_to_render_names_its_split_folders(tmp_path: Path):
    """`--render VABD/` (as `--vabd VABD/` is given) said only 'is this VABD (--vabd)?'; the photos are in train/."""
    for split in ("train", "test"):
        for sub in ("input", "depth"):
            (tmp_path / "VABD" / split / sub).mkdir(parents=True)
    result = CliRunner().invoke(app, ["ingest", "--render", str(tmp_path / "VABD"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "test/, train/ each have that layout: give --render " \
        f"{tmp_path / 'VABD' / 'test'}" in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()
