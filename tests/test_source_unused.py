"""DPDD, DED, RealDOF and CUHK (hidden files: EBB, VABD and --render too): every image a source does not use gets a
reject line naming it (they were dropped without a word: another format, a folder the dataset does not have, an image
in the root, a hidden twin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defocuskit.data.sample import IngestOptions, Rejected, Task
from defocuskit.data.sources import cuhk_blur, ded, dpdd, ebb, realdof, render, vabd
from defocuskit.io.images import write_image

OPTS = IngestOptions(split_by="train")
HIDDEN = "hidden file (name starts with '.'): not used"


def _img(seed: int, depth: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65535 if depth == 16 else 255
    return rng.integers(0, top, (48, 64, 3), dtype=np.uint16 if depth == 16 else np.uint8)


def _listed(module, root: Path, opts: IngestOptions = OPTS) -> tuple[list[Task], dict[str, str]]:
    items = list(module.list_tasks(root, opts))
    rejects = {Path(r.file).relative_to(root).as_posix(): r.reason for r in items if isinstance(r, Rejected)}
    return [t for t in items if isinstance(t, Task)], rejects


def test_dpdd_rejects_the_images_it_does_not_read(tmp_path):
    """A JPEG in source/, a folder beside the split folders and an image in the root were dropped without a word."""
    data = tmp_path / "dd_dp_dataset_png"
    for n in (1, 2):
        write_image(data / "test_c" / "source" / f"1P0A100{2 * n + 1}.png", _img(n, 16))
        write_image(data / "test_c" / "target" / f"1P0A100{2 * n}.png", _img(n, 16))
        write_image(data / "test_l" / "source" / f"1P0A100{2 * n + 1}_L.png", _img(n, 16))  # known: not rejected
    write_image(data / "test_c" / "source" / "1P0A1009.JPG", _img(3))
    write_image(data / "test_c" / "source_8bit" / "1P0A1003.png", _img(4))
    write_image(data / "extra" / "1P0A1003.png", _img(5))
    write_image(data / "1P0A1003.png", _img(6))
    tasks, rejects = _listed(dpdd, tmp_path)
    assert [t.key for t in tasks] == ["dpdd/test/1P0A1003", "dpdd/test/1P0A1005"]
    assert set(rejects) == {"dd_dp_dataset_png/test_c/source/1P0A1009.JPG", "dd_dp_dataset_png/test_c/source_8bit",
                            "dd_dp_dataset_png/extra", "dd_dp_dataset_png/1P0A1003.png"}
    assert rejects["dd_dp_dataset_png/test_c/source/1P0A1009.JPG"].startswith("not a PNG: DPDD reads")
    assert rejects["dd_dp_dataset_png/extra"].startswith("folder not used (1 image)")


def test_ded_rejects_other_formats_unnumbered_names_and_other_folders(tmp_path):
    for n in (1, 2):
        write_image(tmp_path / "sharp" / f"sharp_{n}.jpg", _img(n))
        write_image(tmp_path / "image" / f"image_{n}.jpg", _img(10 + n))
    write_image(tmp_path / "sharp" / "sharp_3.tif", _img(3))  # a pair in another format: was dropped silently
    write_image(tmp_path / "image" / "image_3.bmp", _img(4))
    write_image(tmp_path / "sharp" / "cover.jpg", _img(5))  # no number
    write_image(tmp_path / "depth" / "depth_1.png", _img(6))
    write_image(tmp_path / "loose.jpg", _img(7))
    tasks, rejects = _listed(ded, tmp_path)
    assert [t.key for t in tasks] == ["ded/1", "ded/2"]
    assert set(rejects) == {"sharp/sharp_3.tif", "image/image_3.bmp", "sharp/cover.jpg", "depth", "loose.jpg"}
    assert rejects["sharp/sharp_3.tif"].startswith("a .tif file: DED reads")
    assert rejects["sharp/cover.jpg"] == "no number in the name: DED pairs its files by the number"


def test_realdof_rejects_other_formats_and_other_folders(tmp_path):
    for n in range(2):
        write_image(tmp_path / "source" / f"{n:03d}.png", _img(n))
        write_image(tmp_path / "target" / f"{n:03d}.png", _img(10 + n))
    write_image(tmp_path / "source" / "002.bmp", _img(2))
    write_image(tmp_path / "target" / "002.webp", _img(3))
    write_image(tmp_path / "RealDOF_preview" / "000.png", _img(4))
    write_image(tmp_path / "000.png", _img(5))
    tasks, rejects = _listed(realdof, tmp_path)
    assert [t.key for t in tasks] == ["realdof/test/000", "realdof/test/001"]
    assert set(rejects) == {"source/002.bmp", "target/002.webp", "RealDOF_preview", "000.png"}
    assert rejects["target/002.webp"].startswith("a .webp file: RealDOF reads")


def test_cuhk_hidden_files_and_other_folders_get_reject_lines(tmp_path):
    """macOS `._x.jpg` / `._x.png` twins were paired as a photo and its mask (the load then failed on the photo,
    the mask had no line); `images/` beside `image/`, other folders and loose images were dropped silently."""
    for n in (1, 2):
        write_image(tmp_path / "image" / f"out_of_focus000{n}.jpg", _img(n))
        write_image(tmp_path / "gt" / f"out_of_focus000{n}.png", np.zeros((48, 64), np.uint8))
    (tmp_path / "image" / "._out_of_focus0001.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    (tmp_path / "gt" / "._out_of_focus0001.png").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    write_image(tmp_path / "images" / "out_of_focus0003.jpg", _img(3))
    write_image(tmp_path / "out_of_focus0004.jpg", _img(4))
    tasks, rejects = _listed(cuhk_blur, tmp_path, IngestOptions(cuhk_white_is="blurred"))
    assert [t.key for t in tasks] == ["cuhk-blur/out_of_focus0001", "cuhk-blur/out_of_focus0002"]
    assert rejects == {"image/._out_of_focus0001.jpg": HIDDEN, "gt/._out_of_focus0001.png": HIDDEN,
                       "images": "folder not used (1 image): CUHK blur detection reads image/ and gt/",
                       "out_of_focus0004.jpg": "image outside the folders CUHK blur detection reads (image/ and gt/)"}


def test_realdof_a_copy_of_one_image_in_another_format_shifts_no_pair(tmp_path):
    """`source/1.jpg` beside `1.png` (a converted copy) left the number 1 twice in source/, so the pairs fell back to
    sorted order: with an extra target the counts agreed and 2.png was paired with 3_gt.png, 3.png with 4_gt.png,
    silently. The copy now gets a reject line and the numbers pair the rest."""
    for n in (1, 2, 3):
        write_image(tmp_path / "source" / f"{n}.png", _img(n))
        write_image(tmp_path / "target" / f"{n}_gt.png", _img(10 + n))
    write_image(tmp_path / "source" / "1.jpg", _img(1))
    write_image(tmp_path / "target" / "4_gt.png", _img(14))
    tasks, rejects = _listed(realdof, tmp_path)
    assert [(t.key, Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [
        ("realdof/test/1", "1.png", "1_gt.png"), ("realdof/test/2", "2.png", "2_gt.png"),
        ("realdof/test/3", "3.png", "3_gt.png")]
    assert rejects == {"source/1.jpg": "another file of the same name is used: 1.png",
                       "target/4_gt.png": "no source image numbered 4"}


def test_ebb_vabd_and_render_name_hidden_files_as_hidden(tmp_path):
    """macOS `._0001.jpg` twins (AppleDouble: a copy onto a USB disk or a network share) were paired across the
    folders like photos: the load failed and named one of them a damaged image, the other got no line at all."""
    apple = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\0" * 64
    ebb_root, vabd_root, render_root = tmp_path / "EBB", tmp_path / "VABD", tmp_path / "render"
    folders = [(ebb, ebb_root, ("train/input", "train/target")), (vabd, vabd_root, ("train/input", "train/8")),
               (render, render_root, ("image", "depth"))]
    for module, root, subs in folders:
        for sub in subs:
            write_image(root / sub / "0001.jpg", _img(1))
            (root / sub / "._0001.jpg").write_bytes(apple)
        tasks, rejects = _listed(module, root)
        assert rejects == {f"{sub}/._0001.jpg": HIDDEN for sub in subs}, module.NAME
        assert tasks and all("._" not in path for t in tasks for path in t.files.values()), module.NAME


def test_ebb_vabd_and_render_name_nested_folders_and_other_formats(tmp_path):
    """An archive extracted one level deeper (`train/target/target/*.jpg`) or a shot in another format (`.tif`) was
    passed over without a word: EBB's inputs became sharp-only samples, VABD's scene lost its f/8 pair, --render lost
    its focal mask, exit 0 and no reject line."""
    ebb_root, vabd_root, render_root = tmp_path / "EBB", tmp_path / "VABD", tmp_path / "render"
    folders = [(ebb, ebb_root, "train/input", "train/target"), (vabd, vabd_root, "train/input", "train/8"),
               (render, render_root, "image", "focal")]
    for module, root, read, nested in folders:
        write_image(root / read / "0001.jpg", _img(1))
        write_image(root / nested / nested.split("/")[-1] / "0001.jpg", _img(2))
        other = "0002.CR2" if module is render else "0002.tif"  # --render reads TIFF, not a camera's RAW file
        if module is render:
            (root / read / other).write_bytes(b"II*\0" + bytes(64))
            write_image(root / "depth" / "0001.png", _img(4))
        else:
            write_image(root / read / other, _img(3))
        tasks, rejects = _listed(module, root)
        nested_dir = f"{nested}/{nested.split('/')[-1]}"
        assert set(rejects) == {nested_dir, f"{read}/{other}"}, module.NAME
        assert rejects[nested_dir].startswith("folder not used (1 image)"), module.NAME
        assert rejects[f"{read}/{other}"].startswith(f"a {other[-4:]} file:"), module.NAME
        assert tasks, module.NAME
