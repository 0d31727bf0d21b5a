"""Damaged shards: every command that reads them stops with one line naming the shard and the sample (issue 21)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import ShardError, iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.io.images import encode_png

REPO = Path(__file__).resolve().parents[1]
SHARD = "train-000000.tar"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dmg") / "good"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0,), split_by="train"),
               progress=False)
    return out


def _edit_first(path: Path, suffix: str, change) -> str:
    """Rewrite the first member ending in `suffix` of the tar at `path` (`change` giving None drops it); returns its
    sample key."""
    with tarfile.open(path) as src:
        items = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    key = None
    with tarfile.open(path, "w") as tar:
        for info, data in items:
            if key is None and info.name.endswith(suffix):
                data, key = change(data), info.name[: -len(suffix)]
                if data is None:
                    continue
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return key


def _set_json(**values: object) -> Callable[[Path], str]:
    return lambda p: _edit_first(p, ".json", lambda b: json.dumps({**json.loads(b), **values}).encode())


def _tiny_sharp(path: Path) -> str:
    """Replace the first sample's sharp.png by a 10 x 10 image (its blur.png stays 48 x 48); returns its key."""
    return _edit_first(path, ".sharp.png", lambda b: encode_png(np.zeros((10, 10, 3), np.uint8)))


DAMAGE = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:5000]), r"damaged shard: not a complete tar file"),
    "not a tar": (lambda p: p.write_bytes(b"not a tar " * 100), r"damaged shard: not a complete tar file"),
    "0 bytes": (lambda p: p.write_bytes(b""), r"damaged shard: an empty file \(0 bytes\)"),
    "json": (lambda p: _edit_first(p, ".json", lambda b: b"{oops"), r"sample .*: the json member is not JSON"),
    "f_number": (lambda p: _edit_first(p, ".json", lambda b: json.dumps({**json.loads(b), "f_number": "abc"}).encode()),
                 r"sample .*: json: f_number is 'abc', not a number"),
    "f_number 1000": (_set_json(f_number=1000.0), r"sample .*: json: f_number is 1000\.0, not an f-number lenses have "
                                                  r"\(f/0\.7 to f/64; -1 when unknown\)"),
    "f_number -5": (_set_json(f_number=-5.0), r"sample .*: json: f_number is -5\.0, not an f-number lenses have"),
    "ref_f_number 0": (_set_json(ref_f_number=0), r"sample .*: json: ref_f_number is 0, not an f-number lenses have"),
    "iso -3": (_set_json(iso=-3), r"sample .*: json: iso is -3, not a number >= 0 \(-1 when unknown\)"),
    "json list": (lambda p: _edit_first(p, ".json", lambda b: b"[1, 2]"),
                  r"sample .*: the json member is a list, not a JSON object"),
    "json missing": (lambda p: _edit_first(p, ".json", lambda b: None), r"sample .*: no json member"),
    "png": (lambda p: _edit_first(p, ".blur.png", lambda b: b[:100]),
            r"sample .*: cannot decode image bytes \(.*blur\.png\)"),
}


def _one_line_from_every_reader(folder: Path, where: Path, expected: str, tmp_path: Path) -> None:
    """The reader, eval and inspect each stop with one line naming `where`, and write no report."""
    with pytest.raises(ShardError, match=rf"^{where}: " + expected):
        list(iter_samples(folder))
    runner = CliRunner()
    for args in (["eval", "--shards", str(folder), "--split", "train", "--baseline", "input",
                  "--report", str(tmp_path / "report")],
                 ["inspect", str(folder), "--sheet", str(tmp_path / "sheet.png")]):
        result = runner.invoke(app, args)
        assert result.exit_code in (1, 2), (args[0], result.output)
        lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and str(where) in lines[0], (args[0], result.output)
        assert "Traceback" not in result.output and not (tmp_path / "report" / "report.json").exists()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_is_one_line_naming_it(good, tmp_path, damage):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    breaks, expected = DAMAGE[damage]
    breaks(folder / SHARD)
    _one_line_from_every_reader(folder, folder / SHARD, expected, tmp_path)


@pytest.mark.parametrize("workers", [0, 1])
def test_training_on_a_damaged_sample_stops_naming_it(good, tmp_path, workers):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    key = _edit_first(folder / SHARD, ".json", lambda b: b"{oops")
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", "nafnet-tiny", f"data.train={folder}",
                           f"output_dir={tmp_path / 'run'}", "train.max_steps=40", f"data.num_workers={workers}"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: {folder / SHARD}: sample {key}: the json member is not JSON (Expecting property name " \
                   "enclosed in double quotes at character 1)", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_the_unknown_f_number_still_reads_as_unknown(good, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    key = _set_json(f_number=-1.0, ref_f_number=-1)(folder / SHARD)
    sample = next(s for s in iter_samples(folder) if s["key"] == key)
    assert sample["meta"]["f_number"] is None and sample["meta"]["ref_f_number"] is None


def test_inspect_names_the_sample_whose_images_differ_in_size(good, tmp_path):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    key = _tiny_sharp(folder / SHARD)
    result = CliRunner().invoke(app, ["inspect", str(folder), "--sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert lines == [f"error: {folder / SHARD}: sample {key}: members differ in size (width x height): blur 48x48, "
                     "sharp 10x10"], result.output


@pytest.mark.parametrize("damage", ["sizes", "f_number 1000", "json list"])
def test_training_names_the_sample_whose_members_or_metadata_are_wrong(good, tmp_path, damage):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    if damage == "sizes":
        key, expected = _tiny_sharp(folder / SHARD), "members differ in size (width x height): blur 48x48, sharp 10x10"
    else:
        key = DAMAGE[damage][0](folder / SHARD)
        expected = {"f_number 1000": "json: f_number is 1000.0, not an f-number lenses have (f/0.7 to f/64; -1 when "
                                     "unknown)",
                    "json list": "the json member is a list, not a JSON object"}[damage]
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", "nafnet-tiny", f"data.train={folder}",
                           f"output_dir={tmp_path / 'run'}", "train.max_steps=40", "data.num_workers=0"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == f"error: {folder / SHARD}: sample {key}: {expected}", \
        proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def _manifest(**changes: Callable[[dict], object]) -> Callable[[Path], None]:
    """Rewrite manifest.json of a shard folder: each key set to change(manifest) (a key set to None is removed)."""
    def edit(folder: Path) -> None:
        m = json.loads((folder / "manifest.json").read_text())
        for key, change in changes.items():
            m[key] = change(m)
        (folder / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if v is not None}))
    return edit


MANIFEST_DAMAGE = {  # a manifest that disagrees with the tars, or that is not what ingest writes
    "listed twice": (_manifest(shards=lambda m: m["shards"] + m["shards"][:1]),
                     rf"shards\[1\]: {SHARD} is listed twice"),
    "split": (_manifest(shards=lambda m: [{**m["shards"][0], "split": "test"}]),
              rf"shards\[0\]: {SHARD} is listed as split 'test', not 'train'"),
    "format 99": (_manifest(format=lambda m: 99), r"format 99: this defocuskit reads shard formats 1 and 2"),
    "shards text": (_manifest(shards=lambda m: SHARD), rf"'shards' is '{SHARD}', not a list of shards"),
    "no shards": (_manifest(shards=lambda m: None), r"'shards' is None, not a list of shards"),
    "name number": (_manifest(shards=lambda m: [{**m["shards"][0], "name": 5}]), r"shards\[0\] names 5, not a shard"),
    "name outside": (_manifest(shards=lambda m: [{**m["shards"][0], "name": f"../good/{SHARD}"}]),
                     rf"shards\[0\] names '\.\./good/{SHARD}', not a shard file of this folder"),
    "counts list": (_manifest(counts=lambda m: []), r"'counts' is not \{samples, by_split"),
    "complete text": (_manifest(complete=lambda m: "false"), r"'complete' is 'false', not true or false"),
    "not an object": (lambda f: (f / "manifest.json").write_text("[1]"), r"not a JSON object but a list"),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_a_manifest_that_disagrees_with_the_tars_is_one_line_naming_it(good, tmp_path, damage):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    breaks, expected = MANIFEST_DAMAGE[damage]
    breaks(folder)
    where = folder / "manifest.json"
    _one_line_from_every_reader(folder, where, expected, tmp_path)


def test_a_tar_the_manifest_does_not_list_is_neither_read_nor_refused(good, tmp_path):
    """A tar of the user's beside the shards (ingest leaves `test-000099.tar` alone and names it): a reader reads the
    shards the manifest lists, as it did, and does not stop on the user's file."""
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    keys = [s["key"] for s in iter_samples(folder)]
    (folder / "test-000099.tar").write_bytes(b"the user's")
    assert [s["key"] for s in iter_samples(folder)] == keys


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "directory"])
def test_a_member_that_is_a_link_or_a_folder_is_one_line_not_a_sharp_only_sample(good, tmp_path, kind):
    """A sample's blur.png given as a link (to /etc/passwd, say) or a directory was skipped, so the pair read as a
    sharp-only sample and eval scored fewer pairs, exit 0: now one line naming the shard and the member."""
    import tarfile

    from defocuskit.data.tar_index import index_shard

    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    with tarfile.open(good / SHARD) as src, tarfile.open(folder / SHARD, "w") as dst:
        replaced = None
        for info in src:
            if replaced is None and info.name.endswith(".blur.png"):
                replaced = info.name
                link = tarfile.TarInfo(info.name)
                types = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "directory": tarfile.DIRTYPE}
                link.type = types[kind]
                link.linkname = "/etc/passwd" if kind != "directory" else ""
                dst.addfile(link)
                continue
            dst.addfile(info, src.extractfile(info))
    said = {"symlink": "a symbolic link", "hardlink": "a hard link", "directory": "a directory"}[kind]
    expected = rf"^{folder / SHARD}: member '{re.escape(replaced)}' is {said}: a shard holds"
    with pytest.raises(ShardError, match=expected):
        list(iter_samples(folder))
    with pytest.raises(ShardError, match=expected):
        index_shard(str(folder / SHARD))


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo"])
def test_a_shard_that_is_not_a_file_is_one_line_not_a_hang(good, tmp_path, kind):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    (folder / SHARD).unlink()
    os.symlink("/dev/zero", folder / SHARD) if kind == "link to /dev/zero" else os.mkfifo(folder / SHARD)
    for args in (["eval", "--shards", str(folder), "--split", "train", "--baseline", "input",
                  "--report", str(tmp_path / "report")],
                 ["inspect", str(folder), "--sheet", str(tmp_path / "sheet.png")]):
        proc = subprocess.run([sys.executable, "-m", "defocuskit", *args], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)  # was: reading forever
        assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {folder / SHARD}: not a tar file but a "
                                                               "device, FIFO or socket"), proc.stderr[-3000:]
