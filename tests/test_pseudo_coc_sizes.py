"""`defocuskit pseudo-coc` records each shard's size as ingest does (`records.tar_stamp`), so its folder's manifest
lists `bytes` and every reader checks it: before, a pseudo-coc shard cut at a member's header was read by `inspect`
as a valid shorter tar (its last sample without sharp.png, no error) and named by eval only as a sample lacking a
member, and a rerun kept the cut shard (it skipped any shard whose record and tar were there)."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
from test_jdrl import jdrl_model_file
from typer.testing import CliRunner

SHARD = "train-000000.tar"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(model file, input shards, pseudo-coc output) of 28 synthetic 32 px pairs through an untrained jdrl-tiny."""
    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    root = tmp_path_factory.mktemp("pseudo_sizes")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(root / "in"), workers=0, synthetic_size=32,
                                                             synthetic_f_numbers=(2.0,), split_by="train"),
               progress=False)
    model = jdrl_model_file(root / "jdrl.safetensors")
    write_pseudo_coc(model, root / "in", root / "coc")
    return model, root / "in", root / "coc"


def _cut(folder: Path, where: str) -> str:
    """Cut SHARD at its last member's header ("member") or its last sample's first one ("sample"); the line every
    reader gives for it."""
    path = folder / SHARD
    with tarfile.open(path) as tar:
        infos = tar.getmembers()
    last = infos[-1].name.split(".")[0]
    at = infos[-1].offset if where == "member" else next(i for i in infos if i.name.split(".")[0] == last).offset
    before = path.stat().st_size
    os.truncate(path, at)
    return (f"{path}: {at} bytes, but {folder / 'manifest.json'} records {before} for it: the shard was cut short or "
            "changed after it was written; run the command that wrote the folder again (it writes the shard anew)")


def test_the_manifest_lists_each_shard_size(written) -> None:
    from defocuskit.data.reader import read_manifest

    _, _, out = written
    (entry,) = read_manifest(out)["shards"]
    assert entry["name"] == SHARD and entry["bytes"] == (out / SHARD).stat().st_size


@pytest.mark.parametrize("where", ["member", "sample"])
def test_a_cut_pseudo_coc_shard_is_one_line_from_eval_and_inspect(written, tmp_path, where) -> None:
    from defocuskit.cli.app import app

    folder = tmp_path / "coc"
    shutil.copytree(written[2], folder)
    line = _cut(folder, where)
    for args in (["eval", "--shards", str(folder), "--split", "train", "--baseline", "input",
                  "--report", str(tmp_path / "report")],
                 ["inspect", str(folder), "--sheet", str(tmp_path / "sheet.png")]):
        result = CliRunner().invoke(app, args)
        errors = [x for x in result.output.splitlines() if x.startswith("error:")]
        assert result.exit_code in (1, 2) and errors == [f"error: {line}"], (args[0], result.output)
    assert not (tmp_path / "report").exists() and not (tmp_path / "sheet.png").exists()


def test_rerunning_pseudo_coc_rewrites_the_cut_shard(written, tmp_path) -> None:
    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data.reader import iter_samples

    model, shards_in, out = written
    folder = tmp_path / "coc"
    shutil.copytree(out, folder)
    _cut(folder, "member")
    manifest = write_pseudo_coc(model, shards_in, folder)
    assert (folder / SHARD).read_bytes() == (out / SHARD).read_bytes()
    assert len(list(iter_samples(folder))) == manifest["counts"]["samples"] == 28
