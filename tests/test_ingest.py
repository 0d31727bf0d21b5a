"""Ingest orchestration: rejects, --strict, interruption and resume, --part, patches, the CLI.

This module is also the fake source the tests ingest (NAME / list_tasks / load below): every
`*.png` in the root is a scene's sharp shot, its blurred shot is a Gaussian blur of it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.data import sources as sources_table
from defocuskit.data.ingest import run_ingest
from defocuskit.data.metadata import empty_meta
from defocuskit.data.postprocess import cut_patches, postprocess, resize_max_side, sharpness
from defocuskit.data.reader import ShardError, iter_samples, read_manifest, shard_urls
from defocuskit.data.sample import IngestError, IngestOptions, Rejected, Sample, Task
from defocuskit.data.sources import DatasetSource
from defocuskit.io.images import read_image, write_image

NAME = "fake"


def list_tasks(root: Path, opts: IngestOptions):
    for path in sorted(Path(root).glob("*.png")):
        split = "test" if path.stem.startswith("t") else "train"
        yield Task(source=NAME, split=split, scene=path.stem, key=f"fake/{split}/{path.stem}",
                   files={"sharp": str(path)})
    if (Path(root) / "orphan.txt").exists():
        yield Rejected(NAME, str(Path(root) / "orphan.txt"), "no partner shot")


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    root = Path(task.files["sharp"]).parent
    marker = root / "interrupt_at"
    if marker.exists() and marker.read_text() == task.key:
        raise KeyboardInterrupt
    if (root / "slow").exists():
        time.sleep(float((root / "slow").read_text() or 0.3))
    _crash(root, task.key)
    sharp = read_image(task.files["sharp"])
    blur = cv2.GaussianBlur(sharp, (5, 5), 1.5)
    f_number = 2.8 if int(task.scene[1:]) % 2 == 0 else 4.0
    meta = empty_meta(source=NAME, split=task.split, scene=task.scene, f_number=f_number, ref_f_number=16.0,
                      blur_type="defocus", origin=[Path(task.files["sharp"]).name])
    return [Sample(key=task.key, sharp=sharp, blur=blur, meta=meta)]


SOURCE = DatasetSource(NAME, list_tasks, load)  # this module stands in for a source module


def _crash(root: Path, key: str) -> None:
    """A worker process (never the test's own) dies as a decoder's crash kills it: at the task named by the file
    `crash_at` every time, at the one named by `crash_once_at` the first time only."""
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return
    once, flag = root / "crash_once_at", root / "crashed_once"
    if ((root / "crash_at").exists() and (root / "crash_at").read_text() == key) or (
            once.exists() and once.read_text() == key and not flag.exists()):
        flag.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def make_inputs(root: Path, n_train: int = 7, n_test: int = 2, size: int = 32, corrupt: bool = False) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"s{i:02d}" for i in range(n_train)] + [f"t{i:02d}" for i in range(n_test)]:
        dtype = np.uint16 if name.endswith("1") else np.uint8
        top = 65535 if dtype == np.uint16 else 255
        write_image(root / f"{name}.png", rng.integers(0, top, (size, size, 3)).astype(dtype))
    if corrupt:
        (root / "s99.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(sources_table.SOURCES, NAME, __name__)
    return {NAME: None}


def opts(out: Path, **kw) -> IngestOptions:
    return IngestOptions(out=str(out), workers=kw.pop("workers", 0), shard_size=kw.pop("shard_size", 3), **kw)


def keys_of(folder: Path) -> list[str]:
    return [s["key"] for s in iter_samples(folder)]


def test_bad_input_is_recorded_and_the_run_goes_on(tmp_path, fake):
    root = make_inputs(tmp_path / "in", corrupt=True)
    (root / "orphan.txt").write_text("x")
    manifest = run_ingest({NAME: root}, opts(tmp_path / "out"), progress=False)
    lines = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    files = {Path(x["file"]).name: x for x in lines}
    assert set(files) == {"s99.png", "orphan.txt"}
    assert "not a readable image" in files["s99.png"]["reason"]
    assert files["orphan.txt"]["reason"] == "no partner shot"
    assert manifest["rejects"] == 2 and manifest["run"]["rejects_new"] == 2
    assert manifest["counts"]["samples"] == 9
    assert manifest["counts"]["by_split"] == {"test": 2, "train": 7}
    assert manifest["counts"]["by_f_number"] == {"2.8": 5, "4.0": 4}
    assert sum(s["samples"] for s in manifest["shards"]) == 9 == len(keys_of(tmp_path / "out"))
    assert manifest["complete"] is True


def test_strict_fails_naming_file_and_reason(tmp_path, fake):
    root = make_inputs(tmp_path / "in", corrupt=True)
    with pytest.raises(IngestError, match=r"s99\.png: not a readable image"):
        run_ingest({NAME: root}, opts(tmp_path / "out", strict=True), progress=False)
    out = tmp_path / "out"
    assert not list(out.glob(".*.partial")) and not list(out.glob(".*.spool"))
    # the shards before the bad input are complete and listed
    assert read_manifest(out)["counts"]["samples"] == len(keys_of(out)) > 0


def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, fake):
    root = make_inputs(tmp_path / "in")
    reference = run_ingest({NAME: root}, opts(tmp_path / "ref"), progress=False)
    (root / "interrupt_at").write_text("fake/train/s04")  # the 2nd task of the 2nd train shard
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_ingest({NAME: root}, opts(out), progress=False)
    assert not list(out.glob(".*.partial")) and not list(out.glob(".*.spool"))
    done = sorted(p.name for p in out.glob("*.tar"))
    assert done == ["test-000000.tar", "train-000000.tar"]
    assert read_manifest(out)["complete"] is False
    (root / "interrupt_at").unlink()
    resumed = run_ingest({NAME: root}, opts(out), progress=False)
    assert resumed["run"]["shards_skipped"] == 2
    keys = keys_of(out)
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(keys_of(tmp_path / "ref"))
    assert resumed["counts"] == reference["counts"] and resumed["shards"] == reference["shards"]


def test_a_rerun_writes_anew_a_shard_cut_short_since(tmp_path, fake):
    """A reader names a damaged shard and says to run the command that wrote the folder again; the rerun took the
    truncated tar for done (its record's fingerprint matched), so it stayed damaged."""
    root = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out), progress=False)
    expected = sorted(keys_of(out))
    tar = out / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:2000])  # within the first member's data
    with pytest.raises(ShardError, match="train-000001.tar: 2000 bytes, but .*manifest.json records [0-9]+ for it: "
                                         ".*run the command that wrote the folder again"):
        keys_of(out)
    again = run_ingest({NAME: root}, opts(out), progress=False)
    assert again["run"]["shards_skipped"] == len(again["shards"]) - 1
    assert sorted(keys_of(out)) == expected


def _ingest_command(root: Path, out: Path, workers: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of a child process that runs run_ingest of the fake source (shard size 2) and prints the
    run's numbers as JSON."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from defocuskit.data import sources; sources.SOURCES['fake'] = 'test_ingest'; "
            f"from pathlib import Path; from defocuskit.data.ingest import run_ingest; "
            f"from defocuskit.data.sample import IngestOptions; "
            f"m = run_ingest({{'fake': Path({str(root)!r})}}, IngestOptions(out={str(out)!r}, workers={workers}, "
            f"shard_size=2), progress=False); print(json.dumps(m['run']))")
    return [sys.executable, "-c", code], dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))


def _ingest_in_subprocess(root: Path, out: Path, workers: int) -> subprocess.CompletedProcess:
    """_ingest_command run to its end (so a pool that waits for ever fails the test by its timeout instead of
    hanging the suite)."""
    argv, env = _ingest_command(root, out, workers)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def _session(sid: int) -> list[int]:
    """The pids of the running processes (not zombies) of session `sid`, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_killed_ingest_leaves_no_worker_process_behind(tmp_path):
    root = make_inputs(tmp_path / "in", n_train=8, n_test=0)
    (root / "slow").write_text("5")
    argv, env = _ingest_command(root, tmp_path / "out", 2)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.time() + 60
    while len(_session(proc.pid)) < 4 and time.time() < deadline:  # main, fork server, 2 workers (+ tracker)
        time.sleep(0.1)
    assert len(_session(proc.pid)) >= 4, "the workers did not start"
    os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as the out-of-memory killer or `kill -9 PID` does
    proc.wait()
    deadline = time.time() + 30  # under a loaded CI machine the fork server took over 10 s once; before, for ever
    while _session(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    left = _session(proc.pid)
    for pid in left:  # not to leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, "before, the fork server and its idle workers stayed for ever"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_input_whose_worker_dies_is_rejected_and_the_rest_ingested(tmp_path, workers):
    root = make_inputs(tmp_path / "in", n_train=6, n_test=0)
    (root / "crash_at").write_text("fake/train/s02")  # its worker is killed every time it reads it (a segfault)
    out = tmp_path / "out"
    done = _ingest_in_subprocess(root, out, workers)  # before, the pool lost the task and waited for ever
    assert done.returncode == 0, done.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["key"]) for r in rejects] == [("s02.png", "fake/train/s02")]
    assert "the process reading it died" in rejects[0]["reason"]
    assert sorted(keys_of(out)) == [f"fake/train/s{i:02d}" for i in range(6) if i != 2]
    assert read_manifest(out)["complete"] is True


def test_an_input_whose_worker_died_once_is_read_again(tmp_path):
    root = make_inputs(tmp_path / "in", n_train=6, n_test=0)
    (root / "crash_once_at").write_text("fake/train/s03")  # killed once (the out-of-memory killer), then fine
    out = tmp_path / "out"
    done = _ingest_in_subprocess(root, out, 2)
    assert done.returncode == 0, done.stderr
    assert (root / "crashed_once").exists()  # the worker did die
    assert not (out / "rejects.jsonl").read_text().strip()
    assert sorted(keys_of(out)) == [f"fake/train/s{i:02d}" for i in range(6)]


def test_killed_worker_pool_run_resumes(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=8, n_test=0)
    (root / "slow").write_text("0.8")
    out = tmp_path / "out"
    argv, env = _ingest_command(root, out, 2)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.time() + 60

    def listed() -> list[str]:
        try:
            return [s["name"] for s in read_manifest(out)["shards"]]
        except (OSError, ValueError, KeyError):
            return []

    while not listed() and time.time() < deadline and proc.poll() is None:  # finished shards are listed as it runs
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest subprocess ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: main process and its workers
    proc.wait()
    assert len(list(out.glob("*.tar"))) < 4  # stopped part-way
    killed = read_manifest(out)
    assert killed["complete"] is False and listed()  # what it finished is listed, so readers read it
    assert len(keys_of(out)) == killed["counts"]["samples"] > 0  # and every listed sample is there to read
    (root / "slow").unlink()
    resumed = run_ingest({NAME: root}, opts(out, shard_size=2), progress=False)
    assert resumed["run"]["shards_skipped"] >= 1
    assert not list(out.glob(".*.partial")) and not list(out.glob(".*.spool"))
    keys = keys_of(out)
    assert sorted(keys) == [f"fake/train/s{i:02d}" for i in range(8)]


def test_parts_merge_to_the_single_run(tmp_path, fake):
    root = make_inputs(tmp_path / "in", corrupt=True)
    single = run_ingest({NAME: root}, opts(tmp_path / "one"), progress=False)
    out = tmp_path / "parts"
    first = run_ingest({NAME: root}, opts(out, part=(0, 2)), progress=False)
    assert first["complete"] is False and 0 < first["counts"]["samples"] < single["counts"]["samples"]
    merged = run_ingest({NAME: root}, opts(out, part=(1, 2), workers=2), progress=False)
    assert merged["complete"] is True
    assert sorted(keys_of(out)) == sorted(keys_of(tmp_path / "one"))
    for k in ("shards", "counts", "rejects"):
        assert merged[k] == single[k], k
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 1


def test_patches_and_sharpness_filter(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=2, n_test=0)
    flat = np.full((32, 32, 3), 128, np.uint8)
    flat[:16] = np.random.default_rng(1).integers(0, 255, (16, 32, 3))  # top half textured, bottom half flat
    write_image(root / "s02.png", flat)
    manifest = run_ingest({NAME: root}, opts(tmp_path / "out", patch=16, stride=16, min_sharpness=0.01),
                          progress=False)
    keys = keys_of(tmp_path / "out")
    assert manifest["run"]["dropped_flat"] == 2  # the two flat bottom patches of s02
    assert len(keys) == 3 * 4 - 2
    assert "fake/train/s00/p16_0" in keys and "fake/train/s02/p16_0" not in keys
    sample = next(iter_samples(tmp_path / "out"))
    assert sample["sharp"].shape == (16, 16, 3) and sample["meta"]["height"] == 16
    # patches are for training: the test split stays whole (it was cut, and its flat parts dropped, before)
    root = make_inputs(tmp_path / "in2", n_train=1, n_test=1)
    run_ingest({NAME: root}, opts(tmp_path / "out2", patch=16, stride=16, min_sharpness=0.01), progress=False)
    shapes = {s["key"]: s["sharp"].shape for s in iter_samples(tmp_path / "out2", split="test")}
    assert shapes == {"fake/test/t00": (32, 32, 3)}
    assert {s["sharp"].shape for s in iter_samples(tmp_path / "out2", split="train")} == {(16, 16, 3)}


def test_postprocess_functions():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 65535, (40, 60, 3)).astype(np.uint16)
    coc = np.full((40, 60), 6.0, np.float32)
    s = Sample("k/a", sharp=sharp, blur=sharp.copy(), meta=empty_meta(), coc=coc)
    small = resize_max_side(s, 30)
    assert small.sharp.shape == (20, 30, 3) and small.sharp.dtype == np.uint16
    assert np.allclose(small.coc, 3.0)
    out, dropped = postprocess(s, IngestOptions(bit_depth="8", patch=20, stride=10))
    assert dropped == 0 and len(out) == 3 * 5 and out[0].sharp.dtype == np.uint8
    assert [p.key for p in out[:2]] == ["k/a/p0_0", "k/a/p0_10"]
    assert sharpness(np.zeros((8, 8, 3), np.uint8)) == 0.0 < sharpness(sharp)
    assert len(cut_patches(s, 40)) == 1
    assert [p.sharp.shape for p in postprocess(s, IngestOptions(patch=20), split="test")[0]] == [(40, 60, 3)]


def test_cli_ingest_and_inspect(tmp_path, fake, monkeypatch):
    from defocuskit.cli.app import app

    root = make_inputs(tmp_path / "in", corrupt=True)
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--out", str(tmp_path / "x")]).exit_code != 0  # no source
    # the CLI has no option for the fake source: stand it in for --dpdd
    monkeypatch.setitem(sources_table.SOURCES, "dpdd", __name__)
    result = runner.invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "out"), "--workers", "0",
                                 "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert "rejects: 1 new, 1 total" in result.output and "f/2.8" in result.output
    strict = runner.invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "s"), "--workers", "0",
                                 "--strict"])
    assert strict.exit_code == 1 and "s99.png" in strict.output
    result = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--n", "3"])
    assert result.exit_code == 0, result.output
    sheet = read_image(tmp_path / "out" / "contact_sheet.png")
    assert sheet.shape[0] > 192 and sheet.shape[1] > 2 * 192
    assert runner.invoke(app, ["inspect", str(tmp_path / "out"), "--n", "2"]).exit_code == 0  # its own sheet: replaced
    assert read_image(tmp_path / "out" / "contact_sheet.png").shape != sheet.shape
    photo = tmp_path / "photo.png"  # a user's file where the sheet would go: refused in one line, left as it was
    cv2.imwrite(str(photo), np.full((8, 8, 3), 99, np.uint8))
    before = photo.read_bytes()
    for target, said in ((photo, "was not written by defocuskit inspect"), (tmp_path / "in", "is a folder"),
                         (tmp_path / "sheets", "the file is a PNG; give a name ending in .png"),  # `sheets/` too
                         (tmp_path / "sheet.jpg", "the file is a PNG; give a name ending in .png")):
        refused = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--sheet", str(target)])
        assert refused.exit_code == 1 and said in refused.output and "Traceback" not in refused.output, refused.output
    assert photo.read_bytes() == before and not (tmp_path / "sheets").exists() and not (tmp_path / "sheet.jpg").exists()
    deep = tmp_path / "sheets" / "new" / "s.png"  # a folder that does not exist yet is made
    assert runner.invoke(app, ["inspect", str(tmp_path / "out"), "--sheet", str(deep)]).exit_code == 0
    assert deep.is_file()
    assert runner.invoke(app, ["inspect", str(tmp_path / "nowhere")]).exit_code == 1
    for n in ("0", "100000"):  # after the manifest's table, exit 1 (0); every sample decoded for one sheet (100000)
        refused = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--n", n, "--sheet", str(tmp_path / "n.png")])
        assert refused.exit_code == 2 and refused.output == f"error: --n {n}: samples on the contact sheet, 1 to 64\n"
    assert not (tmp_path / "n.png").exists()
    (tmp_path / "out" / "photos-2023.tar").write_bytes(b"holiday")  # named like a shard: kept, and said so
    again = runner.invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "out"), "--workers", "0",
                                "--shard-size", "4"])
    assert again.exit_code == 0 and "kept, not written by defocuskit" in again.output and "photos-2023.tar" in \
        again.output, again.output
    assert (tmp_path / "out" / "photos-2023.tar").read_bytes() == b"holiday"


def test_real_synthetic_source_if_present(tmp_path):
    pytest.importorskip("defocuskit.data.sources.synthetic")
    o = IngestOptions(out=str(tmp_path / "out"), workers=0, shard_size=50, synthetic_size=32,
                      synthetic_f_numbers=(2.0,))
    manifest = run_ingest({"synthetic": Path("builtin")}, o, progress=False)
    assert manifest["counts"]["samples"] == len(keys_of(tmp_path / "out")) > 0
    assert "2.0" in manifest["counts"]["by_f_number"]
    import datasets
    import webdataset as wds

    urls = shard_urls(tmp_path / "out", "train")
    n = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", cache_dir=str(tmp_path / "hf"))
    assert n == len(ds) == manifest["counts"]["by_split"]["train"]


def test_real_dpdd_source_if_present(tmp_path):
    pytest.importorskip("defocuskit.data.sources.dpdd")
    rng = np.random.default_rng(3)
    root = tmp_path / "dpdd"
    for folder, n in (("train_c", 3), ("test_c", 2)):
        for role, first in (("source", 100), ("target", 101)):
            for i in range(n):  # consecutive frame numbers: the names of a pair differ
                write_image(root / folder / role / f"IMG_{first + 2 * i:04d}.png",
                            rng.integers(0, 65535, (24, 36, 3)).astype(np.uint16))
    (root / "train_c" / "source" / "IMG_0199.png").write_bytes(b"\x89PNG broken")
    (root / "train_c" / "target" / "IMG_0200.png").write_bytes(b"\x89PNG broken")
    manifest = run_ingest({"dpdd": root}, IngestOptions(out=str(tmp_path / "out"), workers=0), progress=False)
    assert manifest["counts"]["by_split"] == {"test": 2, "train": 3}
    assert manifest["counts"]["by_f_number"] == {"4.0": 5} and manifest["rejects"] == 1
    sample = next(iter_samples(tmp_path / "out", "train"))
    assert sample["sharp"].dtype == np.uint16 and sample["meta"]["ref_f_number"] == 22.0


# ------------------------------------------------------------------- no sample is an error, not a success


def _rejects_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def test_all_rejected_inputs_fail_naming_the_cause(tmp_path, fake):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("s00", "s01", "t00"):
        (root / f"{name}.png").write_bytes(b"this is not a png")
    out = tmp_path / "out"
    with pytest.raises(IngestError, match=r"no sample written: 3 inputs, all rejected \(see .*rejects\.jsonl\); "
                                          r"most common reason \(3 of 3\): not a readable image"):
        run_ingest({NAME: root}, opts(out), progress=False)
    manifest = read_manifest(out)  # written, so that the user can read the rejects
    assert manifest["complete"] is False and manifest["error"].startswith("no sample written")
    assert manifest["counts"]["samples"] == 0 and len(_rejects_of(out)) == 3
    with pytest.raises(IngestError, match="no sample written"):  # and so does a rerun (all shards done)
        run_ingest({NAME: root}, opts(out), progress=False)


def test_all_rejected_and_empty_sources_exit_non_zero(tmp_path, fake, monkeypatch):
    from defocuskit.cli.app import app

    root = tmp_path / "in"
    root.mkdir()
    (root / "s00.png").write_bytes(b"broken")
    monkeypatch.setitem(sources_table.SOURCES, "dpdd", __name__)  # the fake source stands in for --dpdd
    result = CliRunner().invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "a"), "--workers", "0"])
    assert result.exit_code == 1 and "no sample written: 1 inputs, all rejected" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["ingest", "--dpdd", str(empty), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and f"no inputs found under --dpdd {empty}" in result.output
    assert read_manifest(tmp_path / "b")["complete"] is False


def test_empty_raw_dir_fails(tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    with pytest.raises(IngestError, match=r"no sample written: no inputs found under --raw-dir .*photos"):
        run_ingest({"raw": empty}, IngestOptions(out=str(tmp_path / "out"), workers=0), progress=False)


def test_a_part_with_nothing_to_do_succeeds_and_the_last_part_judges(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=2, n_test=0)  # one group: part 2/2 has nothing to do
    out = tmp_path / "out"
    idle = run_ingest({NAME: root}, opts(out, part=(1, 2)), progress=False)
    assert idle["complete"] is False and idle["run"]["shards_written"] == 0
    done = run_ingest({NAME: root}, opts(out, part=(0, 2)), progress=False)
    assert done["complete"] is True and done["counts"]["samples"] == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(4):
        (bad / f"s{i:02d}.png").write_bytes(b"broken")
    out = tmp_path / "out-bad"
    run_ingest({NAME: bad}, opts(out, part=(0, 2)), progress=False)  # the other part may still have samples
    with pytest.raises(IngestError, match="no sample written: 4 inputs, all rejected"):
        run_ingest({NAME: bad}, opts(out, part=(1, 2)), progress=False)


# ---------------------------------------------------------------------------- reruns true to content


def test_a_rejected_file_that_is_replaced_is_read_again(tmp_path, fake):
    root = make_inputs(tmp_path / "in", corrupt=True)
    out = tmp_path / "out"
    first = run_ingest({NAME: root}, opts(out), progress=False)
    assert [Path(r["file"]).name for r in _rejects_of(out)] == ["s99.png"]
    write_image(root / "s99.png", np.random.default_rng(9).integers(0, 255, (32, 32, 3)).astype(np.uint8))
    again = run_ingest({NAME: root}, opts(out), progress=False)
    assert again["run"]["shards_written"] == 1 and again["run"]["shards_skipped"] == len(first["shards"]) - 1
    assert _rejects_of(out) == [] and again["rejects"] == 0
    assert "fake/train/s99" in keys_of(out) and again["counts"]["samples"] == first["counts"]["samples"] + 1
    os.utime(root / "s00.png")  # a touch re-reads its group (size, mtime_ns and content are in the fingerprint)
    touched = run_ingest({NAME: root}, opts(out), progress=False)
    assert touched["run"]["shards_written"] == 1 and touched["counts"] == again["counts"]


def test_same_size_and_mtime_but_other_content_changes_the_fingerprint(tmp_path):
    from defocuskit.data.plan import plan_groups
    from defocuskit.data.stamps import stamp_files

    path = tmp_path / "a.png"
    path.write_bytes(b"a" * (3 << 20))  # larger than the two hashed MiB: the change is in the last one
    before = path.stat().st_mtime_ns
    task = Task(NAME, "train", "a", "fake/train/a", {"sharp": str(path)})
    fp = plan_groups([task], 1, IngestOptions(), stamp_files([str(path)]).of)[0].fingerprint
    path.write_bytes(b"a" * ((3 << 20) - 1) + b"b")
    os.utime(path, ns=(before, before))
    assert path.stat().st_mtime_ns == before
    assert plan_groups([task], 1, IngestOptions(), stamp_files([str(path)]).of)[0].fingerprint != fp


def test_a_listing_reject_that_is_fixed_disappears(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=2, n_test=0)
    (root / "orphan.txt").write_text("x")
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out), progress=False)
    assert [r["reason"] for r in _rejects_of(out)] == ["no partner shot"]
    (root / "orphan.txt").unlink()
    again = run_ingest({NAME: root}, opts(out), progress=False)
    assert _rejects_of(out) == [] and again["rejects"] == 0 and again["run"]["shards_skipped"] == 1


def test_unreadable_file_is_a_reject_naming_it_not_a_crash(tmp_path, fake, monkeypatch):
    from defocuskit.data import stamps

    root = make_inputs(tmp_path / "in")
    locked = str(root / "s03.png")
    real_hash = stamps.content_hash

    def deny(path, size):
        if path == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_hash(path, size)

    monkeypatch.setattr(stamps, "content_hash", deny)
    out = tmp_path / "out"
    manifest = run_ingest({NAME: root}, opts(out), progress=False)
    assert [(r["file"], r["reason"]) for r in _rejects_of(out)] == [(locked, "unreadable file: permission denied")]
    assert manifest["counts"]["samples"] == 8 and "fake/train/s03" not in keys_of(out)
    with pytest.raises(IngestError, match=r"s03\.png: unreadable file: permission denied"):
        run_ingest({NAME: root}, opts(tmp_path / "strict", strict=True), progress=False)
    monkeypatch.setattr(stamps, "content_hash", real_hash)  # readable again: its group is read again
    again = run_ingest({NAME: root}, opts(out), progress=False)
    assert again["run"]["shards_written"] == 1 and _rejects_of(out) == [] and "fake/train/s03" in keys_of(out)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions enforced (not root)")
def test_chmod_000_file_is_a_reject(tmp_path, fake):
    root = make_inputs(tmp_path / "in")
    (root / "s03.png").chmod(0)
    try:
        manifest = run_ingest({NAME: root}, opts(tmp_path / "out"), progress=False)
    finally:
        (root / "s03.png").chmod(0o644)
    assert [(Path(r["file"]).name, r["reason"]) for r in _rejects_of(tmp_path / "out")] == [
        ("s03.png", "unreadable file: permission denied")]
    assert manifest["counts"]["samples"] == 8


# ----------------------------------------------------------------- other options into the same folder


def _tars(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*-*.tar"))


def _assert_manifest_is_the_one_list(out: Path, manifest: dict) -> None:
    assert _tars(out) == sorted(s["name"] for s in manifest["shards"])
    keys = [s["key"] for url in sorted(out.glob("train-*.tar")) for s in iter_samples(url)]
    assert len(keys) == len(set(keys)) == manifest["counts"]["by_split"]["train"]
    records = sorted(p.stem for p in (out / ".records").iterdir())
    assert records == sorted([s["name"][:-4] for s in manifest["shards"]] + ["_listing", "_owned", "_temporaries"])


def test_rerun_with_other_content_options_replaces_the_shards(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=7, n_test=2)
    out = tmp_path / "out"
    small = run_ingest({NAME: root}, opts(out, shard_size=2), progress=False)
    assert _tars(out) == ["test-000000.tar"] + [f"train-{i:06d}.tar" for i in range(4)]
    big = run_ingest({NAME: root}, opts(out, shard_size=3), progress=False)  # fewer shards: 2 and 3 are stale
    assert big["run"]["shards_skipped"] == 0 and big["run"]["stale_removed"] == 2
    _assert_manifest_is_the_one_list(out, big)
    assert big["counts"] == small["counts"] and big["complete"] is True
    resized = run_ingest({NAME: root}, opts(out, shard_size=3, max_side=16), progress=False)
    _assert_manifest_is_the_one_list(out, resized)
    assert next(iter_samples(out))["sharp"].shape == (16, 16, 3)
    again = run_ingest({NAME: root}, opts(out, shard_size=3, max_side=16), progress=False)
    assert again["run"]["shards_skipped"] == 4 and again["run"]["stale_removed"] == 0


def test_fewer_inputs_leave_no_stale_shard(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=7, n_test=2)
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out), progress=False)
    for name in ("s04", "s05", "s06", "t00", "t01"):
        (root / f"{name}.png").unlink()
    manifest = run_ingest({NAME: root}, opts(out), progress=False)
    assert _tars(out) == ["train-000000.tar", "train-000001.tar"]
    assert sorted(keys_of(out)) == [f"fake/train/s{i:02d}" for i in range(4)]
    assert sorted(p.stem for p in (out / ".records").iterdir()) == ["_listing", "_owned", "_temporaries",
                                                                      "train-000000", "train-000001"]
    assert manifest["counts"]["samples"] == 4


def test_leftovers_of_killed_runs_are_removed_by_the_next_successful_run(tmp_path, fake):
    from defocuskit.data.folder import listed_temporaries, make_temporaries
    from defocuskit.data.shards import AtomicShard

    root = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out), progress=False)
    killed = AtomicShard(out, "train-000001")  # what a run killed while writing shard 1 and the manifest left
    stray = AtomicShard(out, "train-000009")
    make_temporaries(out, [out / ".manifest.json.a1b2c3d4.defocuskit-partial"])
    leftovers = [out / ".records" / ".train-000001.json.k2j3h4_x.tmp", out / ".records" / "._listing.json.0a9z8y7x.tmp",
                 killed.partial, killed.spool_path, stray.partial, out / ".manifest.json.a1b2c3d4.defocuskit-partial"]
    # the same kinds of name that no run listed (the user's, or an older version's): never removed
    users = [out / ".train-000001.tar.partial", out / ".train-000001.tar.spool", out / ".manifest.json.a1b2.tmp",
             out / ".train-000001.0123abcd.tar.partial"]
    for path in leftovers[:2] + users:
        path.write_bytes(b"x")
    manifest = run_ingest({NAME: root}, opts(out), progress=False)
    assert manifest["run"]["shards_skipped"] == 4
    assert not [p for p in leftovers if p.exists()]
    assert not list((out / ".records").glob("*.tmp")) and listed_temporaries(out) == set()
    assert all(p.read_bytes() == b"x" for p in users)


def test_a_part_keeps_what_another_part_may_be_writing(tmp_path, fake):
    root = make_inputs(tmp_path / "in")  # 4 groups: test-0 (0), train-0 (1), train-1 (2), train-2 (3)
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out, part=(1, 2)), progress=False)  # groups 1 and 3
    from defocuskit.data.shards import AtomicShard

    theirs, stale = AtomicShard(out, "test-000000").partial, AtomicShard(out, "train-000000").spool_path
    (out / "train-000007.tar").write_bytes(b"x")
    again = run_ingest({NAME: root}, opts(out, part=(1, 2)), progress=False)
    assert theirs.exists() and not stale.exists()
    # a tar named like a shard that no record, manifest or ledger lists is the user's: kept and named
    assert (out / "train-000007.tar").read_bytes() == b"x"
    assert again["run"]["foreign_kept"] == [str(out / "train-000007.tar")]
    merged = run_ingest({NAME: root}, opts(out, part=(0, 2)), progress=False)
    assert merged["complete"] is True and not theirs.exists()
    (out / "train-000007.tar").unlink()  # the user moves their file away
    _assert_manifest_is_the_one_list(out, merged)


def test_replaced_real_photo_is_read_again(tmp_path, real_fixture_root):
    from conftest import copy_resized

    root = copy_resized(real_fixture_root / "VABD", tmp_path / "VABD", width=192)
    good = (root / "train" / "2_8" / "0002.JPG").read_bytes()
    (root / "train" / "2_8" / "0002.JPG").write_bytes(good[: len(good) // 3])  # a truncated copy
    o = IngestOptions(out=str(tmp_path / "out"), workers=0, shard_size=4)
    first = run_ingest({"vabd": root}, o, progress=False)
    assert [Path(r["file"]).name for r in _rejects_of(tmp_path / "out")] == ["0002.JPG"]
    (root / "train" / "2_8" / "0002.JPG").write_bytes(good)
    again = run_ingest({"vabd": root}, o, progress=False)
    assert again["run"]["shards_written"] == 1 and again["run"]["shards_skipped"] == 2
    assert _rejects_of(tmp_path / "out") == [] and again["counts"]["samples"] == first["counts"]["samples"] + 1


def test_no_sample_message_names_the_cause(tmp_path):
    from defocuskit.data.records import no_sample_message

    src, log = {"raw": tmp_path / "photos"}, tmp_path / "out" / "rejects.jsonl"
    root_reject = [{"file": str(tmp_path / "photos"), "reason": "no RAW, TIFF, PNG or JPEG files found"}]
    assert no_sample_message(src, 0, root_reject, 0, log) == (
        f"no sample written: no inputs found under --raw-dir {tmp_path / 'photos'} "
        "(no RAW, TIFF, PNG or JPEG files found)")
    rejects = [{"file": f"/p/{i}.jpg", "reason": "bad" if i else "other"} for i in range(3)]
    assert no_sample_message(src, 0, rejects, 0, log).startswith(
        f"no sample written: all 3 inputs under --raw-dir {tmp_path / 'photos'} rejected while listing")
    assert no_sample_message(src, 5, rejects, 0, log) == (
        f"no sample written: 5 inputs, all rejected (see {log}); most common reason (2 of 3): bad (e.g. /p/1.jpg)")
    assert no_sample_message(src, 2, [], 8, log, min_sharpness=0.02) == (
        "no sample written: all 8 patches of the 2 inputs are flatter than --min-sharpness 0.02")
    # reasons that differ only by their file's name or a number are one reason: counted together
    rejects = [{"file": "/v/1_8", "reason": "folder not used (3 images): ..."},
               {"file": "/v/2_8", "reason": "folder not used (3 images): ..."},
               {"file": "/v/8", "reason": "folder not used (3 images): ..."}]
    rejects += [{"file": f"/v/depth/000{i}.png", "reason": f"000{i}.png: a colour depth image in no known colormap"}
                for i in (1, 1, 2, 2, 3, 3)]
    assert no_sample_message(src, 6, rejects, 0, log).endswith(
        "most common reason (6 of 9): 0001.png: a colour depth image in no known colormap (e.g. /v/depth/0001.png)")
    scores = [{"file": f"/p/{i}.jpg", "reason": f"registration score {s} < 0.8"} for i, s in enumerate((0.7, 0.3))]
    assert "most common reason (2 of 3): registration score 0.7 < 0.8" in no_sample_message(
        src, 3, [*scores, {"file": "/p/x.jpg", "reason": "unreadable"}], 0, log)


# ------------------------------------------------------------------ ownership of the output folder (issue 21)


def test_files_of_the_user_are_never_removed_or_written_over(tmp_path, fake):
    root = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    mine = {"photos-2023.tar": b"holiday", "test-000099.tar": b"mine", "holiday.tar": b"h", "notes.txt": b"n"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    manifest = run_ingest({NAME: root}, opts(out), progress=False)
    assert manifest["complete"] is True
    assert {name: (out / name).read_bytes() for name in mine} == mine
    assert sorted(manifest["run"]["foreign_kept"]) == [str(out / "photos-2023.tar"), str(out / "test-000099.tar")]
    # a shard of the plan would replace a tar of the user's: refused before any work, naming it
    other = tmp_path / "out2"
    other.mkdir()
    (other / "train-000000.tar").write_bytes(b"the user's")
    with pytest.raises(IngestError, match=r"train-000000\.tar: exists and was not written here"):
        run_ingest({NAME: root}, opts(other), progress=False)
    assert (other / "train-000000.tar").read_bytes() == b"the user's"
    assert not (other / "manifest.json").exists()


@pytest.mark.parametrize("name, data", [
    ("train-000000.json", b"my notes"),  # where a shard's record goes: would be written over
    ("_owned.json", b"my list"),  # the ledger's name
    ("photos-2023.json", b'{"name": "photos-2023"}'),  # a record without a fingerprint: would claim photos-2023.tar
    ("notes.txt", b"n"),
    (".stray.tmp", b"x"),  # not the name of a record's temporary: the user's
])
def test_a_file_of_the_users_in_the_records_folder_is_refused_before_any_work(name, data, tmp_path, fake):
    root = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    (out / ".records").mkdir(parents=True)
    (out / ".records" / name).write_bytes(data)
    (out / "photos-2023.tar").write_bytes(b"holiday")
    with pytest.raises(IngestError, match=rf"\.records/{re.escape(name)}: was not written here by defocuskit"):
        run_ingest({NAME: root}, opts(out), progress=False)
    assert (out / ".records" / name).read_bytes() == data and (out / "photos-2023.tar").read_bytes() == b"holiday"
    assert sorted(p.name for p in (out / ".records").iterdir()) == [name]
    assert not list(out.glob("*-0*.tar")) and not (out / "manifest.json").exists()


def test_a_records_path_that_is_a_file_is_refused(tmp_path, fake):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".records").write_text("mine")
    with pytest.raises(IngestError, match=r"\.records: is not the records folder defocuskit makes"):
        run_ingest({NAME: make_inputs(tmp_path / "in")}, opts(out), progress=False)
    assert (out / ".records").read_text() == "mine"


@pytest.mark.parametrize("target", ["dangling", "a file of the user's"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_alone(target, tmp_path, fake):
    """`--out/.lock` a link: opening it for the lock would make (or hold) the link's target outside the folder."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    if target != "dangling":
        elsewhere.write_text("mine")
    (out / ".lock").symlink_to(elsewhere)
    with pytest.raises(IngestError, match=rf"{re.escape(str(out / '.lock'))}: a link where the folder's own lock"):
        run_ingest({NAME: make_inputs(tmp_path / "in")}, opts(out), progress=False)
    assert (elsewhere.read_text() if elsewhere.exists() else None) == (None if target == "dangling" else "mine")
    assert not list(out.glob("*.tar")) and not (out / "manifest.json").exists()


def test_a_folder_holding_another_dataset_is_refused_unless_overwrite(tmp_path, fake):
    first, second = make_inputs(tmp_path / "a", n_train=4, n_test=0), make_inputs(tmp_path / "b", n_train=5, n_test=0)
    out = tmp_path / "out"
    run_ingest({NAME: first}, opts(out), progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    with pytest.raises(IngestError, match=r"holds another dataset .*--overwrite"):
        run_ingest({NAME: second}, opts(out), progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    (out / "backup-2024.tar").write_bytes(b"backup")
    replaced = run_ingest({NAME: second}, opts(out, overwrite=True), progress=False)
    assert replaced["counts"]["samples"] == 5 and (out / "backup-2024.tar").read_bytes() == b"backup"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "someone else"}')
    with pytest.raises(IngestError, match=r"manifest\.json: is not a defocuskit manifest"):
        run_ingest({NAME: first}, opts(foreign, overwrite=True), progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "rejects.jsonl").write_text("my own notes\n")  # the user's file, no manifest or records beside it
    with pytest.raises(IngestError, match=r"rejects\.jsonl: exists and was not written here by defocuskit"):
        run_ingest({NAME: first}, opts(mine, overwrite=True), progress=False)
    assert (mine / "rejects.jsonl").read_text() == "my own notes\n"
    assert [n for n in os.listdir(mine) if n[0] != "."] == ["rejects.jsonl"]  # nothing written but the locks


def test_a_killed_replan_never_leaves_a_complete_manifest_beside_new_tars(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=7, n_test=2)
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out, shard_size=2), progress=False)
    (root / "interrupt_at").write_text("fake/train/s04")  # the re-plan dies after its first train shard
    with pytest.raises(KeyboardInterrupt):
        run_ingest({NAME: root}, opts(out, shard_size=4), progress=False)
    manifest = read_manifest(out)
    assert manifest["complete"] is False
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == manifest["counts"]["samples"]
    (root / "interrupt_at").unlink()
    done = run_ingest({NAME: root}, opts(out, shard_size=4), progress=False)
    assert done["complete"] is True and sorted(keys_of(out)) == sorted(
        [f"fake/train/s{i:02d}" for i in range(7)] + ["fake/test/t00", "fake/test/t01"])


def test_two_runs_of_different_plans_cannot_share_a_folder(tmp_path, fake):
    from defocuskit.data import folder

    root = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    script = ("import sys, time; from defocuskit.data import folder\n"
              "with folder.run_lock(sys.argv[1], 'ingest', 'another-plan'):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IngestError, match=rf"another ingest is writing this folder \(pid {holder.pid} "):
            run_ingest({NAME: root}, opts(out), progress=False)
        with pytest.raises(folder.FolderError, match="different inputs or options"):
            with folder.run_lock(out, "ingest", "my-plan", part=(1, 2)):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert run_ingest({NAME: root}, opts(out), progress=False)["complete"] is True  # the lock died with it


def test_an_unfinished_ingest_is_named_by_every_reader(tmp_path, fake, capsys):
    from defocuskit.cli.app import app
    from defocuskit.data import manifest_checks, reader

    root = make_inputs(tmp_path / "in", n_train=4, n_test=0)
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out, shard_size=2), progress=False)
    reader.shard_urls(out)
    assert "has not finished" not in capsys.readouterr().err  # a finished ingest: nothing said
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(manifest, complete=False)))  # as an interrupted run leaves it
    urls = reader.shard_urls(out, "train")
    reader.shard_urls(out)
    err = capsys.readouterr().err
    assert len(urls) == 2 and err.count("has not finished") == 1 and str(out) in err  # once per folder and process
    manifest_checks._WARNED.clear()
    result = CliRunner().invoke(app, ["inspect", str(out), "--n", "1"])
    assert result.exit_code == 0 and "run the same ingest command again" in result.stderr


@pytest.mark.parametrize("option, value, needle", [
    ("--synthetic-f-numbers", "0.1,2", "--synthetic-f-numbers 0.1: not an f-number a lens has"),
    ("--synthetic-f-numbers", "2,99", "--synthetic-f-numbers 99: not an f-number a lens has"),
    ("--synthetic-f-numbers", "nan", "--synthetic-f-numbers nan: not an f-number a lens has"),
    ("--render-f-numbers", "0.2,2", "--render-f-numbers 0.2: not an f-number a lens has"),
    ("--render-f-numbers", "2,22", "--render-f-numbers 22: not wider than the reference's f/16"),
    ("--render-f-numbers", "2,4,2.0", "--render-f-numbers 2,4,2: f/2 given twice"),  # a reject line per scene, exit 0
    ("--synthetic-f-numbers", "2,2", "--synthetic-f-numbers 2,2: f/2 given twice"),
    ("--render-colormap", "bogus", "--render-colormap bogus: unknown colormap 'bogus'"),  # ignored for grey maps
    ("--test-fraction", "1.5", "--test-fraction 1.5: a share of the scenes, from 0 to 1"),
    ("--test-fraction", "-0.5", "--test-fraction -0.5: a share of the scenes"),
    ("--test-fraction", "nan", "--test-fraction nan: a share of the scenes"),
    ("--max-side", "-10", "--max-side -10: at least 8 pixels"),  # wrote 1x1 images before
    ("--max-side", "1", "--max-side 1: at least 8 pixels"),
    ("--patch", "-5", "--patch -5: at least 8 pixels (an image or patch that small holds no blur to learn; 0: no"),
    ("--stride", "-3", "--stride -3: at least 8 pixels"),
    ("--synthetic-size", "0", "--synthetic-size 0: the scenes' longer side, 16 to 4096"),  # a traceback before
    ("--synthetic-size", "100000", "--synthetic-size 100000: the scenes' longer side"),  # asked for 120 GB
    ("--synthetic-misalign", "nan", "--synthetic-misalign nan: 0 to 32 pixels"),  # ignored without a word
    ("--synthetic-misalign", "inf", "--synthetic-misalign inf: 0 to 32 pixels"),  # every pair rejected, after work
    ("--min-align-score", "nan", "--min-align-score nan: a registration score, from 0 to 1"),  # accepted every pair
    ("--min-sharpness", "nan", "--min-sharpness nan: a mean gradient >= 0"),  # every train sample dropped, exit 0
    ("--scene-gap", "-1", "--scene-gap -1: a positive number of seconds"),
    ("--render-focus", "banana", "--render-focus banana: auto, mask, sample or a depth value"),
    ("--render-coc-scale", "1e9", "--render-coc-scale 1e+09: CoC pixels at f/1"),  # petabyte kernels, per input
    ("--render-metric-scale", "0", "--render-metric-scale 0: a positive number of metres"),
    ("--workers", "100000", "--workers 100000: at most"),  # one process per input was started
])
def test_impossible_numbers_on_the_command_line_are_refused_naming_the_option(option, value, needle, tmp_path):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    out = tmp_path / "out"
    source = ["--synthetic", "builtin", "--synthetic-size", "32"]
    if option.startswith("--render-"):  # a render option's value, given with the source that reads it
        for sub in ("image", "depth"):
            (tmp_path / "photos" / sub).mkdir(parents=True)
        source = ["--render", str(tmp_path / "photos")]
    result = CliRunner().invoke(app, ["ingest", *source, "--workers", "0", "--out", str(out), option, value])
    assert result.exit_code != 0 and needle in result.output, result.output
    assert "Traceback" not in result.output and not list(out.glob("*.tar")) and not (out / "manifest.json").exists()


def test_an_unfinished_pseudo_coc_folder_is_named_as_pseudo_cocs(tmp_path, capsys):
    """A killed pseudo-coc leaves complete: false; the warning names the command to run again, not ingest."""
    from defocuskit.data.manifest_checks import warn_incomplete

    manifest = {"options": {"pseudo_coc": {"checkpoint": "jdrl.safetensors"}}, "shards": [{}], "expected_shards": 3}
    warn_incomplete(tmp_path / "pc", manifest)
    err = capsys.readouterr().err
    assert "its pseudo-coc has not finished" in err and "run the same pseudo-coc command again" in err, err
    assert "ingest" not in err and "only the 1 of 3 planned shards" in err
