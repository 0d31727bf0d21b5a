"""A shard whose size is not the one its manifest records: cut short at a member's header it is a valid, shorter tar,
read before as a sample without sharp.png (or as fewer samples, silently, by training); now every reader of the
folder stops with one line naming the shard, both sizes and what to do, before any sample is read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import ShardError, iter_samples, read_manifest, shard_urls
from defocuskit.data.sample import IngestOptions

REPO = Path(__file__).resolve().parents[1]
SHARD = "train-000000.tar"
OPTIONS = {"workers": 0, "synthetic_size": 32, "synthetic_f_numbers": (2.0,), "split_by": "train"}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sizes") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), **OPTIONS), progress=False)
    return out


def _cut(folder: Path, where: str) -> tuple[int, int]:
    """Cut SHARD at the header of its last sample's sharp.png ("member": that sample reads as one without it) or of
    its last sample's first member ("sample": one sample fewer); returns (its size before, after)."""
    path = folder / SHARD
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
    last = infos[-1].name.split(".")[0]
    first_of_last = next(i for i in infos if i.name.split(".")[0] == last)
    at = infos[-1].offset if where == "member" else first_of_last.offset
    assert infos[-1].name.endswith(".sharp.png")
    before = path.stat().st_size
    os.truncate(path, at)
    return before, at


def _line(folder: Path, before: int, after: int) -> str:
    return (f"{folder / SHARD}: {after} bytes, but {folder / 'manifest.json'} records {before} for it: the shard was "
            "cut short or changed after it was written; run the command that wrote the folder again (it writes the "
            "shard anew)")


@pytest.mark.parametrize("where", ["member", "sample"])
def test_a_shard_cut_at_a_member_header_is_one_line_from_every_reader(ingested, tmp_path, where):
    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    assert read_manifest(folder)["shards"][0]["bytes"] == (folder / SHARD).stat().st_size
    line = _line(folder, *_cut(folder, where))
    from defocuskit.data.tar_index import index_shard

    for read in (lambda: shard_urls(folder), lambda: list(iter_samples(str(folder / "train-*.tar"))),
                 lambda: index_shard(str(folder / SHARD))):
        with pytest.raises(ShardError) as caught:
            read()
        assert str(caught.value) == line
    runner = CliRunner()
    for args in (["eval", "--shards", str(folder), "--split", "train", "--baseline", "input",
                  "--report", str(tmp_path / "report")],
                 ["inspect", str(folder), "--sheet", str(tmp_path / "sheet.png")]):
        result = runner.invoke(app, args)
        errors = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert result.exit_code in (1, 2) and errors == [f"error: {line}"], (args[0], result.output)
    assert not (tmp_path / "report").exists() and not (tmp_path / "sheet.png").exists()


def test_training_on_a_cut_shard_stops_before_its_first_step(ingested, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    line = _line(folder, *_cut(folder, "member"))
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", "nafnet-tiny", f"data.train={folder}",
                           f"output_dir={tmp_path / 'run'}", "train.max_steps=2", "data.num_workers=0"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [f"error: {line}"], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_hf_decode_names_a_cut_shard(ingested, tmp_path):
    """`datasets` reads the cut tar as a shorter one (the last sample without sharp.png); hf_decode of any of its
    rows is the line."""
    datasets = pytest.importorskip("datasets")
    from defocuskit.data import hf_decode, hf_features

    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    line = _line(folder, *_cut(folder, "member"))
    ds = datasets.load_dataset("webdataset", data_files={"train": str(folder / "train-*.tar")}, split="train",
                               features=hf_features(), cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ShardError) as caught:
        hf_decode(ds[0])
    assert str(caught.value) == line


def test_rerunning_the_ingest_rewrites_the_cut_shard(ingested, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    _cut(folder, "member")
    manifest = run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(folder), **OPTIONS), progress=False)
    assert manifest["run"]["shards_written"] == 1
    assert (folder / SHARD).read_bytes() == (ingested / SHARD).read_bytes()
    assert len(list(iter_samples(folder))) == manifest["counts"]["samples"]


def test_a_folder_whose_manifest_gives_no_sizes_is_read_as_before(ingested, tmp_path):
    """Older folders (and folders written by hand) have no sizes: the cut sample is then named by what it lacks."""
    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["shards"][0]["bytes"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _cut(folder, "member")
    with pytest.raises(ShardError, match=r"sample .*: no sharp\.png member"):
        list(iter_samples(folder))


def test_a_manifest_size_that_is_not_a_count_is_refused(ingested, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(ingested, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["shards"][0]["bytes"] = "big"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=rf"shards\[0\]: {SHARD} is listed as 'big' bytes, not a size"):
        read_manifest(folder)
