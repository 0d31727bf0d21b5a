"""The dataset adapters on fixture folders in the real layouts (and the real VABD / EBB photos)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import copy_resized

from defocuskit.data.metadata import META_KEYS
from defocuskit.data.pairs import key_part, load_pair, split_for
from defocuskit.data.sample import IngestOptions, Rejected, RejectError, Task
from defocuskit.data.sources import ded, dpdd, ebb, realblur, realdof, vabd
from defocuskit.io.images import read_image, write_image

OPTS = IngestOptions()


def _img(seed: int, depth: int = 8, shape=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 65535 if depth == 16 else 255
    return rng.integers(0, top, (*shape, 3), dtype=np.uint16 if depth == 16 else np.uint8)


def _split(items):
    tasks = [t for t in items if isinstance(t, Task)]
    rejected = [r for r in items if isinstance(r, Rejected)]
    return tasks, rejected


def _check_sample(sample, task):
    assert set(sample.meta) == set(META_KEYS)
    assert sample.key == task.key and "." not in sample.key
    assert sample.meta["source"] == task.source and sample.meta["split"] == task.split
    assert (sample.meta["height"], sample.meta["width"]) == sample.sharp.shape[:2]
    if sample.blur is not None:
        assert sample.blur.shape == sample.sharp.shape and sample.blur.dtype == sample.sharp.dtype


def test_dpdd_pairs_by_sorted_order(tmp_path):
    root = tmp_path / "dd_dp_dataset_png"
    # consecutive Canon frame numbers: the f/22 target is numbered one below or above its f/4 source
    names = [("1P0A1001", "1P0A1000"), ("1P0A1004", "1P0A1005"), ("1P0A1010", "1P0A1009")]
    written = {}
    for i, (src, tgt) in enumerate(names):
        written[src] = (_img(i, 16), _img(100 + i, 16))
        write_image(root / "train_c" / "source" / f"{src}.png", written[src][0])
        write_image(root / "train_c" / "target" / f"{tgt}.png", written[src][1])
        write_image(root / "train_l" / "source" / f"{src}.png", _img(200 + i, 16))  # dual-pixel views
    write_image(root / "train_c" / "source" / "1P0A1001_l.png", _img(300, 16))
    for name in ("1P0A2001", "1P0A2003"):
        write_image(root / "val_c" / "source" / f"{name}.png", _img(400, 16))
    write_image(root / "val_c" / "target" / "1P0A2002.png", _img(401, 16))

    tasks, rejected = _split(list(dpdd.list_tasks(tmp_path, OPTS)))  # the parent folder is accepted too
    assert [t.key for t in tasks] == ["dpdd/train/1P0A1001", "dpdd/train/1P0A1004", "dpdd/train/1P0A1010"]
    assert [Path(t.files["sharp"]).stem for t in tasks] == ["1P0A1000", "1P0A1005", "1P0A1009"]
    assert len(rejected) == 1 and rejected[0].file.endswith("val_c") and "2 source vs 1 target" in rejected[0].reason
    for task in tasks:
        (sample,) = dpdd.load(task, OPTS)
        _check_sample(sample, task)
        blur, sharp = written[task.scene]
        np.testing.assert_array_equal(sample.blur, blur)
        np.testing.assert_array_equal(sample.sharp, sharp)
        assert sample.meta["f_number"] == 4.0 and sample.meta["ref_f_number"] == 22.0
        assert sample.meta["camera"] == "Canon EOS 5D Mark IV" and sample.meta["bit_depth"] == 16
        assert sample.meta["align"]["method"] == "none" and sample.meta["gain"] is None
        assert sample.meta["origin"][0].startswith("dd_dp_dataset_png/train_c/source/")


def test_dpdd_pairs_across_the_frame_counters_wrap(tmp_path):
    """A split whose Canon frames run on from 1P0A9999 to 1P0A0001: sorted by name, the sources 0002, 9997, 9999
    lined up with the targets 0001, 0003, 9998, every pair the wrong scene (exit 0). Ordered by the counter round
    its wrap, cut at one place for both folders (and for the dual-pixel views), each source keeps its own target."""
    root = tmp_path / "dpdd"
    names = [("1P0A9997", "1P0A9998"), ("1P0A9999", "1P0A0001"), ("1P0A0002", "1P0A0003")]
    written = {}
    for i, (src, tgt) in enumerate(names):
        written[src] = (_img(i, 16), _img(100 + i, 16), _img(200 + i, 16))
        write_image(root / "test_c" / "source" / f"{src}.png", written[src][0])
        write_image(root / "test_c" / "target" / f"{tgt}.png", written[src][1])
        for side in ("l", "r"):  # the views named as their shot, with a view mark
            write_image(root / f"test_{side}" / "source" / f"{src}_{side.upper()}.png", written[src][2])
    for opts in (OPTS, IngestOptions(dual_pixel=True)):
        tasks, rejected = _split(list(dpdd.list_tasks(root, opts)))
        assert rejected == []
        assert [(t.scene, Path(t.files["sharp"]).stem) for t in tasks] == names
        for task in tasks:
            (sample,) = dpdd.load(task, opts)
            blur, sharp, view = written[task.scene]
            np.testing.assert_array_equal(sample.blur, blur)
            np.testing.assert_array_equal(sample.sharp, sharp)
            if opts.dual_pixel:
                np.testing.assert_array_equal(sample.left, view)


def test_realblur_lists(tmp_path):
    j, r = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref", "RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref"
    for variant, scene, k in [(j, "scene001", 1), (j, "scene001", 2), (j, "scene002", 5), (j, "scene003", 1),
                              (r, "scene001", 1)]:
        write_image(tmp_path / variant / scene / "gt" / f"gt_{k}.png", _img(k))
        write_image(tmp_path / variant / scene / "blur" / f"blur_{k}.png", _img(10 + k))

    def line(variant, scene, k):
        return f"{variant}/{scene}/gt/gt_{k}.png {variant}/{scene}/blur/blur_{k}.png\n"

    (tmp_path / "RealBlur_J_train_list.txt").write_text(line(j, "scene001", 1) + line(j, "scene001", 2))
    (tmp_path / "RealBlur_J_test_list.txt").write_text(line(j, "scene002", 5) + line(j, "scene002", 9) + "\n")
    (tmp_path / "RealBlur_R_test_list.txt").write_text(line(r, "scene001", 1))
    tasks, rejected = _split(list(realblur.list_tasks(tmp_path, OPTS)))
    assert [(t.key, t.split) for t in tasks] == [
        ("realblur/J/scene001/gt_1", "train"), ("realblur/J/scene001/gt_2", "train"),
        ("realblur/J/scene002/gt_5", "test"), ("realblur/R/scene001/gt_1", "test")]  # scene003: in no list
    assert len(rejected) == 2 and rejected[0].file.endswith("scene002/gt/gt_9.png")
    assert "missing" in rejected[0].reason and "RealBlur_J_test_list.txt:2" in rejected[0].reason
    assert (Path(rejected[1].file).relative_to(tmp_path).as_posix(), rejected[1].reason) == (
        f"{j}/scene003", "folder not used (2 images): in no RealBlur list")  # was dropped without a word
    (sample,) = realblur.load(tasks[2], OPTS)
    _check_sample(sample, tasks[2])
    assert sample.meta["blur_type"] == "motion" and sample.meta["f_number"] is None and sample.meta["bit_depth"] == 8
    np.testing.assert_array_equal(sample.blur, _img(15))
    # a line repeated, and a pair in both splits' lists: the first listing is used, the others said (silent before)
    (tmp_path / "RealBlur_J_train_list.txt").write_text(line(j, "scene001", 1) * 2 + line(j, "scene002", 5))
    tasks, rejected = _split(list(realblur.list_tasks(tmp_path, OPTS)))
    assert [(t.key, t.split) for t in tasks][:2] == [("realblur/J/scene001/gt_1", "train"),
                                                     ("realblur/J/scene002/gt_5", "train")]
    again = {Path(r.file).name: r.reason for r in rejected if "listed again" in r.reason}
    assert again == {
        "RealBlur_J_train_list.txt:2": f"{j}/scene001/gt/gt_1.png listed again; the first listing is used "
                                       "(RealBlur_J_train_list.txt:1)",
        "RealBlur_J_test_list.txt:1": f"{j}/scene002/gt/gt_5.png listed again; the first listing is used "
                                      "(RealBlur_J_train_list.txt:3)"}


def test_ded_pairs_by_number(tmp_path):
    for n in (1, 2, 10):
        write_image(tmp_path / "sharp" / f"sharp_{n}.jpg", _img(n))
        write_image(tmp_path / "image" / f"image_{n}.jpg", _img(20 + n))
        write_image(tmp_path / "filtered" / f"defocus_filterd_{n}.png", _img(40 + n))
    write_image(tmp_path / "sharp" / "sharp_3.jpg", _img(3))  # no defocused image
    write_image(tmp_path / "image" / "image_11.jpg", _img(4))  # no sharp image
    tasks, rejected = _split(list(ded.list_tasks(tmp_path, IngestOptions(split_by="train"))))
    assert [t.key for t in tasks] == ["ded/1", "ded/2", "ded/10"]
    assert all(Path(t.files["blur"]).name == f"image_{t.scene}.jpg" for t in tasks)
    assert tasks[2].meta["origin"] == ["image/image_10.jpg", "sharp/sharp_10.jpg", "filtered/defocus_filterd_10.png"]
    assert {Path(r.file).name for r in rejected} == {"sharp_3.jpg", "image_11.jpg"}
    assert {t.split for t in tasks} == {"train"}
    (sample,) = ded.load(tasks[0], OPTS)
    _check_sample(sample, tasks[0])
    assert sample.meta["f_number"] == 2.0 and sample.meta["camera"] == "Lytro Illum" and sample.coc is None
    by_scene = [t.split for t in ded.list_tasks(tmp_path, IngestOptions(test_fraction=0.5, seed=3))
                if isinstance(t, Task)]
    assert by_scene == [split_for("ded", s, IngestOptions(test_fraction=0.5, seed=3)) for s in ("1", "2", "10")]


def test_split_for_and_keys():
    scenes = [f"scene{i:03d}" for i in range(400)]
    opts = IngestOptions(test_fraction=0.25, seed=7)
    splits = [split_for("raw", s, opts) for s in scenes]
    assert splits == [split_for("raw", s, opts) for s in scenes]
    assert 0.17 < splits.count("test") / len(scenes) < 0.33
    assert splits != [split_for("raw", s, IngestOptions(test_fraction=0.25, seed=8)) for s in scenes]
    assert key_part("IMG 0001.v2").startswith("IMG_0001_v2-")  # changed: its safe form and a hash of the name
    assert key_part("IMG_0001_v2") == "IMG_0001_v2" != key_part("IMG 0001.v2")
    with pytest.raises(ValueError, match="split_by"):
        split_for("raw", "a", IngestOptions(split_by="random"))


def test_realdof_and_size_mismatch(tmp_path):
    for i in range(3):
        write_image(tmp_path / "source" / f"{i:03d}_blur.png", _img(i, shape=(48, 64) if i != 1 else (50, 64)))
        write_image(tmp_path / "target" / f"{i:03d}_gt.png", _img(10 + i))
    tasks, rejected = _split(list(realdof.list_tasks(tmp_path, OPTS)))
    assert not rejected and [t.split for t in tasks] == ["test"] * 3
    assert [t.key for t in tasks] == ["realdof/test/000_blur", "realdof/test/001_blur", "realdof/test/002_blur"]
    with pytest.raises(RejectError, match="size mismatch") as info:
        realdof.load(tasks[1], OPTS)
    assert "64x50" in info.value.reason and "64x48" in info.value.reason and "001_gt.png" in info.value.reason
    assert info.value.file.endswith("001_blur.png")
    (tmp_path / "target" / "002_gt.png").unlink()  # paired by number: the one left over gets the reject line
    tasks, rejected = _split(list(realdof.list_tasks(tmp_path, OPTS)))
    assert len(tasks) == 2 and [(Path(r.file).name, r.reason) for r in rejected] == [
        ("002_blur.png", "no target image numbered 2")]


def test_vabd_real_photos(tmp_path, real_fixture_root):
    root = copy_resized(real_fixture_root / "VABD", tmp_path / "VABD")
    tasks, rejected = _split(list(vabd.list_tasks(root, OPTS)))
    assert not rejected and len(tasks) == 12 and {t.split for t in tasks} == {"train"}
    assert [t.key for t in tasks[:4]] == ["vabd/train/0001/f16", "vabd/train/0001/f8", "vabd/train/0001/f2_8",
                                          "vabd/train/0001/f1_8"]
    for task in tasks[:8]:
        (sample,) = vabd.load(task, OPTS)
        _check_sample(sample, task)
        assert sample.meta["camera"] == "Canon EOS 70D" and sample.meta["focal_length_mm"] == 50.0
        assert sample.meta["ref_f_number"] == 16.0 and sample.sharp.shape == (256, 384, 3)
        if sample.blur is None:
            assert sample.meta["f_number"] == 16.0
            continue
        assert sample.meta["f_number"] == {"f8": 8.0, "f2_8": 2.8, "f1_8": 1.8}[task.key.rsplit("/", 1)[1]]
        align = sample.meta["align"]
        assert align["method"] == "ecc" and align["score"] >= 0.8 and np.abs(np.array(align["matrix"])[:, 2]).max() < 2
        assert 0.3 < sample.meta["gain"] < 2.0 and sample.blur.dtype == np.uint8


def test_ebb_real_photos(tmp_path, real_fixture_root):
    root = copy_resized(real_fixture_root / "EBB", tmp_path / "EBB")
    (root / "test" / "target" / "4547.jpg").unlink()
    tasks, rejected = _split(list(ebb.list_tasks(root, OPTS)))
    assert not rejected
    assert [t.key for t in tasks] == ["ebb/train/2977", "ebb/train/2978", "ebb/train/2979",
                                      "ebb/test/4545", "ebb/test/4546", "ebb/test/4547/f16"]
    assert tasks[5].files == {"sharp": str(root / "test" / "input" / "4547.jpg")}
    for task in tasks[3:]:
        (sample,) = ebb.load(task, OPTS)
        _check_sample(sample, task)
        if sample.blur is not None:
            assert sample.meta["f_number"] == 1.8 and sample.meta["align"]["score"] >= 0.8
            assert sample.meta["gain"] is not None


def test_ebb_full_size_pair(real_fixture_root):
    task = next(t for t in ebb.list_tasks(real_fixture_root / "EBB", OPTS) if t.key == "ebb/train/2977")
    (sample,) = ebb.load(task, OPTS)
    m = np.array(sample.meta["align"]["matrix"])
    assert sample.blur.shape == (1024, 1536, 3) and sample.meta["align"]["score"] >= 0.9
    assert np.abs(m[:, 2]).max() > 5  # EBB pairs are off by about a dozen pixels
    assert sample.meta["origin"] == ["train/target/2977.jpg", "train/input/2977.jpg"]


def test_load_pair_registration_failure_and_near_size(tmp_path, real_fixture_root):
    sharp = read_image(real_fixture_root / "VABD" / "train" / "input" / "0002.JPG")
    sharp = cv2.resize(sharp, (384, 256), interpolation=cv2.INTER_AREA)
    write_image(tmp_path / "sharp.png", sharp)
    write_image(tmp_path / "noise.png", _img(5, shape=(256, 384)))
    task = Task("raw", "train", "s", "raw/s/noise", {"blur": str(tmp_path / "noise.png"), "sharp": str(tmp_path / "sharp.png")},
                {"f_number": 2.0}, {"register": "ecc", "fallback": "homography", "gain": True})
    with pytest.raises(RejectError, match="noise.png") as info:
        load_pair(task, OPTS)
    assert "registration" in info.value.reason
    # a blurred shot 1% larger (focus breathing, other crop) is resized onto the reference when registering
    blur = read_image(real_fixture_root / "VABD" / "train" / "8" / "0002.JPG")
    write_image(tmp_path / "blur.png", cv2.resize(blur, (388, 259), interpolation=cv2.INTER_AREA))
    task = Task("raw", "train", "s", "raw/s/blur", {"blur": str(tmp_path / "blur.png"), "sharp": str(tmp_path / "sharp.png")},
                {"f_number": 8.0}, {"register": "ecc", "gain": True})
    sample = load_pair(task, OPTS)
    assert sample.blur.shape == sharp.shape and sample.meta["align"]["resized_from"] == [388, 259]
    assert sample.meta["f_number"] == 8.0 and sample.meta["align"]["score"] >= 0.8
    with pytest.raises(RejectError, match="size mismatch"):
        load_pair(Task("raw", "train", "s", "k", task.files, {}, {}), OPTS)
    with pytest.raises(RejectError, match="missing.png"):
        load_pair(Task("raw", "train", "s", "k", {"blur": str(tmp_path / "missing.png"), "sharp": task.files["sharp"]}, {}, {}), OPTS)


# ------------------------------------------------------------------------------------------ layouts


def test_ebb_given_as_vabd_fails_naming_the_expected_folders(tmp_path, real_fixture_root):
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestError
    from defocuskit.data.sources.layout import LayoutError

    root = real_fixture_root / "EBB"
    with pytest.raises(LayoutError) as info:
        list(vabd.list_tasks(root, OPTS))
    text = str(info.value)
    assert text.startswith(f"--vabd {root}: expected {{train,test}}/{{input,8,2_8,1_8}}/ (VABD)")
    assert "none of 8/, 2_8/, 1_8/" in text and "found {test,train}/{depth,focal,input,target}" in text
    assert text.endswith("is this EBB (--ebb)?")
    with pytest.raises(IngestError, match=r"expected \{train,test\}/\{input,8,2_8,1_8\}/"):
        run_ingest({"vabd": root}, IngestOptions(out=str(tmp_path / "out"), workers=0), progress=False)
    assert not (tmp_path / "out").exists()  # failed before any work


def test_vabd_given_as_ebb_fails(real_fixture_root):
    from defocuskit.data.sources.layout import LayoutError

    root = real_fixture_root / "VABD"
    with pytest.raises(LayoutError) as info:
        list(ebb.list_tasks(root, OPTS))
    text = str(info.value)
    assert text.startswith(f"--ebb {root}: expected {{train,test}}/{{input,target}}/ (EBB); train/ has no target/")
    assert "found train/{1_8,2_8,8,depth,focal,input}" in text and text.endswith("is this VABD (--vabd)?")


def test_wrong_folders_fail_through_the_cli(tmp_path, real_fixture_root):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "--vabd", str(real_fixture_root / "EBB"), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "{train,test}/{input,8,2_8,1_8}/" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["ingest", "--dpdd", str(tmp_path / "empty"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "{train_c,val_c,test_c}/{source,target}/" in result.output
    assert "found an empty folder" in result.output


@pytest.mark.parametrize("module, expected", [
    (dpdd, "{train_c,val_c,test_c}/{source,target}/"), (realblur, "RealBlur_{J,R}_{train,test}_list.txt"),
    (ded, "sharp/, image/"), (realdof, "source/ and target/"), (vabd, "{train,test}/{input,8,2_8,1_8}/"),
    (ebb, "{train,test}/{input,target}/")])
def test_every_dataset_fails_on_an_empty_folder(tmp_path, module, expected):
    from defocuskit.data.sources.layout import LayoutError

    with pytest.raises(LayoutError, match="found an empty folder$") as info:
        list(module.list_tasks(tmp_path, OPTS))
    assert expected in str(info.value) and f"({module.TITLE})" in str(info.value)


def test_half_layouts_fail_naming_what_is_missing(tmp_path):
    from defocuskit.data.sources.layout import LayoutError, check_layout

    write_image(tmp_path / "train_c" / "source" / "a.png", _img(0))
    with pytest.raises(LayoutError, match="train_c/ has no target/"):
        check_layout(dpdd.SOURCE, tmp_path)
    write_image(tmp_path / "sharp" / "sharp_1.jpg", _img(1))
    with pytest.raises(LayoutError, match="no image/"):
        check_layout(ded.SOURCE, tmp_path)
    write_image(tmp_path / "source" / "a.png", _img(2))
    found = r"; no target/; found train_c/source, sharp/ \(1 file\), source/ \(1 file\)"
    with pytest.raises(LayoutError, match=found) as info:
        check_layout(realdof.SOURCE, tmp_path)
    assert "DPDD" not in str(info.value)  # the hint names only layouts that match


def test_images_vabd_and_ebb_do_not_read_get_reject_lines(tmp_path):
    for folder in ("input", "8", "target", "depth"):
        write_image(tmp_path / "train" / folder / "0001.jpg", _img(0))
    write_image(tmp_path / "train" / "0002.jpg", _img(1))  # loose in the split folder
    write_image(tmp_path / "val" / "input" / "0003.jpg", _img(2))  # a split VABD does not have
    (tmp_path / "train" / "8" / "notes.txt").write_text("x")  # not an image: ignored, as before
    tasks, rejected = _split(list(vabd.list_tasks(tmp_path, OPTS)))
    assert [t.key for t in tasks] == ["vabd/train/0001/f16", "vabd/train/0001/f8"]
    reasons = {Path(r.file).relative_to(tmp_path).as_posix(): r.reason for r in rejected}
    assert set(reasons) == {"val", "train/target", "train/0002.jpg"}  # depth/ is known and ignored
    assert reasons["train/target"].startswith("folder not used (1 image): VABD reads input/, 8/, 2_8/, 1_8/")
    assert "outside the folders VABD reads" in reasons["train/0002.jpg"]
    write_image(tmp_path / "train" / "8" / "0009.jpg", _img(3))  # mismatched names: a reject, as before
    _, rejected = _split(list(vabd.list_tasks(tmp_path, OPTS)))
    assert any(r.file.endswith("0009.jpg") and "no f/16 reference" in r.reason for r in rejected)
    _, rejected = _split(list(ebb.list_tasks(tmp_path, OPTS)))
    assert {Path(r.file).relative_to(tmp_path).as_posix() for r in rejected} == {"val", "train/8", "train/0002.jpg"}


def test_two_files_of_one_name_use_the_first_and_reject_the_other(tmp_path):
    """`2978.png` beside `2978.jpg` in one folder: the first by name is used, the other gets a reject line naming it
    (it was dropped without a word before), in VABD, EBB and a --render folder alike."""
    from defocuskit.data.sources import render

    for folder in ("input", "8", "target"):
        write_image(tmp_path / "train" / folder / "0001.jpg", _img(0))
        write_image(tmp_path / "train" / folder / "0001.png", _img(1))
    for module, folders, keys in ((vabd, ("input", "8"), ["vabd/train/0001/f16", "vabd/train/0001/f8"]),
                                  (ebb, ("input", "target"), ["ebb/train/0001"])):
        tasks, rejected = _split(list(module.list_tasks(tmp_path, OPTS)))
        assert [t.key for t in tasks] == keys
        assert {f for t in tasks for f in t.files.values()} == {str(tmp_path / "train" / f / "0001.jpg")
                                                                for f in folders}
        twins = {Path(r.file).relative_to(tmp_path).as_posix(): r.reason for r in rejected if "same name" in r.reason}
        assert twins == {f"train/{f}/0001.png": "another file of the same name is used: 0001.jpg" for f in folders}
    photos = tmp_path / "photos"
    for folder in ("image", "depth"):
        write_image(photos / folder / "a.png", _img(2))
        write_image(photos / folder / "a.tif", _img(3))
    tasks, rejected = _split(list(render.list_tasks(photos, OPTS)))
    assert tasks and all(t.files["image"].endswith("a.png") and t.files["depth"].endswith("a.png") for t in tasks)
    assert sorted(Path(r.file).relative_to(photos).as_posix() for r in rejected) == ["depth/a.tif", "image/a.tif"]


APPLE_DOUBLE = b"\x00\x05\x16\x07" + b"\0" * 60  # what macOS leaves beside a file copied to a non-HFS disk


def test_hidden_files_are_skipped_with_a_reject_line_by_dpdd_ded_and_realdof(tmp_path):
    """`._1.png` (macOS AppleDouble) is no image: DED took it for number 1 and dropped the good file, DPDD and
    RealDOF counted it and lost the split; now each skips it with the reject line --pairs and --sdd give."""
    hidden = "hidden file (name starts with '.'): not used"
    for n in (1, 2, 3):
        write_image(tmp_path / "ded" / "sharp" / f"sharp_{n}.jpg", _img(n))
        write_image(tmp_path / "ded" / "image" / f"image_{n}.jpg", _img(10 + n))
        write_image(tmp_path / "dpdd" / "test_c" / "source" / f"{n}.png", _img(20 + n))
        write_image(tmp_path / "dpdd" / "test_c" / "target" / f"{n}.png", _img(30 + n))
        write_image(tmp_path / "rdof" / "source" / f"{n}.png", _img(40 + n))
        write_image(tmp_path / "rdof" / "target" / f"{n}.png", _img(50 + n))
    cases = ((ded, "ded", "sharp/._sharp_1.jpg", "ded/1"), (dpdd, "dpdd", "test_c/target/._1.png", "dpdd/test/1"),
             (realdof, "rdof", "source/._2.png", "realdof/test/1"))
    for module, folder, bad, key in cases:
        (tmp_path / folder / bad).write_bytes(APPLE_DOUBLE)
        tasks, rejected = _split(list(module.list_tasks(tmp_path / folder, IngestOptions(split_by="train"))))
        assert len(tasks) == 3 and tasks[0].key == key
        assert not any(Path(f).name.startswith(".") for t in tasks for f in t.files.values())
        assert [(r.file, r.reason) for r in rejected] == [(str(tmp_path / folder / bad), hidden)]
    (sample,) = ded.load(next(t for t in ded.list_tasks(tmp_path / "ded", OPTS) if isinstance(t, Task)), OPTS)
    np.testing.assert_array_equal(sample.sharp, read_image(tmp_path / "ded" / "sharp" / "sharp_1.jpg"))


def test_ded_two_files_of_one_number_use_the_first_and_reject_the_other(tmp_path):
    """`image_01.jpg` beside `image_1.jpg`, `sharp_2.png` beside `sharp_2.jpg`: the first by name is used, the
    other gets a reject line naming it (it was dropped without a word before)."""
    for n in (1, 2):
        write_image(tmp_path / "sharp" / f"sharp_{n}.jpg", _img(n))
        write_image(tmp_path / "image" / f"image_{n}.jpg", _img(10 + n))
    write_image(tmp_path / "image" / "image_01.jpg", _img(20))
    write_image(tmp_path / "sharp" / "sharp_2.png", _img(21))
    tasks, rejected = _split(list(ded.list_tasks(tmp_path, IngestOptions(split_by="train"))))
    assert [(t.key, Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [
        ("ded/1", "image_01.jpg", "sharp_1.jpg"), ("ded/2", "image_2.jpg", "sharp_2.jpg")]
    assert sorted((Path(r.file).relative_to(tmp_path).as_posix(), r.reason) for r in rejected) == [
        ("image/image_1.jpg", "another file of the same number is used: image_01.jpg"),
        ("sharp/sharp_2.png", "another file of the same number is used: sharp_2.jpg")]


def test_realdof_pairs_by_number_or_stem_before_sorted_order(tmp_path):
    """`source/{1,2,10}.png` with `target/{1,2,10}_gt.png`: sorted order paired 1 with 10_gt; now the names' numbers
    pair them, a file with no partner gets a reject line, and sorted order is left for names with no numbers."""
    for n in (1, 2, 10):
        write_image(tmp_path / "source" / f"{n}.png", _img(n))
        write_image(tmp_path / "target" / f"{n}_gt.png", _img(10 + n))
    write_image(tmp_path / "source" / "11.png", _img(4))
    tasks, rejected = _split(list(realdof.list_tasks(tmp_path, OPTS)))
    assert [(t.key, Path(t.files["sharp"]).name) for t in tasks] == [
        ("realdof/test/1", "1_gt.png"), ("realdof/test/2", "2_gt.png"), ("realdof/test/10", "10_gt.png")]
    assert [(Path(r.file).name, r.reason) for r in rejected] == [("11.png", "no target image numbered 11")]
    names = tmp_path / "names"
    for stem in ("beach", "desk"):  # no numbers: by stem, `_gt` stripped
        write_image(names / "source" / f"{stem}.png", _img(5))
        write_image(names / "target" / f"{stem}_gt.png", _img(6))
    write_image(names / "target" / "lamp_gt.png", _img(7))
    tasks, rejected = _split(list(realdof.list_tasks(names, OPTS)))
    assert [(t.key, Path(t.files["sharp"]).name) for t in tasks] == [
        ("realdof/test/beach", "beach_gt.png"), ("realdof/test/desk", "desk_gt.png")]
    assert [(Path(r.file).name, r.reason) for r in rejected] == [("lamp_gt.png", "no source image named lamp")]
    other = tmp_path / "other"
    for blur, sharp in (("a", "x"), ("b", "y")):  # nothing in common: sorted order, counts must agree
        write_image(other / "source" / f"{blur}.png", _img(8))
        write_image(other / "target" / f"{sharp}.png", _img(9))
    tasks, rejected = _split(list(realdof.list_tasks(other, OPTS)))
    assert [Path(t.files["sharp"]).name for t in tasks] == ["x.png", "y.png"] and not rejected
    write_image(other / "target" / "z.png", _img(9))
    tasks, rejected = _split(list(realdof.list_tasks(other, OPTS)))
    assert not tasks and "2 source vs 3 target" in rejected[0].reason
    frames = tmp_path / "frames"  # frame numbers that meet once by chance: not a pairing, sorted order as before
    for blur, sharp in ((100, 101), (102, 103), (104, 100)):
        write_image(frames / "source" / f"DSC{blur:05d}.png", _img(1))
        write_image(frames / "target" / f"DSC{sharp:05d}.png", _img(2))
    tasks, rejected = _split(list(realdof.list_tasks(frames, OPTS)))
    assert [Path(t.files["sharp"]).name for t in tasks] == ["DSC00100.png", "DSC00101.png", "DSC00103.png"]
    assert not rejected
