"""`eval` replaces or removes only files an earlier evaluation wrote: report.json lists the report files it
wrote, a manifest the images --save-images saved; distinct sample keys save to distinct files; a --report or
--save-images that is a file (or cannot be written) is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.eval.saved import MANIFEST, image_names
from defocuskit.io.images import read_image

KEYS = ["raw/a/b_IMG_f2_8", "raw/a_b/IMG_f2_8", "plain_f4"]  # the first two both were raw_a_b_IMG_f2_8.png


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small pairs, each a different flat grey (so each saved input is told apart by its value)."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    folder = tmp_path_factory.mktemp("own") / "shards"
    folder.mkdir()
    with wds.ShardWriter(str(folder / "test-%06d.tar"), maxcount=10, verbose=0) as sink:
        for i, key in enumerate(KEYS):
            sharp = np.full((24, 32, 3), 40 + 60 * i, np.uint8)
            sink.write({"__key__": key, **encode_members(sharp, sharp, None, {"source": "t", "f_number": 2.8 + i})})
    return folder


def _eval(shards: Path, *extra: str):
    res = CliRunner().invoke(app, ["eval", "--shards", str(shards), "--baseline", "input", *extra])
    return res, res.output.replace("\n", "")


def test_report_json_lists_its_files_and_a_figure_it_did_not_write_is_refused(shards: Path, tmp_path: Path) -> None:
    report = tmp_path / "repH"
    res, _ = _eval(shards, "--report", str(report))  # an earlier report, no figure
    assert res.exit_code == 0, res.output
    assert json.loads((report / "report.json").read_text())["files"] == ["aperture.png", "report.csv", "report.json"]
    before = (report / "report.json").read_bytes()
    (report / "figure.png").write_text("mine")
    for extra in ([], ["--figure"]):  # neither removed nor overwritten: refused, naming it
        res, out = _eval(shards, "--report", str(report), *extra)
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
        assert f"{report / 'figure.png'}: exists and was not written by an earlier evaluation" in out
        assert (report / "figure.png").read_text() == "mine" and (report / "report.json").read_bytes() == before
    (report / "figure.png").unlink()
    res, _ = _eval(shards, "--report", str(report), "--figure")
    assert res.exit_code == 0 and "figure.png" in json.loads((report / "report.json").read_text())["files"]
    res, _ = _eval(shards, "--report", str(report))  # its own figure: removed by a run without --figure
    assert res.exit_code == 0 and not (report / "figure.png").exists()
    (report / "aperture.png").write_bytes(b"my own plot")  # a user's copy over a file the run wrote: left alone
    res, out = _eval(shards, "--report", str(report))
    assert res.exit_code == 2 and f"{report / 'aperture.png'}: changed since the evaluation that wrote it" in out
    assert (report / "aperture.png").read_bytes() == b"my own plot"


def test_a_report_json_edited_since_is_left_as_it_is(shards: Path, tmp_path: Path) -> None:
    report = tmp_path / "edited"
    assert _eval(shards, "--report", str(report))[0].exit_code == 0
    assert _eval(shards, "--report", str(report))[0].exit_code == 0  # its own, unchanged: replaced
    data = json.loads((report / "report.json").read_text())
    data["my_analysis"] = "hand-written notes, keep me"
    (report / "report.json").write_text(json.dumps(data, indent=2))
    edited = (report / "report.json").read_bytes()
    res, out = _eval(shards, "--report", str(report))
    assert res.exit_code == 2 and f"{report / 'report.json'}: changed since the evaluation that wrote it" in out, out
    assert (report / "report.json").read_bytes() == edited


def test_a_report_json_without_files_owns_no_figure(shards: Path, tmp_path: Path) -> None:
    report = tmp_path / "old"
    assert _eval(shards, "--report", str(report))[0].exit_code == 0
    old = json.loads((report / "report.json").read_text())
    del old["files"]  # what an earlier version wrote (nor the SHA-256 of itself)
    old["sha256"].pop("report.json")
    (report / "report.json").write_text(json.dumps(old))
    (report / "figure.png").write_text("mine")
    res, out = _eval(shards, "--report", str(report))
    assert res.exit_code == 2 and "figure.png: exists and was not written" in out
    (report / "figure.png").unlink()
    assert _eval(shards, "--report", str(report))[0].exit_code == 0  # its report.csv, aperture.png: replaced


def test_report_that_is_a_file_or_not_writable_is_a_one_line_error(shards: Path, tmp_path: Path, monkeypatch) -> None:
    import tempfile

    a_file = tmp_path / "report"
    a_file.write_text("mine")
    res, out = _eval(shards, "--report", str(a_file))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert f"{a_file}: exists and is not a folder" in out and a_file.read_text() == "mine"
    locked = tmp_path / "ro"
    locked.mkdir()
    real = tempfile.mkstemp

    def denied(*args, **kwargs):  # a read-only folder (the tests run as root, which chmod does not stop)
        if Path(kwargs.get("dir", "")) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    res, out = _eval(shards, "--report", str(locked))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert f"{locked}: cannot write the report there (Permission denied)" in out


def test_save_images_distinct_names_manifest_and_users_files_refused(shards: Path, tmp_path: Path) -> None:
    names = image_names(KEYS)
    assert names["plain_f4"] == "plain_f4" and len({n.casefold() for n in names.values()}) == 3
    assert names["raw/a/b_IMG_f2_8"].startswith("raw_a_b_IMG_f2_8-")
    assert image_names(KEYS) == names  # deterministic
    saved, report = tmp_path / "sv", tmp_path / "r"
    res, _ = _eval(shards, "--report", str(report), "--save-images", str(saved))
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in (saved / "input").iterdir())
    assert files == sorted(f"{n}.png" for n in names.values())  # one file per key: none overwrote another
    values = {int(read_image(saved / "input" / f"{names[k]}.png").mean()) for k in KEYS}
    assert values == {40, 100, 160}
    manifest = json.loads((saved / MANIFEST).read_text())
    assert manifest["files"] == sorted(f"input/{n}.png" for n in names.values())
    res, _ = _eval(shards, "--report", str(report), "--save-images", str(saved))  # its own images: replaced
    assert res.exit_code == 0, res.output
    from defocuskit.eval.saved import SAVED_LOCK
    from defocuskit.io import locks

    before = sorted((p.name, p.stat().st_mtime_ns) for p in (saved / "input").iterdir())
    with locks.hold(saved / SAVED_LOCK, "eval", "busy"):  # another evaluation saving there: stops at once, naming it
        res, out = _eval(shards, "--report", str(tmp_path / "other"), "--save-images", str(saved))
    assert res.exit_code == 2 and f"--save-images {saved}: another evaluation is saving into it (pid" in out, out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (saved / "input").iterdir()) == before
    assert not (tmp_path / "other" / "report.json").exists()

    user = tmp_path / "sv2"
    (user / "input").mkdir(parents=True)
    (user / "input" / "plain_f4.png").write_text("mine")
    res, out = _eval(shards, "--report", str(tmp_path / "r2"), "--save-images", str(user))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert f"{user / 'input' / 'plain_f4.png'}: exists and was not written by an earlier evaluation" in out
    assert (user / "input" / "plain_f4.png").read_text() == "mine"
    assert sorted(p.name for p in (user / "input").iterdir()) == ["plain_f4.png"]  # refused before any work
    assert not (tmp_path / "r2" / "report.json").exists()

    a_file = tmp_path / "images"
    a_file.write_text("mine")
    res, out = _eval(shards, "--report", str(tmp_path / "r3"), "--save-images", str(a_file))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert f"{a_file}: exists and is not a folder" in out and a_file.read_text() == "mine"


def test_saving_without_known_keys_still_never_replaces_a_users_file(tmp_path: Path) -> None:
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.evaluate import evaluate_samples

    flat = np.full((16, 16, 3), 90, np.uint8)
    samples = [{"key": k, "sharp": flat, "blur": flat, "coc": None, "meta": {"f_number": 4.0}} for k in KEYS]
    (tmp_path / "id").mkdir()
    (tmp_path / "id" / "plain_f4.png").write_text("mine")
    with pytest.raises(EvalError, match="plain_f4.png: exists and was not written"):
        evaluate_samples(samples, {"id": lambda b, s: b}, save_images=tmp_path, progress=False)
    assert (tmp_path / "id" / "plain_f4.png").read_text() == "mine"
    listed = json.loads((tmp_path / MANIFEST).read_text())["files"]  # the two saved before it: the run's own
    assert len(listed) == 2 and len(set(listed)) == 2 and "id/plain_f4.png" not in listed


def test_a_key_held_by_two_pairs_is_refused_before_one_output_saves_over_the_other(tmp_path: Path) -> None:
    """Two shards with a pair each under one key: both were scored and the second one's output silently replaced
    the first one's file (exit 0, one image fewer than the report's rows)."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.evaluate import evaluate_samples

    folder = tmp_path / "shards"
    folder.mkdir()
    for shard, grey in enumerate((40, 160)):
        with wds.TarWriter(str(folder / f"test-{shard:06d}.tar")) as sink:
            flat = np.full((24, 32, 3), grey, np.uint8)
            sink.write({"__key__": "same", **encode_members(flat, flat, None, {"source": "t", "f_number": 2.8})})
    saved, report = tmp_path / "sv", tmp_path / "r"
    res, out = _eval(folder, "--report", str(report), "--save-images", str(saved))
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert "sample key 'same' is held by two pairs of the split" in out
    assert not saved.exists() and not (report / "report.json").exists()  # before any work
    res, _ = _eval(folder, "--report", str(report))  # the report alone names each pair's rows: scored
    assert res.exit_code == 0, res.output
    # keys not known before scoring (remote shards): the second output is refused, the first one kept
    flat = np.full((16, 16, 3), 90, np.uint8)
    samples = [{"key": "same", "sharp": flat, "blur": flat + i, "coc": None, "meta": {"f_number": 4.0}} for i in (0, 9)]
    with pytest.raises(EvalError, match="sample key 'same' is held by two pairs"):
        evaluate_samples(samples, {"id": lambda b, s: b}, save_images=tmp_path / "sv2", progress=False)
    assert int(read_image(tmp_path / "sv2" / "id" / "same.png").mean()) == 90


def test_saved_images_of_keys_from_the_longest_file_names_fit_a_file_name(tmp_path: Path) -> None:
    from defocuskit.eval.evaluate import evaluate_samples

    long = ["pairs/" + "q" * 250, "pairs/" + "q" * 249 + "r", "raw/" + "é" * 125]  # photo names of 250 bytes
    names = image_names(long)
    assert len({n.casefold() for n in names.values()}) == 3
    assert all(len(f"{n}.png".encode()) <= 255 for n in names.values())
    flat = np.full((16, 16, 3), 90, np.uint8)
    samples = [{"key": k, "sharp": flat, "blur": flat, "coc": None, "meta": {"f_number": 4.0}} for k in long]
    evaluate_samples(samples, {"id": lambda b, s: b}, save_images=tmp_path, progress=False)
    assert len(list((tmp_path / "id").iterdir())) == 3
    assert len(json.loads((tmp_path / MANIFEST).read_text())["files"]) == 3


def test_images_of_a_killed_evaluation_stay_its_own(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.eval import saved
    from defocuskit.eval.config import EvalError

    folder = tmp_path / "saved"
    first = saved.SavedImages(folder, {"k/a": "k_a", "k/b": "k_b"})
    first.check(["run1"], ["k/a", "k/b"])
    first.save("run1", "k/a", np.zeros((4, 4, 3), np.uint8))
    real_write = saved.write_journalled

    def killed(path, data, listed, **kwargs):
        real_write(path, data, listed, **kwargs)
        raise KeyboardInterrupt  # written, and the run dies before it writes its list

    monkeypatch.setattr(saved, "write_journalled", killed)
    with pytest.raises(KeyboardInterrupt):
        first.save("run1", "k/b", np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setattr(saved, "write_journalled", real_write)
    assert not (folder / MANIFEST).exists() and (folder / "run1" / "k_b.png").is_file()
    (folder / "run1" / "mine.png").write_bytes(b"user")  # and a file of the user's beside them
    again = saved.SavedImages(folder, {"k/a": "k_a", "k/b": "k_b", "mine": "mine"})
    again.check(["run1"], ["k/a", "k/b"])  # the killed run's images are the rerun's to replace
    with pytest.raises(EvalError, match=r"mine\.png: exists and was not written by an earlier evaluation"):
        again.check(["run1"], ["mine"])
    again.save("run1", "k/b", np.ones((4, 4, 3), np.uint8))
    again.write_manifest()
    listed = json.loads((folder / MANIFEST).read_text())["files"]
    assert listed == ["run1/k_a.png", "run1/k_b.png"] and not list(folder.glob("*.journal"))
    assert (folder / "run1" / "mine.png").read_bytes() == b"user"
    (folder / "run1" / "k_a.png").write_bytes(b"retouched")  # the user's edit of a saved image: left alone
    with pytest.raises(EvalError, match=r"k_a\.png: changed since an evaluation saved it"):
        saved.SavedImages(folder, {"k/a": "k_a"}).check(["run1"], ["k/a"])
    assert (folder / "run1" / "k_a.png").read_bytes() == b"retouched"


def test_the_temporaries_of_a_killed_evaluation_are_removed_and_no_other(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.eval import saved
    from defocuskit.io import atomic

    folder = tmp_path / "saved"
    names = {"k/a": "k_a", "k/b": "k_b", "k/c": "k_c"}
    first = saved.SavedImages(folder, names)
    first.check(["run1"], list(names))
    leftovers: list[Path] = []

    def killed_mid_write(path, data, listed, **_):
        with atomic.atomic_path(path, partial=atomic.new_token()) as tmp:
            listed(tmp.name)
            leftovers.append(tmp)
            raise KeyboardInterrupt  # as kill -9 (the temporary is put back below: the block removes it)

    monkeypatch.setattr(saved, "write_journalled", killed_mid_write)
    for key in ("k/a", "k/b"):  # two runs killed while writing, say
        with pytest.raises(KeyboardInterrupt):
            saved.SavedImages(folder, names).save("run1", key, np.zeros((4, 4, 3), np.uint8))
    monkeypatch.undo()
    for p in leftovers:
        p.write_bytes(b"half an image")
    theirs = folder / "run1" / ".k_c.png.0badcafe.defocuskit-partial"
    theirs.write_bytes(b"user's")  # the user's file at the name a run will draw for k_c's temporary
    monkeypatch.setattr(atomic, "new_token", lambda: "0badcafe")
    again = saved.SavedImages(folder, names)
    again.check(["run1"], list(names))
    with pytest.raises(FileExistsError, match=r"\.k_c\.png\.0badcafe\.defocuskit-partial: in the way"):
        again.save("run1", "k/c", np.ones((4, 4, 3), np.uint8))
    monkeypatch.undo()
    again = saved.SavedImages(folder, names)  # the next run: the failed one listed nothing of the user's
    again.check(["run1"], list(names))
    again.save("run1", "k/a", np.ones((4, 4, 3), np.uint8))  # writing it again removes its temporary first
    assert not leftovers[0].exists() and leftovers[1].is_file()
    again.write_manifest()  # the end of the run: the temporary of the image it did not write again goes too
    assert not leftovers[1].exists() and theirs.read_bytes() == b"user's"
    assert json.loads((folder / MANIFEST).read_text())["files"] == ["run1/k_a.png"]
    assert sorted(p.name for p in (folder / "run1").iterdir()) == [theirs.name, "k_a.png"]


def test_a_file_put_where_a_killed_evaluation_had_not_yet_written_is_not_taken_for_its_image(tmp_path: Path,
                                                                                           monkeypatch) -> None:
    from defocuskit.eval import saved
    from defocuskit.eval.config import EvalError

    folder = tmp_path / "saved"
    first = saved.SavedImages(folder, {"k/a": "k_a"})
    first.check(["run1"], ["k/a"])

    def killed_before_write(path, data, listed, **_):
        listed(".k_a.png.00000000.defocuskit-partial")
        raise KeyboardInterrupt  # journalled, then killed before a byte is written

    monkeypatch.setattr(saved, "write_journalled", killed_before_write)
    with pytest.raises(KeyboardInterrupt):
        first.save("run1", "k/a", np.zeros((4, 4, 3), np.uint8))
    monkeypatch.undo()
    assert not (folder / "run1" / "k_a.png").exists()
    (folder / "run1" / "k_a.png").write_bytes(b"the user's")
    with pytest.raises(EvalError, match=r"k_a\.png: changed since an evaluation saved it"):
        saved.SavedImages(folder, {"k/a": "k_a"}).check(["run1"], ["k/a"])
    assert (folder / "run1" / "k_a.png").read_bytes() == b"the user's"


def test_a_folder_an_ingest_is_writing_or_rewrote_while_scored_is_not_reported(shards: Path, tmp_path: Path,
                                                                               monkeypatch) -> None:
    """An eval of a shard folder that an ingest re-plans mixes the two plans' shards (exit 0 before): refused while
    the ingest runs, naming it, and refused when the shards changed while they were scored."""
    import shutil

    import defocuskit.eval.evaluate as evaluate
    from defocuskit.data.folder import run_lock, shard_folder_state

    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    with run_lock(folder, "ingest", "plan-digest"):
        res, out = _eval(folder, "--report", str(tmp_path / "busy"))
    assert res.exit_code == 2 and f"{folder}: ingest is writing it now (pid" in out, out
    assert not (tmp_path / "busy" / "report.json").exists()
    calls = []

    def rewritten_midway(path):
        calls.append(path)
        if len(calls) == 2:  # what a re-plan does between the first read and the report
            (folder / "test-000000.tar").write_bytes((folder / "test-000000.tar").read_bytes() + b"\0" * 1024)
        return shard_folder_state(path)

    monkeypatch.setattr(evaluate, "shard_folder_state", rewritten_midway)
    res, out = _eval(folder, "--report", str(tmp_path / "mixed"))
    assert res.exit_code == 2 and "its shards changed while they were scored" in out and len(calls) == 2, out
    assert not (tmp_path / "mixed" / "report.json").exists()


def test_an_image_put_where_an_output_goes_while_it_is_saved_is_left_alone(tmp_path: Path, monkeypatch) -> None:
    """A file appearing at an output's name between the check and the write was replaced (os.replace)."""
    from defocuskit.eval import saved

    folder = tmp_path / "saved"
    images = saved.SavedImages(folder, {"k/a": "k_a"})
    images.check(["run1"], ["k/a"])
    real = saved.encode_image

    def user_writes_meanwhile(path, image):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"mine")
        return real(path, image)

    monkeypatch.setattr(saved, "encode_image", user_writes_meanwhile)
    from defocuskit.eval.config import EvalError

    with pytest.raises(EvalError, match=r"k_a\.png: put there while this evaluation ran; it is left as it is"):
        images.save("run1", "k/a", np.zeros((4, 4, 3), np.uint8))
    assert (folder / "run1" / "k_a.png").read_bytes() == b"mine"
