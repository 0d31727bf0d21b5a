"""--pairs (your own misaligned blur/sharp pairs), --sdd (JDRL's SDD layout) and --register none."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, Task
from defocuskit.data.sources import ebb, pairs, raw, sdd, vabd
from defocuskit.data.sources.layout import check_layout
from defocuskit.io.images import read_image, write_image

SHIFT = (3, 2)  # (dx, dy) of the blurred shot against its reference, in pixels
_EXIF_IFD, _F_NUMBER = 0x8769, 0x829D


def _texture(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A smooth random RGB texture (uint8) that ECC registers onto its shifted, blurred copy."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((*shape, 3)).astype(np.float32), (0, 0), 2.0)
    return np.rint(255 * (base - base.min()) / (base.max() - base.min())).astype(np.uint8)


def _shifted_blur(sharp: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """The sharp image moved by SHIFT and defocused (Gaussian)."""
    move = np.float32([[1, 0, SHIFT[0]], [0, 1, SHIFT[1]]])
    moved = cv2.warpAffine(sharp, move, (sharp.shape[1], sharp.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(moved, (0, 0), sigma)


def _pair(blur_path: Path, sharp_path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write a sharp texture and its shifted, blurred copy; returns (blur, sharp)."""
    sharp = _texture(seed)
    blur = _shifted_blur(sharp)
    write_image(blur_path, blur)
    write_image(sharp_path, sharp)
    return blur, sharp


def _jpeg(path: Path, img: np.ndarray, f_number: float | None) -> None:
    """A JPEG with EXIF FNumber when given."""
    exif = Image.Exif()
    if f_number is not None:
        exif.get_ifd(_EXIF_IFD)[_F_NUMBER] = TiffImagePlugin.IFDRational(round(f_number * 10), 10)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=95, exif=exif.tobytes())


def _ingest(sources: dict[str, Path], out: Path, **options) -> tuple[dict, dict[str, dict], list[dict]]:
    """run_ingest: (manifest, {key: decoded sample}, rejects)."""
    opts = IngestOptions(out=str(out), workers=0, **options)
    manifest = run_ingest(sources, opts, progress=False)
    samples = {s["key"]: s for s in iter_samples(out)}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines() if line.strip()]
    return manifest, samples, rejects


def _split(items) -> tuple[list[Task], list[Rejected]]:
    items = list(items)
    return [t for t in items if isinstance(t, Task)], [r for r in items if isinstance(r, Rejected)]


# ------------------------------------------------------------------------------------------- --pairs


def test_an_image_with_a_side_under_8_px_is_a_reject_line_not_a_sample(tmp_path):
    """A 1x1 photo, or a 3x2000 strip that --max-side 128 makes 128x1, was written as a "pair", exit 0 (the
    option itself is refused under 8 px); now the pair's reject line, and the others are written."""
    for sub in ("blur", "sharp"):
        (tmp_path / "p" / sub).mkdir(parents=True)
    for stem, shape in (("dot", (1, 1)), ("strip", (3, 2000)), ("ok", (48, 64))):
        img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
        for sub in ("blur", "sharp"):
            write_image(tmp_path / "p" / sub / f"{stem}.png", img)
    _, samples, rejects = _ingest({"pairs": tmp_path / "p"}, tmp_path / "out", register="none", max_side=128)
    assert set(samples) == {"pairs/ok"}
    reasons = {Path(r["file"]).name: r["reason"] for r in rejects}
    assert reasons["dot.png"] == "image 1x1 px: a side under 8 px holds no blur to learn"
    assert reasons["strip.png"] == ("image 128x1 px as written with --max-side 128: a side under 8 px holds no blur "
                                    "to learn")


def test_a_gif_is_a_reject_line_not_passed_over(tmp_path):
    """GIF (256 colours, often animated) is no format the sources read: it was passed over without a word."""
    for sub in ("blur", "sharp"):
        (tmp_path / "p" / sub).mkdir(parents=True)
        Image.fromarray(_texture(2, (48, 64))).save(tmp_path / "p" / sub / "a.gif")
        write_image(tmp_path / "p" / sub / "b.png", _texture(2, (48, 64)))
    _, samples, rejects = _ingest({"pairs": tmp_path / "p"}, tmp_path / "out", register="none")
    assert set(samples) == {"pairs/b"}
    assert sorted((Path(r["file"]).parent.name, r["reason"]) for r in rejects) == [
        (sub, "unsupported image format (.gif): convert it to TIFF, PNG or JPEG") for sub in ("blur", "sharp")]


def test_pairs_by_stem_registered_by_default(tmp_path):
    root = tmp_path / "mine"
    written = {stem: _pair(root / "blur" / f"{stem}.png", root / "sharp" / f"{stem}.png", seed)
               for seed, stem in enumerate(["beach", "desk"])}
    manifest, samples, rejects = _ingest({"pairs": root}, tmp_path / "out", split_by="train")
    assert sorted(samples) == ["pairs/beach", "pairs/desk"] and rejects == []
    assert manifest["counts"]["by_split"] == {"train": 2} and manifest["counts"]["by_f_number"] == {"none": 2}
    for stem, (blur, sharp) in written.items():
        s = samples[f"pairs/{stem}"]
        meta = s["meta"]
        assert meta["pairing"] == "stem" and meta["source"] == "pairs" and meta["scene"] == stem
        assert meta["origin"] == [f"blur/{stem}.png", f"sharp/{stem}.png"]
        assert meta["f_number"] is None and meta["ref_f_number"] is None and meta["blur_type"] == "defocus"
        assert meta["align"]["method"] in ("ecc", "homography") and meta["align"]["score"] >= 0.8
        assert meta["gain"] is not None
        np.testing.assert_array_equal(s["sharp"], sharp)
        # registered: the stored blur sits on the reference, the input blur does not
        target = cv2.GaussianBlur(sharp, (0, 0), 1.5).astype(float)
        inner = (slice(8, -8), slice(8, -8))
        moved_error = np.abs(blur.astype(float) - target)[inner].mean()
        assert np.abs(s["blur"].astype(float) - target)[inner].mean() < moved_error / 2


def test_register_none_keeps_the_pairs_as_shot(tmp_path):
    root = tmp_path / "mine"
    blur, sharp = _pair(root / "blur" / "a.png", root / "sharp" / "a.png", 0)
    _, samples, _ = _ingest({"pairs": root}, tmp_path / "out", split_by="train", register="none")
    s = samples["pairs/a"]
    np.testing.assert_array_equal(s["blur"], blur)  # no warp, no gain: the shift is still there
    np.testing.assert_array_equal(s["sharp"], sharp)
    align = s["meta"]["align"]  # shard format 2: nothing warped = method none, identity matrix, no score
    assert (align["method"], align["score"], align["matrix"]) == ("none", None, np.eye(3).tolist())
    assert s["meta"]["gain"] is None


def test_pairs_by_sorted_order_when_stems_differ(tmp_path):
    root = tmp_path / "mine"
    # consecutive frame numbers: IMG_0001 (blurred) goes with IMG_0002 (sharp), IMG_0003 with IMG_0004
    written = [_pair(root / "blur" / "IMG_0001.png", root / "sharp" / "IMG_0002.png", 0),
               _pair(root / "blur" / "IMG_0003.png", root / "sharp" / "IMG_0004.png", 1)]
    opts = IngestOptions(split_by="train", register="none")
    tasks, rejected = _split(pairs.list_tasks(root, opts))
    assert rejected == []
    assert [(Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [
        ("IMG_0001.png", "IMG_0002.png"), ("IMG_0003.png", "IMG_0004.png")]
    assert [t.key for t in tasks] == ["pairs/IMG_0001", "pairs/IMG_0003"]
    for task, (blur, sharp) in zip(tasks, written):
        (sample,) = pairs.load(task, opts)
        assert sample.meta["pairing"] == "order"
        np.testing.assert_array_equal(sample.blur, blur)
        np.testing.assert_array_equal(sample.sharp, sharp)


def test_pairs_by_order_across_the_cameras_counter_wrap(tmp_path):
    """Your own pairs shot as the camera's counter wrapped (blurred IMG_9997 with its reference IMG_9998, IMG_9999
    with IMG_0001): sorted by name, IMG_9997 was paired with IMG_0001 and IMG_9999 with IMG_9998, each the wrong
    photo. Ordered round the wrap, each blurred shot keeps the reference taken next to it."""
    root = tmp_path / "mine"
    written = [_pair(root / "blur" / "IMG_9997.png", root / "sharp" / "IMG_9998.png", 0),
               _pair(root / "blur" / "IMG_9999.png", root / "sharp" / "IMG_0001.png", 1),
               _pair(root / "blur" / "IMG_0002.png", root / "sharp" / "IMG_0003.png", 2)]
    opts = IngestOptions(split_by="train", register="none")
    tasks, rejected = _split(pairs.list_tasks(root, opts))
    assert rejected == []
    assert [(Path(t.files["blur"]).stem, Path(t.files["sharp"]).stem) for t in tasks] == [
        ("IMG_9997", "IMG_9998"), ("IMG_9999", "IMG_0001"), ("IMG_0002", "IMG_0003")]
    for task, (blur, sharp) in zip(tasks, written):
        (sample,) = pairs.load(task, opts)
        np.testing.assert_array_equal(sample.blur, blur)
        np.testing.assert_array_equal(sample.sharp, sharp)


def test_pairs_explicit_splits_and_every_unused_image_rejected(tmp_path):
    root = tmp_path / "mine"
    _pair(root / "train" / "blur" / "a.png", root / "train" / "sharp" / "a.png", 0)
    _pair(root / "train" / "blur" / "b.png", root / "train" / "sharp" / "b.png", 1)
    write_image(root / "train" / "blur" / "c.png", _texture(2))  # no sharp c, and the counts differ
    _pair(root / "test" / "blur" / "a.png", root / "test" / "sharp" / "a.png", 3)
    write_image(root / "test" / "sharp" / "extra" / "x.png", _texture(4))  # a subfolder: not read
    write_image(root / "test" / "sharp" / ".hidden.png", _texture(5))
    write_image(root / "test" / "notes" / "y.png", _texture(6))  # a folder --pairs does not read
    (root / "test" / "blur" / "a.xmp").write_text("sidecar")  # not an image: ignored without a line
    tasks, rejected = _split(pairs.list_tasks(root, IngestOptions(split_by="scene", test_fraction=1.0)))
    assert {t.key: t.split for t in tasks} == {"pairs/train/a": "train", "pairs/train/b": "train",
                                               "pairs/test/a": "test"}  # splits from the folders, not split_by
    assert {t.meta["pairing"] for t in tasks} == {"stem"}
    reasons = {Path(r.file).relative_to(root).as_posix(): r.reason for r in rejected}
    assert set(reasons) == {"train/blur/c.png", "test/sharp/extra", "test/sharp/.hidden.png", "test/notes"}
    assert reasons["train/blur/c.png"].startswith("no sharp/c.* (blur/ and sharp/ hold different numbers")
    assert reasons["test/sharp/extra"].startswith("folder not used (1 image)")
    assert reasons["test/notes"].startswith("folder not used (1 image)")


def test_pairs_f_numbers_from_exif_csv_and_pattern(tmp_path):
    root = tmp_path / "mine"
    sharp, other = _texture(0), _texture(1)
    _jpeg(root / "blur" / "a.jpg", _shifted_blur(sharp), 2.8)  # EXIF
    _jpeg(root / "sharp" / "a.jpg", sharp, 11.0)
    _jpeg(root / "blur" / "b_f4.jpg", _shifted_blur(other), None)  # the pattern
    _jpeg(root / "sharp" / "b_f4.jpg", other, None)  # the CSV beats the pattern
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("file,f_number\nsharp/b_f4.jpg,16\n")
    opts = IngestOptions(split_by="train", f_number_csv=str(csv_path), f_number_pattern=r"_f(\d+)")
    tasks, rejected = _split(pairs.list_tasks(root, opts))
    assert rejected == []
    assert {t.key: (t.meta["f_number"], t.meta["ref_f_number"]) for t in tasks} == {
        "pairs/a": (2.8, 11.0), "pairs/b_f4": (4.0, 16.0)}


def test_f_numbers_from_the_csv_for_a_copy_whose_files_are_links(tmp_path):
    """A git-annex or DVC copy (every file a link into a store elsewhere): --f-number-csv refused its rows ("is
    outside" the folder, judged where the links point) and the origins were the links' absolute paths; the files
    are read as a plain copy's, f-numbers and origins alike."""
    store, root = tmp_path / "store", tmp_path / "annexed"
    sharp = _texture(0)
    _jpeg(store / "blur" / "a.jpg", _shifted_blur(sharp), None)
    _jpeg(store / "sharp" / "a.jpg", sharp, None)
    for name in ("blur/a.jpg", "sharp/a.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(store / name)
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("file,f_number\nblur/a.jpg,2.8\nsharp/a.jpg,16\n")
    opts = IngestOptions(split_by="train", f_number_csv=str(csv_path))
    tasks, rejected = _split(pairs.list_tasks(root, opts))
    assert rejected == [] and [(t.key, t.meta["f_number"], t.meta["ref_f_number"], t.meta["origin"]) for t in tasks] \
        == [("pairs/a", 2.8, 16.0, ["blur/a.jpg", "sharp/a.jpg"])]


@pytest.mark.parametrize(("make", "problem"), [
    (lambda r: [(r / d).mkdir(parents=True) for d in ("input", "target")], "no blur/ and sharp/ folders"),
    (lambda r: (r / "blur").mkdir(parents=True), "no sharp/"),
    (lambda r: [(r / d).mkdir(parents=True) for d in ("blur", "sharp", "train/blur")],
     "both blur/, sharp/ and train/: use one of the two layouts"),
    (lambda r: [(r / d).mkdir(parents=True) for d in ("train/input", "train/target")], "train/ has no blur/ or sharp/"),
])
def test_pairs_layout_failure_names_expected_and_found(tmp_path, make, problem):
    root = tmp_path / "mine"
    make(root)
    with pytest.raises(IngestError) as info:
        run_ingest({"pairs": root}, IngestOptions(out=str(tmp_path / "out"), workers=0), progress=False)
    message = str(info.value)
    assert message.startswith(f"--pairs {root}: expected {{blur,sharp}}/ or {{train,test}}/{{blur,sharp}}/")
    assert problem in message and "; found " in message


def test_pairs_through_the_cli(tmp_path):
    root = tmp_path / "mine"
    blur, _ = _pair(root / "blur" / "a.png", root / "sharp" / "a.png", 0)
    _pair(root / "blur" / "b.png", root / "sharp" / "b.png", 1)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ingest", "--pairs", str(root), "--out", str(out), "--workers", "0",
                                      "--split-by", "train", "--register", "none"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["samples"] == 2
    assert manifest["counts"]["by_source"] == {"pairs": 2} and manifest["options"]["register"] == "none"
    stored = {s["key"]: s for s in iter_samples(out)}
    np.testing.assert_array_equal(stored["pairs/a"]["blur"], blur)

    bad = CliRunner().invoke(app, ["ingest", "--pairs", str(root), "--out", str(out), "--register", "flow"])
    text = " ".join(bad.output.replace("│", " ").split())
    assert bad.exit_code == 2 and "'flow' is not one of 'ecc', 'homography', 'none'" in text


# ------------------------------------------------------------------------------- --register none elsewhere


def _ebb_tree(root: Path) -> tuple[np.ndarray, np.ndarray]:
    return _pair(root / "train" / "target" / "0001.png", root / "train" / "input" / "0001.png", 0)


def _vabd_tree(root: Path) -> tuple[np.ndarray, np.ndarray]:
    return _pair(root / "train" / "2_8" / "0001.png", root / "train" / "input" / "0001.png", 0)


def _raw_tree(root: Path) -> tuple[np.ndarray, np.ndarray]:
    sharp = _texture(0)
    _jpeg(root / "scene" / "ref.jpg", sharp, 16.0)
    _jpeg(root / "scene" / "wide.jpg", _shifted_blur(sharp), 2.8)
    return read_image(root / "scene" / "wide.jpg"), read_image(root / "scene" / "ref.jpg")


@pytest.mark.parametrize(("module", "tree"), [(ebb, _ebb_tree), (vabd, _vabd_tree), (raw, _raw_tree)])
def test_register_none_applies_to_every_registering_source(tmp_path, module, tree):
    blur, sharp = tree(tmp_path)
    opts = IngestOptions(register="none", split_by="train")
    tasks = [t for t in module.list_tasks(tmp_path, opts) if isinstance(t, Task) and "blur" in t.files]
    assert len(tasks) == 1 and tasks[0].options["register"] == "none"
    (sample,) = module.load(tasks[0], opts)
    np.testing.assert_array_equal(sample.blur, blur)
    np.testing.assert_array_equal(sample.sharp, sharp)
    assert sample.meta["align"] == {"method": "none", "score": None, "matrix": None} and sample.meta["gain"] is None


# ----------------------------------------------------------------------------------------------- --sdd


def _sdd_tree(parent: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`parent/SDD/{train_patches,test}/{gt,blur}/` as the JDRL release lays it out (same file names)."""
    data = parent / "SDD"
    written = {}
    for seed, (folder, name) in enumerate([("train_patches", "1_0.png"), ("train_patches", "1_1.png"),
                                           ("test", "7.png")]):
        written[f"{folder}/{name}"] = _pair(data / folder / "blur" / name, data / folder / "gt" / name, seed)
    write_image(data / "test" / "gt" / "8.png", _texture(9))  # no blur/8.png
    return written


def test_sdd_splits_keys_and_pairing_by_file_name(tmp_path):
    written = _sdd_tree(tmp_path)
    # the parent of SDD/ is accepted, as the JDRL code expects ./SDD/
    _, samples, rejects = _ingest({"sdd": tmp_path}, tmp_path / "out", register="none")
    assert {k: s["meta"]["split"] for k, s in samples.items()} == {
        "sdd/train/1_0": "train", "sdd/train/1_1": "train", "sdd/test/7": "test"}
    for key, folder, name in [("sdd/train/1_0", "train_patches", "1_0.png"), ("sdd/test/7", "test", "7.png")]:
        s = samples[key]
        blur, sharp = written[f"{folder}/{name}"]
        np.testing.assert_array_equal(s["blur"], blur)
        np.testing.assert_array_equal(s["sharp"], sharp)
        assert s["meta"]["origin"] == [f"SDD/{folder}/blur/{name}", f"SDD/{folder}/gt/{name}"]
        assert s["meta"]["f_number"] is None and s["meta"]["source"] == "sdd"
    assert [(Path(r["file"]).name, r["reason"]) for r in rejects] == [
        ("8.png", "no test/blur/8.png: SDD pairs gt/ and blur/ by identical file name")]


def test_sdd_registers_by_default_and_checks_its_layout(tmp_path):
    _sdd_tree(tmp_path)
    tasks, _ = _split(sdd.list_tasks(tmp_path / "SDD", IngestOptions()))
    assert [t.key for t in tasks] == ["sdd/train/1_0", "sdd/train/1_1", "sdd/test/7"]
    assert tasks[0].options == {"register": "ecc", "motion": "affine", "fallback": "homography", "gain": True}
    (sample,) = sdd.load(tasks[0], IngestOptions())
    assert sample.meta["align"]["method"] in ("ecc", "homography")

    other = tmp_path / "other"
    (other / "train" / "blur").mkdir(parents=True)
    (other / "train" / "sharp").mkdir(parents=True)
    with pytest.raises(IngestError, match=r"--sdd .*: expected \{train_patches,test\}/\{gt,blur\}/ \(SDD\); "
                                          r"no train_patches/ or test/ folder; found train/\{blur,sharp\}"):
        check_layout(sdd.SOURCE, other)


def test_pairs_with_an_implausible_f_number_are_rejected_naming_it(tmp_path):
    from defocuskit.data.sources.fnumbers import GivenFNumbers
    from defocuskit.data.sources.pairs import f_number_of
    from defocuskit.io.formats import ImageError

    shot = tmp_path / "a.jpg"
    assert f_number_of(shot, {"f_number": 2.8}, tmp_path, GivenFNumbers()) == 2.8
    with pytest.raises(ImageError, match=r"a\.jpg: f-number 4e\+07 from EXIF is implausible"):
        f_number_of(shot, {"f_number": 4e7}, tmp_path, GivenFNumbers())


def test_a_gray_shot_beside_a_colour_one_is_a_reject_line(tmp_path):
    """A gray blurred shot (one channel, or three equal ones) paired with a colour reference, or the other way
    round, is refused naming both files; a pair that is gray on both sides is kept."""
    data = tmp_path / "SDD"
    colour = _texture(1)
    gray = cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)
    cases = {"1.png": (gray, colour), "2.png": (np.repeat(gray[:, :, None], 3, axis=2), colour),
             "3.png": (colour, gray), "4.png": (gray, gray), "5.png": (colour, colour)}
    for name, (blur, sharp) in cases.items():
        for folder, arr in (("blur", blur), ("gt", sharp)):
            (data / "test" / folder).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(data / "test" / folder / name), arr if arr.ndim == 2 else arr[:, :, ::-1])
    _, samples, rejects = _ingest({"sdd": tmp_path}, tmp_path / "out", register="none")
    assert sorted(samples) == ["sdd/test/4", "sdd/test/5"]
    np.testing.assert_array_equal(samples["sdd/test/4"]["blur"], np.repeat(gray[:, :, None], 3, axis=2))
    said = {Path(r["file"]).name: r["reason"] for r in rejects}
    assert sorted(said) == ["1.png", "2.png", "3.png"], said
    assert said["1.png"] == (f"blur is gray and sharp is colour: blur {data / 'test/blur/1.png'} vs sharp "
                             f"{data / 'test/gt/1.png'}; a pair must share its colours")
    assert said["2.png"].startswith("blur is gray and sharp is colour")
    assert said["3.png"].startswith("sharp is gray and blur is colour")


def test_a_stem_held_twice_is_rejected_not_paired_by_shifted_sorted_order(tmp_path):
    # blur/{a.jpg,a.png,b.png} with sharp/{a,b,c}.png: the counts agree, so sorted order paired a.png with b.png and
    # b.png with c.png, kept as shot under --register none
    root = tmp_path / "mine"
    blur_b, sharp_b = _pair(root / "blur" / "b.png", root / "sharp" / "b.png", 1)
    _pair(root / "blur" / "a.png", root / "sharp" / "a.png", 0)
    write_image(root / "blur" / "a.jpg", _texture(0))
    write_image(root / "sharp" / "c.png", _texture(2))
    tasks, rejected = _split(pairs.list_tasks(root, IngestOptions(split_by="train", register="none")))
    assert [(Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [("b.png", "b.png")]
    why = "one folder's file stems are all in the other, so they are paired by file stem"
    assert sorted((Path(r.file).relative_to(root).as_posix(), r.reason) for r in rejected) == [
        ("blur/a.jpg", f"the file stem 'a' is held by more than one image: cannot tell which pairs ({why})"),
        ("blur/a.png", f"the file stem 'a' is held by more than one image: cannot tell which pairs ({why})"),
        ("sharp/a.png", f"the file stem 'a' is held by more than one image: cannot tell which pairs ({why})"),
        ("sharp/c.png", f"no blur/c.* ({why})")]
    (sample,) = pairs.load(tasks[0], IngestOptions(split_by="train", register="none"))
    np.testing.assert_array_equal(sample.blur, blur_b)
    np.testing.assert_array_equal(sample.sharp, sharp_b)


def test_sorted_order_compares_the_numbers_in_names_as_numbers(tmp_path):
    """blur/{1,2,10,11}.png with sharp/{1,2,10,11}_gt.png (a script's output, not zero-padded): by plain name order
    `1.png, 10.png, 11.png, 2.png` lined up with `10_gt.png, 11_gt.png, 1_gt.png, 2_gt.png`, every pair the wrong
    scene, kept as shot under --register none with exit 0. RealDOF's sorted-order fallback (`a1..a10` with
    `b11..b20`) likewise."""
    from defocuskit.data.sources import realdof

    root = tmp_path / "mine"
    for n in (1, 2, 10, 11):
        _pair(root / "blur" / f"{n}.png", root / "sharp" / f"{n}_gt.png", n)
    tasks, rejected = _split(pairs.list_tasks(root, IngestOptions(split_by="train", register="none")))
    assert rejected == []
    assert [(Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [
        ("1.png", "1_gt.png"), ("2.png", "2_gt.png"), ("10.png", "10_gt.png"), ("11.png", "11_gt.png")]
    dof = tmp_path / "realdof"
    for a, b in ((1, 11), (2, 12), (10, 20)):
        write_image(dof / "source" / f"a{a}.png", _texture(a))
        write_image(dof / "target" / f"b{b}.png", _texture(a))
    tasks, rejected = _split(realdof.list_tasks(dof, IngestOptions()))
    assert rejected == []
    assert [(Path(t.files["blur"]).name, Path(t.files["sharp"]).name) for t in tasks] == [
        ("a1.png", "b11.png"), ("a2.png", "b12.png"), ("a10.png", "b20.png")]
