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
    """An ingested folder whose manifest gives no shard sizes (as one written before they were recorded), so that
    a tar rewritten with a damaged member is read up to it (with sizes, its size is refused first:
    test_shard_sizes)."""
    out = tmp_path_factory.mktemp("dmg") / "good"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0,), split_by="train"),
               progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["shards"]:
        del entry["bytes"]
    (out / "manifest.json").write_text(json.dumps(manifest))
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


def _rewrite(path: Path, edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> str:
    """Rewrite the tar at `path` as `edit` gives its (member name, bytes) back; returns the first sample's key."""
    with tarfile.open(path) as src:
        items = [(m.name, src.extractfile(m).read()) for m in src.getmembers()]
    with tarfile.open(path, "w") as tar:
        for name, data in edit(items):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return items[0][0].split(".", 1)[0]


def _after_first_json(extra: Callable[[str, bytes], tuple[str, bytes]]):
    def edit(items: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        at = next(i for i, (name, _) in enumerate(items) if name.endswith(".json")) + 1
        return items[:at] + [extra(*items[at - 1])] + items[at:]
    return edit


SAMPLE_DAMAGE = {  # (edit of the tar, what the line says after "SHARD: sample KEY: "; {key} is the first sample's)
    "written twice": (lambda items: items + [(n, d) for n, d in items if n.split(".")[0] == items[0][0].split(".")[0]],
                      "written twice (a second run of its members starts at member '{key}.blur.png'); a shard holds "
                      "each sample once"),
    "json twice": (_after_first_json(lambda name, data: (name, data)),
                   "two json members (its metadata), '{key}.json' and '{key}.json'; a sample holds each member once"),
    "json and JSON": (_after_first_json(lambda name, data: (name[:-4] + "JSON", b'{"f_number": 2.0}')),
                      "two json members (its metadata), '{key}.json' and '{key}.JSON'"),
}


@pytest.mark.parametrize("damage", sorted(SAMPLE_DAMAGE))
def test_a_sample_written_twice_or_with_two_json_members_is_one_line_naming_it(good, tmp_path, damage):
    """A sample whose members come in two runs of one shard was read (and scored) twice; a second json member (or
    `k.JSON`, WebDataset's `json` too) silently replaced the first: now every reader names the shard and the key."""
    from defocuskit.data.tar_index import index_shard

    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    edit, said = SAMPLE_DAMAGE[damage]
    key = _rewrite(folder / SHARD, edit)
    expected = re.escape(f"sample {key}: " + said.format(key=key))
    with pytest.raises(ShardError, match=rf"^{re.escape(str(folder / SHARD))}: {expected}"):
        index_shard(str(folder / SHARD))  # the training stream's and eval's index
    _one_line_from_every_reader(folder, folder / SHARD, expected, tmp_path)
    _inspect_one_sample_refuses(folder, folder / SHARD, tmp_path)


def _inspect_one_sample_refuses(folder: Path, where: Path, tmp_path: Path) -> None:
    """`inspect --n 1` reads 16 samples, not the whole shard (nor the damage at its end), yet stops naming `where`."""
    result = CliRunner().invoke(app, ["inspect", str(folder), "--n", "1", "--sheet", str(tmp_path / "one.png")])
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1 and str(where) in lines[0], result.output
    assert not (tmp_path / "one.png").exists()


def _listed_samples(change: Callable[[int], int]) -> Callable[[Path], int]:
    """Set the manifest's sample count of SHARD to change(count); returns the count its tar holds."""
    def edit(folder: Path) -> int:
        m = json.loads((folder / "manifest.json").read_text())
        held = m["shards"][0]["samples"]
        m["shards"][0]["samples"] = change(held)
        (folder / "manifest.json").write_text(json.dumps(m))
        return held
    return edit


@pytest.mark.parametrize("listed", ["fewer", "more"])
def test_a_manifest_count_that_is_not_the_shards_is_one_line_naming_both(good, tmp_path, listed):
    """manifest.json listing 2 samples fewer (or more) than the shard holds was read without complaint."""
    from defocuskit.data.tar_index import index_shard

    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    held = _listed_samples(lambda n: n - 2 if listed == "fewer" else n + 2)(folder)
    says = held - 2 if listed == "fewer" else held + 2
    expected = re.escape(f"lists {SHARD} with {says} samples, but {folder / SHARD} holds {held}: ")
    with pytest.raises(ShardError, match=rf"^{re.escape(str(folder / 'manifest.json'))}: {expected}"):
        index_shard(str(folder / SHARD))
    with pytest.raises(ShardError, match=expected):  # a glob names the listed shard too
        list(iter_samples(str(folder / "train-*.tar")))
    _one_line_from_every_reader(folder, folder / "manifest.json", expected, tmp_path)
    _inspect_one_sample_refuses(folder, folder / "manifest.json", tmp_path)


def test_a_tar_the_manifest_does_not_list_is_not_counted(good, tmp_path):
    """Only the shards the manifest lists are counted: a tar of the user's beside them, named by a glob, is read."""
    from defocuskit.data.tar_index import index_shard

    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    _rewrite(folder / SHARD, lambda items: [(n, d) for n, d in items if n.split(".")[0] != items[-1][0].split(".")[0]])
    shutil.move(folder / SHARD, folder / "train-000099.tar")
    shutil.copy(good / SHARD, folder / SHARD)
    held = json.loads((folder / "manifest.json").read_text())["shards"][0]["samples"]
    assert len(index_shard(str(folder / "train-000099.tar"))) == held - 1
    assert len(list(iter_samples(str(folder / "train-*.tar")))) == 2 * held - 1


@pytest.mark.parametrize("damage", ["written twice", "manifest"])
def test_training_on_a_sample_written_twice_or_a_miscounted_shard_stops_naming_it(good, tmp_path, damage):
    folder = tmp_path / "shards"
    shutil.copytree(good, folder)
    if damage == "manifest":
        held = _listed_samples(lambda n: n - 1)(folder)
        expected = f"error: {folder / 'manifest.json'}: lists {SHARD} with {held - 1} samples, but {folder / SHARD} " \
                   f"holds {held}: "
    else:
        key = _rewrite(folder / SHARD, SAMPLE_DAMAGE[damage][0])
        expected = f"error: {folder / SHARD}: sample {key}: written twice "
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", "nafnet-tiny", f"data.train={folder}",
                           f"output_dir={tmp_path / 'run'}", "train.max_steps=4", "data.num_workers=0"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(expected), proc.stderr[-3000:]


def test_inspect_of_a_file_or_a_missing_path_says_so_not_no_manifest(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for path, said in ((tmp_path / "notes.txt", "a file, not a folder"), (tmp_path / "nope", "does not exist")):
        result = CliRunner().invoke(app, ["inspect", str(path)])
        line = result.output.strip()  # it said "notes.txt/manifest.json: no manifest"
        assert result.exit_code != 0 and line == f"error: {path}: {said} (expected a shard folder written by " \
            "`defocuskit ingest`)", line
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "nope").exists()
