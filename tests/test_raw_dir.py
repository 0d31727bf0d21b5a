"""--raw-dir on folders as users keep them: collision-free keys, a reject line for every image file that
is not used (unreadable, no f-number, no pair to make, unsupported), f-numbers from a CSV or the file
name, and permission errors as rejects rather than crashes. Small textured JPEG/PNG/TIFF shots whose
EXIF FNumber is written with Pillow; every ingest has at least one valid pair."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_raw, shard_urls
from defocuskit.data.sample import IngestError, IngestOptions, RejectError, Task
from defocuskit.data.sources import raw as raw_source

_EXIF_IFD, _F_NUMBER = 0x8769, 0x829D


def _texture(seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (64 x 96, uint8) that ECC registers onto its blurred copy."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((64, 96, 3)).astype(np.float32), (0, 0), 2.0)
    return np.rint(255 * (base - base.min()) / (base.max() - base.min())).astype(np.uint8)


def _shot(path: Path, f_number: float | str | None = None, blur: float = 0.0, seed: int = 0,
          when: str | None = None) -> Path:
    """Write the scene `seed` (Gaussian-blurred by `blur` pixels) to path; EXIF FNumber (a rational, or text when
    given as a str) and DateTimeOriginal when given."""
    img = _texture(seed)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):  # no EXIF
        assert f_number is None
        cv2.imwrite(str(path), img[:, :, ::-1])
        return path
    exif = Image.Exif()
    if isinstance(f_number, str):  # an ASCII tag, as some writers store it
        exif.get_ifd(_EXIF_IFD)[_F_NUMBER] = f_number
    elif f_number is not None:
        exif.get_ifd(_EXIF_IFD)[_F_NUMBER] = TiffImagePlugin.IFDRational(round(f_number * 10), 10)
    if when is not None:
        exif.get_ifd(_EXIF_IFD)[0x9003] = when  # DateTimeOriginal
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(img).save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def _pair_scene(folder: Path, names: dict[str, float | None], ref: str = "ref.jpg") -> Path:
    """A scene: `ref` sharp at f/16, every other name a blurred shot at its f-number (None: no EXIF)."""
    _shot(folder / ref, 16.0)
    for i, (name, f_number) in enumerate(names.items()):
        _shot(folder / name, f_number, blur=1.0 + 0.2 * i)
    return folder


def _ingest(root: Path, out: Path, **options) -> tuple[dict, dict[str, dict], list[dict]]:
    """run_ingest of one --raw-dir: (manifest, {key: json metadata} of the written samples, rejects)."""
    opts = IngestOptions(out=str(out), workers=0, split_by="train", register="ecc", **options)
    manifest = run_ingest({"raw": root}, opts, progress=False)
    return manifest, _samples(out), _rejects(out)


def _samples(out: Path) -> dict[str, dict]:
    return {s["__key__"]: json.loads(s["json"]) for url in shard_urls(out) for s in iter_raw(url)}


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _reasons(rejects: list[dict]) -> dict[str, str]:
    return {Path(r["file"]).name: r["reason"] for r in rejects}


def _short_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:6]


# ------------------------------------------------------------------------------------------ keys


def test_file_names_differing_in_dots_or_spaces_stay_distinct(tmp_path):
    root = tmp_path / "photos"
    _pair_scene(root / "s", {"a b.JPG": 2.8, "a_b.JPG": 4.0, "a.b.jpeg": 5.6})
    manifest, samples, rejects = _ingest(root, tmp_path / "out")
    assert rejects == []
    assert sorted(samples) == sorted(["raw/s/ref", "raw/s/a_b", f"raw/s/a_b-{_short_hash('a b')}",
                                      f"raw/s/a_b-{_short_hash('a.b')}"])
    by_origin = {m["origin"][0]: m["f_number"] for m in samples.values()}
    assert by_origin == {"s/ref.jpg": 16.0, "s/a b.JPG": 2.8, "s/a_b.JPG": 4.0, "s/a.b.jpeg": 5.6}
    # the same keys on every run (and machine): a hash of the name, not of an absolute path or a counter
    again = [t.key for t in raw_source.list_tasks(root, IngestOptions(split_by="train"))]
    assert sorted(again) == sorted(samples)


def test_scene_folders_differing_in_spaces_stay_distinct(tmp_path):
    root = tmp_path / "photos"
    _pair_scene(root / "x y", {"b.jpg": 2.8})
    _pair_scene(root / "x_y", {"b.jpg": 4.0})
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert rejects == []
    scene = f"x_y-{_short_hash('x y')}"
    assert sorted(samples) == sorted([f"raw/{scene}/ref", f"raw/{scene}/b", "raw/x_y/ref", "raw/x_y/b"])
    assert {m["scene"] for m in samples.values()} == {scene, "x_y"}
    assert all("." not in k for k in samples)


# ------------------------------------------------------------------------ scenes without a pair


def test_made_up_scene_names_never_take_a_subfolders_keys(tmp_path):
    """The root's own shots (scene: the root's name) beside a subfolder of that name, and a folder split by
    --scene-gap into t00/t01 beside a subfolder t00: the subfolder's shots were rejected as 'duplicate key', exit 0."""
    root = tmp_path / "photos"
    for folder, seed in ((root, 0), (root / "photos", 1)):
        _shot(folder / "IMG_1.jpg", 16.0, seed=seed)
        _shot(folder / "IMG_2.jpg", 2.8, blur=1.5, seed=seed)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert rejects == []
    made_up = f"photos-{_short_hash('photos')}"
    assert {k: m["origin"][0] for k, m in samples.items()} == {
        f"raw/{made_up}/IMG_1": "IMG_1.jpg", f"raw/{made_up}/IMG_2": "IMG_2.jpg",
        "raw/photos/IMG_1": "photos/IMG_1.jpg", "raw/photos/IMG_2": "photos/IMG_2.jpg"}
    root = tmp_path / "gap"
    for folder, seed, hour in ((root / "x", 0, 10), (root / "x", 1, 12), (root / "x" / "t00", 2, 14)):
        _shot(folder / f"a{seed}.jpg", 16.0, seed=seed, when=f"2024:05:01 {hour}:00:00")
        _shot(folder / f"b{seed}.jpg", 2.8, blur=1.5, seed=seed, when=f"2024:05:01 {hour}:00:05")
    tasks = [t for t in raw_source.list_tasks(root, IngestOptions(scene_gap_s=60)) if isinstance(t, Task)]
    t00 = f"x/t00-{_short_hash('t00')}"
    assert [(t.key, Path(t.files.get("blur", t.files["sharp"])).relative_to(root).as_posix()) for t in tasks] == [
        (f"raw/{t00}/a0", "x/a0.jpg"), (f"raw/{t00}/b0", "x/b0.jpg"), ("raw/x/t01/a1", "x/a1.jpg"),
        ("raw/x/t01/b1", "x/b1.jpg"), ("raw/x/t00/a2", "x/t00/a2.jpg"), ("raw/x/t00/b2", "x/t00/b2.jpg")]


def test_scene_gap_stops_when_capture_times_run_against_the_file_numbers(tmp_path):
    """One scene shot across a camera clock reset (IMG_0003 'taken' months before IMG_0002): --scene-gap split it in
    two and paired the f/1.8 shot with the f/2.8 one as its reference, exit 0. Now it stops before writing anything,
    naming both files and their times; names with another prefix (a second camera) are not compared."""
    root = tmp_path / "photos"
    _shot(root / "s" / "IMG_0001.jpg", 16.0, when="2024:05:01 12:00:00")
    _shot(root / "s" / "IMG_0002.jpg", 8.0, blur=0.8, when="2024:05:01 12:00:02")
    _shot(root / "s" / "IMG_0003.jpg", 2.8, blur=1.5, when="2024:01:01 00:00:00")
    _shot(root / "s" / "IMG_0004.jpg", 1.8, blur=2.0, when="2024:01:01 00:00:02")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ingest", "--raw-dir", str(root), "--out", str(out), "--workers", "0",
                                      "--split-by", "train", "--scene-gap", "60"])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert (f"--scene-gap: {root / 's' / 'IMG_0003.jpg'} (taken 2024-01-01 00:00:00) is numbered after IMG_0002.jpg "
            "(taken 2024-05-01 12:00:02) but was taken before it") in message
    assert "put each scene in its own subfolder, or drop --scene-gap" in message
    assert not out.exists() or not any(out.iterdir())
    # without --scene-gap the folder is one scene, as it is
    _, samples, rejects = _ingest(root, out)
    assert rejects == [] and {m["ref_f_number"] for m in samples.values()} == {16.0}
    # another camera's names (DSC_) in the same session folder are not compared with IMG_ ones
    other = tmp_path / "two"
    _shot(other / "s" / "IMG_0001.jpg", 16.0, when="2024:05:01 12:00:00")
    _shot(other / "s" / "IMG_0002.jpg", 2.8, blur=1.5, when="2024:05:01 12:00:02")
    _shot(other / "s" / "DSC_0001.jpg", 16.0, seed=1, when="2024:05:01 14:00:00")
    _shot(other / "s" / "DSC_0002.jpg", 2.8, blur=1.5, seed=1, when="2024:05:01 14:00:03")
    tasks = [t for t in raw_source.list_tasks(other, IngestOptions(scene_gap_s=60)) if isinstance(t, Task)]
    assert sorted(t.key for t in tasks) == ["raw/s/t00/IMG_0001", "raw/s/t00/IMG_0002", "raw/s/t01/DSC_0001",
                                            "raw/s/t01/DSC_0002"]


def test_scene_gap_takes_a_counter_wrap_for_no_clock_reset(tmp_path):
    """A bracket shot as the camera's counter wraps (IMG_9998, IMG_9999, IMG_0001, IMG_0002 in capture order) sorted
    by name as 0001, 0002, 9998, 9999, so --scene-gap stopped with "a camera clock reset?" (exit 1) on a normal
    folder. Now the counters are ordered round their wrap: one scene, three pairs on the f/16 reference; a real reset
    across the same names still stops."""
    root = tmp_path / "photos"
    for name, f_number, blur, when in (("IMG_9998", 16.0, 0.0, "12:00:00"), ("IMG_9999", 8.0, 0.8, "12:00:02"),
                                       ("IMG_0001", 2.8, 1.5, "12:00:04"), ("IMG_0002", 1.8, 2.0, "12:00:06")):
        _shot(root / "s" / f"{name}.jpg", f_number, blur=blur, when=f"2024:05:01 {when}")
    tasks = [t for t in raw_source.list_tasks(root, IngestOptions(scene_gap_s=60)) if isinstance(t, Task)]
    assert sorted(t.key for t in tasks) == ["raw/s/IMG_0001", "raw/s/IMG_0002", "raw/s/IMG_9998", "raw/s/IMG_9999"]
    assert {t.meta["ref_f_number"] for t in tasks} == {16.0}
    _shot(root / "s" / "IMG_0003.jpg", 1.8, blur=2.0, seed=1, when="2024:01:01 00:00:00")  # the clock set back
    with pytest.raises(IngestError, match="IMG_0003.jpg .* is numbered after IMG_0002.jpg"):
        list(raw_source.list_tasks(root, IngestOptions(scene_gap_s=60)))


@pytest.mark.parametrize(("counters", "order"), [
    (["0001", "0002", "0003"], ["0001", "0002", "0003"]),
    (["0001", "0002", "9998", "9999"], ["9998", "9999", "0001", "0002"]),
    (["00002", "99999", "00001"], ["99999", "00001", "00002"]),  # a five-digit counter
    (["0010", "5010"], ["0010", "5010"]),  # no wrap to be seen: numeric order
    (["0001", "0001", "9999"], ["9999", "0001", "0001"]),
])
def test_counter_order_follows_the_camera_round_its_wrap(counters, order):
    from defocuskit.data.sources.counters import counter_order

    assert counter_order([(c, c) for c in counters]) == order


@pytest.mark.parametrize(("stem", "counter"), [
    ("IMG_0042", ("IMG_", "0042")), ("DSC09999", ("DSC0", "9999")), ("1P0A0917", ("1P0A", "0917")),
    ("_DSC0042", ("_DSC", "0042")), ("DSC_12", ("DSC_", "12")), ("20240501", ("", "20240501")),
    ("scene_2_f1.8", None), ("tree", None),
])
def test_camera_counter_reads_dcf_names(stem, counter):
    """DCF names count in their last four digits (Sony's DSC09999 wraps to DSC00001, not at 99999; a Canon with a
    custom prefix, 1P0A0917, is numbered too)."""
    from defocuskit.data.sources.counters import camera_counter

    assert camera_counter(stem) == counter


def test_scene_gap_takes_a_dcf_counter_wrap_for_no_clock_reset(tmp_path):
    """Sony's DSC09999 then DSC00001: read as five-digit counters 09999 and 00001 they did not wrap, so the later
    shot came first and --scene-gap stopped with "a camera clock reset?"."""
    root = tmp_path / "photos"
    for name, f_number, blur, when in (("DSC09998", 16.0, 0.0, "12:00:00"), ("DSC09999", 2.8, 1.5, "12:00:02"),
                                       ("DSC00001", 1.8, 2.0, "12:00:04")):
        _shot(root / "s" / f"{name}.jpg", f_number, blur=blur, when=f"2024:05:01 {when}")
    tasks = [t for t in raw_source.list_tasks(root, IngestOptions(scene_gap_s=60)) if isinstance(t, Task)]
    assert sorted(t.key for t in tasks) == ["raw/s/DSC00001", "raw/s/DSC09998", "raw/s/DSC09999"]


def test_single_shot_scene_is_rejected_not_a_reference(tmp_path):
    root = tmp_path / "photos"
    _pair_scene(root / "good", {"b.jpg": 2.8})
    _shot(root / "lonely" / "only.jpg", 2.8)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/good/b", "raw/good/ref"]
    assert _reasons(rejects) == {"only.jpg": "scene 'lonely' has one usable shot: no pair to make"}


def test_scene_with_one_f_number_has_no_reference(tmp_path):
    root = tmp_path / "photos"
    _pair_scene(root / "good", {"b.jpg": 2.8, "z.jpg": 16.0})  # z: a second f/16 shot (ties: earliest, then by name)
    for i in range(3):
        _shot(root / "flat" / f"f{i}.jpg", 2.8, blur=i)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/good/b", "raw/good/ref"]
    reasons = _reasons(rejects)
    assert {n: reasons[n] for n in ("f0.jpg", "f1.jpg", "f2.jpg")} == dict.fromkeys(
        ("f0.jpg", "f1.jpg", "f2.jpg"), "no reference: all 3 shots of scene 'flat' at f/2.8")
    assert reasons["z.jpg"] == "same f-number as the reference ref.jpg (f/16): not a defocus pair"
    assert len(rejects) == 4


# ---------------------------------------------------------------- every image file is accounted for


def test_every_image_file_is_used_or_has_a_reject_line(tmp_path):
    root = tmp_path / "photos"
    scene = _pair_scene(root / "s", {"b.png": 2.8})  # a PNG with EXIF (eXIf chunk) is a shot
    _shot(scene / "c.png")  # PNG without EXIF
    _shot(scene / "d.tif")  # TIFF without EXIF
    _shot(scene / "e.tiff")
    _shot(scene / "e.jpg", 4.0)  # the JPEG twin of e.tiff: the TIFF is preferred
    _shot(scene / "g.png", 4.0, blur=1.0)
    _shot(scene / "G.JPG", 4.0, blur=1.0)  # the same shot whatever the case of its name ...
    _shot(scene / "g.png.jpg", 4.0, blur=1.0)  # ... and as an export named after it: one sample, not three
    (scene / "f.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (scene / "._ref.jpg").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble metadata
    (scene / "ref.xmp").write_text("<x:xmpmeta/>")  # sidecars are not photos: ignored without a line
    (scene / "notes.txt").write_text("tripod, 50mm")
    (root / ".thumbnails").mkdir()
    _shot(root / ".thumbnails" / "t.jpg", 2.8)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/s/b", "raw/s/g", "raw/s/ref"]
    reasons = _reasons(rejects)
    assert set(reasons) == {"c.png", "d.tif", "e.tiff", "e.jpg", "f.heic", "._ref.jpg", ".thumbnails", "G.JPG",
                            "g.png.jpg"}
    assert reasons["G.JPG"] == reasons["g.png.jpg"] == "another file of the same shot is used: g.png"
    hint = " (give it with --f-number-csv or --f-number-pattern)"
    assert reasons["c.png"] == reasons["d.tif"] == reasons["e.tiff"] == "f-number unknown: no EXIF FNumber" + hint
    assert reasons["e.jpg"] == "another file of the same shot is used: e.tiff"
    assert "unsupported image format (.heic)" in reasons["f.heic"]
    assert "hidden file" in reasons["._ref.jpg"] and "hidden folder" in reasons[".thumbnails"]


# ----------------------------------------------------------------------------- given f-numbers


def test_a_text_exif_f_number_is_read_or_rejected_naming_the_value(tmp_path):
    """An EXIF FNumber stored as the text 'f/2.8' or 'F2.8' was rejected as 'no EXIF FNumber'; text that is an
    f-number is now read, and text that is not one is a reject line quoting it (a CSV row still overrides it)."""
    root = tmp_path / "photos"
    _shot(root / "s" / "ref.jpg", "f/16")
    for i, (name, text) in enumerate({"a.jpg": "F2.8", "b.jpg": "f4", "c.jpg": "5.6", "d.jpg": "F/8"}.items()):
        _shot(root / "s" / name, text, blur=1.0 + 0.2 * i)
    _shot(root / "s" / "bad.jpg", "abc", blur=1.5)
    _shot(root / "s" / "fixed.jpg", "f/ two", blur=1.6)  # the CSV gives it
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("file,f_number\ns/fixed.jpg,2\n")
    _, samples, rejects = _ingest(root, tmp_path / "out", f_number_csv=str(csv_path))
    f_numbers = {m["origin"][0]: (m["f_number"], m["ref_f_number"]) for m in samples.values()}
    assert f_numbers == {"s/ref.jpg": (16.0, 16.0), "s/a.jpg": (2.8, 16.0), "s/b.jpg": (4.0, 16.0),
                         "s/c.jpg": (5.6, 16.0), "s/d.jpg": (8.0, 16.0), "s/fixed.jpg": (2.0, 16.0)}
    assert _reasons(rejects) == {"bad.jpg": "EXIF FNumber 'abc' is not a number (give it with --f-number-csv)"}
    assert [r["file"] for r in rejects] == [str(root / "s" / "bad.jpg")]


def test_f_numbers_from_csv_and_name_pattern_through_the_cli(tmp_path):
    root = tmp_path / "photos"
    _shot(root / "s" / "ref_f16.jpg")  # no EXIF: f/16 from the name
    _shot(root / "s" / "wide_f2_8.jpg", blur=1.5)  # no EXIF: f/2.8 from the name ('_' read as '.')
    _shot(root / "s" / "exif.jpg", 4.0, blur=1.0)  # EXIF f/4, but the CSV says f/5.6: the CSV wins
    _shot(root / "s" / "IMG 7.png", blur=1.2)  # no EXIF, no f-number in the name: the CSV gives f/8
    _shot(root / "s" / "nothing.jpg", blur=1.1)  # nowhere: rejected
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("file,f_number,comment\ns/exif.jpg,5.6,override\ns/IMG 7.png,f/8,\n")
    out = tmp_path / "out"
    pattern = r"f(\d+(?:[._]\d+)?)"
    result = CliRunner().invoke(app, ["ingest", "--raw-dir", str(root), "--out", str(out), "--workers", "0",
                                      "--split-by", "train", "--f-number-csv", str(csv_path),
                                      "--f-number-pattern", pattern])
    assert result.exit_code == 0, result.output
    f_numbers = {m["origin"][0]: (m["f_number"], m["ref_f_number"]) for m in _samples(out).values()}
    assert f_numbers == {"s/ref_f16.jpg": (16.0, 16.0), "s/wide_f2_8.jpg": (2.8, 16.0),
                         "s/exif.jpg": (5.6, 16.0), "s/IMG 7.png": (8.0, 16.0)}
    assert _reasons(_rejects(out)) == {
        "nothing.jpg": f"f-number unknown: no EXIF FNumber, and the name does not match --f-number-pattern {pattern!r}"}


def test_a_name_pattern_matching_several_f_numbers_is_a_reject_not_the_first(tmp_path):
    """README's pattern on Fujifilm names: 'dscf0018_f1_8.jpg' read as f/18 became the scene's reference and the
    f/16 shot was paired onto it as a blurred shot, exit 0; a name with two different values is now a reject."""
    root = tmp_path / "photos"
    _shot(root / "s" / "dscf0016_f16.jpg")  # both matches say 16: used
    _shot(root / "s" / "dscf0017_f2_8.jpg", blur=1.5)  # 17 or 2.8: rejected
    _shot(root / "s" / "dscf0018_f1_8.jpg", blur=2.0)  # 18 or 1.8: rejected
    _shot(root / "s" / "IMG_0019_f4.jpg", blur=1.0)  # one match: f/4
    pattern = r"f(\d+(?:[._]\d+)?)"
    _, samples, rejects = _ingest(root, tmp_path / "out", f_number_pattern=pattern)
    f_numbers = {m["origin"][0]: (m["f_number"], m["ref_f_number"]) for m in samples.values()}
    assert f_numbers == {"s/dscf0016_f16.jpg": (16.0, 16.0), "s/IMG_0019_f4.jpg": (4.0, 16.0)}
    assert _reasons(rejects) == {
        "dscf0017_f2_8.jpg": f"f-number unknown: no EXIF FNumber, and --f-number-pattern {pattern!r} matches the name "
                             "2 times with different f-numbers ('0017', '2_8'); make it match only the f-number",
        "dscf0018_f1_8.jpg": f"f-number unknown: no EXIF FNumber, and --f-number-pattern {pattern!r} matches the name "
                             "2 times with different f-numbers ('0018', '1_8'); make it match only the f-number"}


@pytest.mark.parametrize(("text", "error"), [
    ("name,f\ns/b.jpg,2.8\n", r"f\.csv:1: missing column file, f_number"),
    ("file,f_number\ns/b.jpg,2.8\ns/ref.jpg,wide\n",
     r"f\.csv:3: f_number 'wide' of 's/ref\.jpg' is not a positive number"),
    ("file,f_number\ns/b.jpg,0\n", r"f\.csv:2: f_number '0'"),
    ("file,f_number\n\ns/gone.jpg,2.8\n", r"f\.csv:3: no such file 's/gone\.jpg'"),
    ("file,f_number\ns/b.jpg,2.8\ns/b.jpg,4\n", r"f\.csv:3: 's/b\.jpg' is listed twice \(also on line 2\)"),
])
def test_bad_f_number_csv_is_an_error_naming_file_and_line(tmp_path, text, error):
    root = _pair_scene(tmp_path / "photos" / "s", {"b.jpg": 2.8}).parent
    csv_path = tmp_path / "f.csv"
    csv_path.write_text(text)
    with pytest.raises(IngestError, match=error):
        run_ingest({"raw": root}, IngestOptions(out=str(tmp_path / "out"), workers=0, f_number_csv=str(csv_path)),
                   progress=False)


def test_bad_f_number_pattern_is_an_error(tmp_path):
    root = _pair_scene(tmp_path / "photos" / "s", {"b.jpg": 2.8}).parent
    for pattern, error in [(r"f\d+", "has no group"), (r"f(\d+", "not a regular expression")]:
        with pytest.raises(IngestError, match=error):
            list(raw_source.list_tasks(root, IngestOptions(f_number_pattern=pattern)))


# -------------------------------------------------------------------------- permission errors


def _deny_open(monkeypatch, denied: Path) -> None:
    """open() of `denied` raises PermissionError, as for a file without read permission."""
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_unreadable_file_is_a_reject_not_a_crash(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    _pair_scene(root / "s", {"b.jpg": 2.8, "c.jpg": 4.0})
    _deny_open(monkeypatch, root / "s" / "c.jpg")
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/s/b", "raw/s/ref"]
    assert [(r["file"], r["reason"]) for r in rejects] == [
        (str(root / "s" / "c.jpg"), "unreadable file or EXIF header: permission denied")]


def test_unreadable_folder_is_a_reject(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    _pair_scene(root / "good", {"b.jpg": 2.8})
    _pair_scene(root / "locked", {"b.jpg": 2.8})
    real_scandir = os.scandir

    def fake_scandir(path="."):
        if Path(path) == root / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/good/b", "raw/good/ref"]
    assert [(r["file"], r["reason"]) for r in rejects] == [
        (str(root / "locked"), "cannot list folder: permission denied")]


def test_file_unreadable_after_listing_is_rejected_at_load(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    _pair_scene(root / "s", {"b.jpg": 2.8})
    pair = next(t for t in raw_source.list_tasks(root, IngestOptions()) if isinstance(t, Task) and "blur" in t.files)
    _deny_open(monkeypatch, root / "s" / "ref.jpg")
    with pytest.raises(RejectError, match="permission denied") as info:
        raw_source.load(pair, IngestOptions())
    assert info.value.file == str(root / "s" / "ref.jpg")


def _permissions_enforced(tmp_path: Path) -> bool:
    """False where this process reads a file without read permission (root, CAP_DAC_OVERRIDE)."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    probe.chmod(0)
    try:
        probe.read_text()
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)
        probe.unlink()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_chmod_000_file_and_folder_are_rejects(tmp_path):
    if not _permissions_enforced(tmp_path):
        pytest.skip("this process reads files without read permission (root)")
    root = tmp_path / "photos"
    _pair_scene(root / "s", {"b.jpg": 2.8, "c.jpg": 4.0})
    _pair_scene(root / "locked", {"b.jpg": 2.8})
    (root / "s" / "c.jpg").chmod(0)
    (root / "locked").chmod(0)
    try:
        _, samples, rejects = _ingest(root, tmp_path / "out")
    finally:
        (root / "s" / "c.jpg").chmod(0o644)
        (root / "locked").chmod(0o755)
    assert sorted(samples) == ["raw/s/b", "raw/s/ref"]
    assert {r["file"]: r["reason"] for r in rejects} == {
        str(root / "locked"): "cannot list folder: permission denied",
        str(root / "s" / "c.jpg"): "unreadable file or EXIF header: permission denied"}



def test_implausible_f_numbers_are_rejects_naming_the_value(tmp_path):
    root = tmp_path / "photos"
    _shot(root / "s" / "ref.jpg", 16.0)
    _shot(root / "s" / "ok.jpg", 2.8, blur=1.5)
    _shot(root / "s" / "tag.jpg", 1000.0, blur=1.2)  # a misread or corrupt EXIF tag
    _shot(root / "s" / "zero.jpg", 0.1, blur=1.1)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/s/ok", "raw/s/ref"]
    reasons = _reasons(rejects)
    assert reasons["tag.jpg"] == "f-number 1000 from EXIF is implausible (lenses span f/0.7 to f/64); not used"
    assert reasons["zero.jpg"].startswith("f-number 0.1 from EXIF is implausible")
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("file,f_number\ns/ok.jpg,40000000\n")
    result = CliRunner().invoke(app, ["ingest", "--raw-dir", str(root), "--out", str(tmp_path / "o2"),
                                      "--f-number-csv", str(csv_path), "--workers", "0"])
    assert result.exit_code != 0 and "f.csv:2: 's/ok.jpg': f-number 4e+07 from the CSV is implausible" in result.output


def test_an_ingest_that_keeps_only_references_fails_naming_the_rejects(tmp_path, capsys):
    from defocuskit.data import manifest_checks

    root = tmp_path / "photos"
    _shot(root / "s1" / "ref.png", 16.0)
    small = _texture(0)[:48, :80]  # the blurred shot at another size: rejected, and only the reference is left
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_F_NUMBER] = TiffImagePlugin.IFDRational(40, 10)
    Image.fromarray(small).save(root / "s1" / "b.png", format="PNG", exif=exif.tobytes())
    with pytest.raises(IngestError, match=r"no blurred shot written: only 1 sharp reference\(s\) kept, nothing to "
                       r"deblur or score; 1 input\(s\) rejected \(most common reason \(1 of 1\): size mismatch"):
        _ingest(root, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is False and "no blurred shot written" in manifest["error"]
    manifest_checks._WARNED.clear()
    shard_urls(tmp_path / "out")  # a reader names the failure, not an unfinished run to repeat
    err = capsys.readouterr().err
    assert "its ingest failed: no blurred shot written" in err and "run the same ingest command" not in err


def test_the_roots_own_shots_are_named_after_the_folder_as_given(tmp_path, monkeypatch):
    """A link to a card's folder names the scene after the link the user gave, not the card's `100CANON`; `.` after
    the working folder."""
    card = tmp_path / "card" / "100CANON"
    _shot(card / "IMG_1.jpg", 16.0)
    _shot(card / "IMG_2.jpg", 2.8, blur=1.5)
    (tmp_path / "garden").symlink_to(card, target_is_directory=True)
    keys = [t.key for t in raw_source.list_tasks(tmp_path / "garden", IngestOptions()) if isinstance(t, Task)]
    assert keys == ["raw/garden/IMG_1", "raw/garden/IMG_2"], keys
    monkeypatch.chdir(card)
    assert [t.key for t in raw_source.list_tasks(Path("."), IngestOptions()) if isinstance(t, Task)] == \
        ["raw/100CANON/IMG_1", "raw/100CANON/IMG_2"]


def test_an_exif_f_number_stored_as_a_double_is_read(tmp_path):
    """Pillow writes a Python float as an EXIF DOUBLE (`exif.get_ifd(0x8769)[FNumber] = 2.8`, a script stamping the
    f-numbers onto exported shots); exifread gives it as `[(2.8,)]`, which read as no FNumber: every shot a reject
    'f-number unknown: no EXIF FNumber', the focal length silently null."""
    root = tmp_path / "photos"
    for name, f_number, blur in (("ref.jpg", 16.0, 0.0), ("wide.jpg", 2.8, 1.5)):
        img = _texture(0)
        img = cv2.GaussianBlur(img, (0, 0), blur) if blur else img
        exif = Image.Exif()
        exif.get_ifd(_EXIF_IFD)[_F_NUMBER] = f_number
        exif.get_ifd(_EXIF_IFD)[0x920A] = 50.0  # FocalLength
        (root / "s").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "s" / name, format="JPEG", exif=exif.tobytes(), quality=95)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert rejects == []
    assert {m["origin"][0]: (m["f_number"], m["ref_f_number"], m["focal_length_mm"]) for m in samples.values()} == {
        "s/ref.jpg": (16.0, 16.0, 50.0), "s/wide.jpg": (2.8, 16.0, 50.0)}
