"""Ingest orchestration: rejects, --strict, interruption and resume, --part, patches, the CLI.

This module is also the fake source the tests ingest (NAME / list_tasks / load below): every
`*.png` in the root is a scene's sharp shot, its blurred shot is a Gaussian blur of it.
"""

from __future__ import annotations

import json
import os
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
from defocuskit.data.ingest import IngestError, cut_patches, postprocess, resize_max_side, run_ingest, sharpness
from defocuskit.data.sample import IngestOptions, Rejected, Sample, Task, empty_meta
from defocuskit.data.shards import iter_samples, read_manifest, shard_urls
from defocuskit.images import read_image, write_image

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
        time.sleep(0.3)
    sharp = read_image(task.files["sharp"])
    blur = cv2.GaussianBlur(sharp, (5, 5), 1.5)
    f_number = 2.8 if int(task.scene[1:]) % 2 == 0 else 4.0
    meta = empty_meta(source=NAME, split=task.split, scene=task.scene, f_number=f_number, ref_f_number=16.0,
                      blur_type="defocus", origin={"sharp": Path(task.files["sharp"]).name})
    return [Sample(key=task.key, sharp=sharp, blur=blur, meta=meta)]


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
    return IngestOptions(out=str(out), workers=kw.pop("workers", 1), shard_size=kw.pop("shard_size", 3), **kw)


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


def test_killed_worker_pool_run_resumes(tmp_path, fake):
    root = make_inputs(tmp_path / "in", n_train=8, n_test=0)
    (root / "slow").write_text("")
    out = tmp_path / "out"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from defocuskit.data import sources; sources.SOURCES['fake'] = 'test_ingest'; "
            f"from pathlib import Path; from defocuskit.data.ingest import run_ingest; "
            f"from defocuskit.data.sample import IngestOptions; "
            f"run_ingest({{'fake': Path({str(root)!r})}}, IngestOptions(out={str(out)!r}, workers=2, shard_size=2), progress=False)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.time() + 60
    while not (out / ".records" / "train-000000.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest subprocess ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: main process and its workers
    proc.wait()
    assert len(list(out.glob("*.tar"))) < 4  # stopped part-way
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


def test_cli_ingest_and_inspect(tmp_path, fake, monkeypatch):
    from defocuskit.cli import app

    root = make_inputs(tmp_path / "in", corrupt=True)
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--out", str(tmp_path / "x")]).exit_code != 0  # no source
    # the CLI has no option for the fake source: stand it in for --dpdd
    monkeypatch.setitem(sources_table.SOURCES, "dpdd", __name__)
    result = runner.invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "out"), "--workers", "1",
                                 "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert "rejects: 1 new, 1 total" in result.output and "f/2.8" in result.output
    strict = runner.invoke(app, ["ingest", "--dpdd", str(root), "--out", str(tmp_path / "s"), "--workers", "1",
                                 "--strict"])
    assert strict.exit_code == 1 and "s99.png" in strict.output
    result = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--n", "3"])
    assert result.exit_code == 0, result.output
    sheet = read_image(tmp_path / "out" / "contact_sheet.png")
    assert sheet.shape[0] > 192 and sheet.shape[1] > 2 * 192
    assert runner.invoke(app, ["inspect", str(tmp_path / "nowhere")]).exit_code == 1


def test_real_synthetic_source_if_present(tmp_path):
    pytest.importorskip("defocuskit.data.sources.synthetic")
    o = IngestOptions(out=str(tmp_path / "out"), workers=1, shard_size=50, synthetic_size=32,
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
    manifest = run_ingest({"dpdd": root}, IngestOptions(out=str(tmp_path / "out"), workers=1), progress=False)
    assert manifest["counts"]["by_split"] == {"test": 2, "train": 3}
    assert manifest["counts"]["by_f_number"] == {"4.0": 5} and manifest["rejects"] == 1
    sample = next(iter_samples(tmp_path / "out", "train"))
    assert sample["sharp"].dtype == np.uint16 and sample["meta"]["ref_f_number"] == 22.0
