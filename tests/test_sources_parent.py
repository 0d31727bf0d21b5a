"""`--dpdd`, `--realblur`, `--ded`, `--vabd`, `--ebb`, `--sdd` and `--cuhk-blur` given the PARENT folder of their
dataset (a download folder holding RealBlur/, DED/, DPDD/, VABD/, ...): read as the one dataset folder inside it (said
in one line), or refused naming the folders to give where it holds several. Before, RealBlur, DED, VABD, EBB and CUHK
refused any parent, DPDD took only one named dd_dp_dataset_png and SDD only one named SDD/. `--realdof` still refuses a
parent: a DPDD split folder has its layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.sample import IngestOptions, Rejected, Task
from defocuskit.data.sources import cuhk_blur, ded, dpdd, ebb, option_of, realblur, realdof, sdd, vabd
from defocuskit.data.sources.layout import LayoutError, check_layout, read_inside
from defocuskit.io.images import write_image

OPTS = IngestOptions(split_by="train", cuhk_white_is="blurred")
J = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"


def _img(seed: int, depth: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65535 if depth == 16 else 255, (24, 32, 3), dtype=np.uint16 if depth == 16 else np.uint8)


def _realblur(root: Path) -> None:
    for k in (1, 2):
        write_image(root / J / "scene001" / "gt" / f"gt_{k}.png", _img(k))
        write_image(root / J / "scene001" / "blur" / f"blur_{k}.png", _img(10 + k))
    (root / "RealBlur_J_train_list.txt").write_text(
        "".join(f"{J}/scene001/gt/gt_{k}.png {J}/scene001/blur/blur_{k}.png\n" for k in (1, 2)))


def _ded(root: Path) -> None:
    for n in (1, 2):
        write_image(root / "sharp" / f"sharp_{n}.jpg", _img(n))
        write_image(root / "image" / f"image_{n}.jpg", _img(20 + n))


def _dpdd(root: Path) -> None:
    for i in (1, 2):
        write_image(root / "test_c" / "source" / f"1P0A10{i}1.png", _img(i, 16))
        write_image(root / "test_c" / "target" / f"1P0A10{i}0.png", _img(10 + i, 16))


def _vabd(root: Path) -> None:
    write_image(root / "train" / "input" / "0001.jpg", _img(1))
    write_image(root / "train" / "8" / "0001.jpg", _img(2))


def _ebb(root: Path) -> None:
    for n in (1, 2):
        write_image(root / "test" / "input" / f"{n}.jpg", _img(n))
        write_image(root / "test" / "target" / f"{n}.jpg", _img(10 + n))


def _sdd(root: Path) -> None:
    for n in (1, 2):
        write_image(root / "test" / "gt" / f"{n}.png", _img(n))
        write_image(root / "test" / "blur" / f"{n}.png", _img(10 + n))


def _cuhk(root: Path) -> None:
    for n in (1, 2):
        write_image(root / "image" / f"out_of_focus000{n}.jpg", _img(n))
        write_image(root / "gt" / f"out_of_focus000{n}.png", np.full((24, 32), 255, np.uint8))


SOURCES = [(realblur, _realblur, "RealBlur"), (ded, _ded, "DED"), (dpdd, _dpdd, "DPDD"), (vabd, _vabd, "VABD"),
           (ebb, _ebb, "EBB"), (sdd, _sdd, "my_SDD"), (cuhk_blur, _cuhk, "CUHK")]


def _split(items):
    return [t for t in items if isinstance(t, Task)], [r for r in items if isinstance(r, Rejected)]


@pytest.mark.parametrize("module, build, folder", SOURCES)
def test_a_parent_of_one_dataset_folder_reads_that_folder(tmp_path, module, build, folder) -> None:
    build(tmp_path / "downloads" / folder)
    (tmp_path / "downloads" / "notes.txt").write_text("where I got it\n")
    given, direct = _split(list(module.list_tasks(tmp_path / "downloads", OPTS)))
    itself, _ = _split(list(module.list_tasks(tmp_path / "downloads" / folder, OPTS)))
    assert given[0] and [t.key for t in given] == [t.key for t in itself] and len(given) == 2
    assert [t.files for t in given] == [t.files for t in itself] and not direct
    assert all(Path(p).is_file() for t in given for p in t.files.values())
    # origins stay relative to the folder given (as DPDD's always were)
    assert [t.meta["origin"] for t in given] == [[f"{folder}/{p}" for p in t.meta["origin"]] for t in itself]
    assert read_inside(module.NAME, tmp_path / "downloads") == (
        f"{option_of(module.NAME)} {tmp_path / 'downloads'}: reading the {module.TITLE} folder inside it, "
        f"{tmp_path / 'downloads' / folder}")
    assert read_inside(module.NAME, tmp_path / "downloads" / folder) is None  # the folder itself: nothing to say


@pytest.mark.parametrize("module, build", [(module, build) for module, build, _ in SOURCES])
def test_a_parent_of_several_is_refused_naming_them(tmp_path, module, build) -> None:
    for name in ("B_second", "A_first"):
        build(tmp_path / name)
    with pytest.raises(LayoutError) as info:
        check_layout(module.SOURCE, tmp_path)
    text = str(info.value)
    assert "\n" not in text and f"it holds 2 {module.TITLE} folders: give " in text
    assert f"one of them ({tmp_path / 'A_first'}, {tmp_path / 'B_second'})" in text
    with pytest.raises(LayoutError):
        list(module.list_tasks(tmp_path, OPTS))


def test_a_parent_with_no_dataset_folder_fails_naming_what_its_one_folder_lacks(tmp_path) -> None:
    write_image(tmp_path / "DED" / "sharp" / "sharp_1.jpg", _img(1))  # half a layout: not a DED folder
    with pytest.raises(LayoutError, match=r"\(DED\); no sharp/ or image/; in DED/: no image/; found DED/sharp$"):
        check_layout(ded.SOURCE, tmp_path)


@pytest.mark.parametrize("module, build, problem", [
    (vabd, lambda r: (r / "VABD" / "train" / "input").mkdir(parents=True),
     r"\(VABD\); no train/ or test/ folder; in VABD/: train/ has none of 8/, 2_8/, 1_8/ \(the defocused shots\); "
     r"found VABD/train$"),
    (ebb, lambda r: (r / "EBB" / "test" / "input").mkdir(parents=True),
     r"\(EBB\); no train/ or test/ folder; in EBB/: test/ has no target/; found EBB/test$"),
    (cuhk_blur, lambda r: (r / "CUHK" / "image").mkdir(parents=True),
     r"\(CUHK blur detection\); no image/ \(or images/\) or gt/; in CUHK/: no gt/; found CUHK/image$"),
    (sdd, lambda r: (r / "SDD" / "test" / "gt").mkdir(parents=True),  # the SDD/ of the JDRL code: what it lacks
     r"\(SDD\); in SDD/: test/ has no blur/; found SDD/test$")])
def test_a_parent_holding_half_a_layout_fails_naming_what_is_missing(tmp_path, module, build, problem) -> None:
    build(tmp_path)
    with pytest.raises(LayoutError, match=problem):
        check_layout(module.SOURCE, tmp_path)


def test_realdof_still_refuses_a_parent_as_dpdd_split_folders_have_its_layout(tmp_path) -> None:
    """A DPDD folder of the test split only (`test_c/{source,target}/`) is one RealDOF-shaped folder: read as
    RealDOF it would give DPDD pairs as RealDOF's; it is refused, naming --dpdd."""
    _dpdd(tmp_path / "dd_dp_dataset_png")
    with pytest.raises(LayoutError, match=r"\(RealDOF\); no source/ or target/; found test_c/\{source,target\} "
                                          r"— is this DPDD \(--dpdd\)\?$"):
        check_layout(realdof.SOURCE, tmp_path / "dd_dp_dataset_png")
    assert read_inside("realdof", tmp_path / "dd_dp_dataset_png") is None


def test_ingest_says_which_folder_it_reads(tmp_path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    _ded(tmp_path / "downloads" / "DED")
    result = CliRunner().invoke(app, ["ingest", "--ded", str(tmp_path / "downloads"), "--out", str(tmp_path / "out"),
                                      "--split-by", "train", "--workers", "0"])
    assert result.exit_code == 0, result.output
    line = f"--ded {tmp_path / 'downloads'}: reading the DED folder inside it, {tmp_path / 'downloads' / 'DED'}"
    assert line in result.output.replace("\n", "")
    assert "2 samples" in result.output


def test_a_parent_of_the_real_vabd_folder_gives_its_samples(tmp_path, real_fixture_root) -> None:
    """The real VABD fixture (3 scenes, 3 apertures) in a download folder: the same samples as the folder itself, the
    origins below VABD/ (unregistered: registering 1536 px shots takes seconds and is not what is tested here)."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.reader import iter_samples

    shutil.copytree(real_fixture_root / "VABD", tmp_path / "parent" / "VABD")
    runs = {}
    for name, given in (("parent", tmp_path / "parent"), ("itself", tmp_path / "parent" / "VABD")):
        result = CliRunner().invoke(app, ["ingest", "--vabd", str(given), "--out", str(tmp_path / name),
                                          "--max-side", "48", "--register", "none", "--workers", "0"])
        assert result.exit_code == 0, result.output
        runs[name] = (result.output.replace("\n", ""), {s["key"]: s for s in iter_samples(tmp_path / name)})
    assert (f"--vabd {tmp_path / 'parent'}: reading the VABD folder inside it, {tmp_path / 'parent' / 'VABD'}"
            in runs["parent"][0]) and "reading the" not in runs["itself"][0]
    parent, itself = runs["parent"][1], runs["itself"][1]
    assert sorted(parent) == sorted(itself) and len(parent) == 12  # 3 references + 3 x 3 apertures
    for key, sample in itself.items():
        for image in ("blur", "sharp"):
            assert (sample[image] is None) == (parent[key][image] is None)
            assert sample[image] is None or np.array_equal(sample[image], parent[key][image])
        assert parent[key]["meta"]["origin"] == [f"VABD/{p}" for p in sample["meta"]["origin"]]
        assert {**parent[key]["meta"], "origin": None} == {**sample["meta"], "origin": None}


def _keys_and_origins(module, given: Path) -> list[tuple[str, list[str]]]:
    tasks, _ = _split(list(module.list_tasks(given, OPTS)))
    return [(t.key, t.meta["origin"]) for t in tasks]


@pytest.mark.parametrize("module, build, folder", SOURCES)
def test_a_linked_dataset_folder_gives_the_keys_and_origins_of_a_plain_copy(tmp_path, module, build, folder) -> None:
    """parent/DPDD -> /data/dpdd_v1 (or every file a link, as in a git-annex or DVC copy): the files resolved outside
    the folder given, and their origins became absolute paths of this machine (what the links point to) where a
    plain copy gives paths relative to the folder given. A link is read, and not followed for the origins."""
    build(tmp_path / "store")
    shutil.copytree(tmp_path / "store", tmp_path / "plain" / folder)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / folder).symlink_to(tmp_path / "store")
    for f in sorted((tmp_path / "store").rglob("*")):  # the annexed copy: folders of links to the files
        if f.is_file():
            (tmp_path / "annexed" / f.relative_to(tmp_path / "store")).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "annexed" / f.relative_to(tmp_path / "store")).symlink_to(f)
    parent = _keys_and_origins(module, tmp_path / "plain")
    itself = _keys_and_origins(module, tmp_path / "plain" / folder)
    assert len(parent) == 2 and all(not p.startswith("/") for _, origin in parent + itself for p in origin)
    assert _keys_and_origins(module, tmp_path / "linked") == parent  # the parent of a link
    assert _keys_and_origins(module, tmp_path / "linked" / folder) == itself  # the link itself
    assert _keys_and_origins(module, tmp_path / "annexed") == itself


def test_an_ingest_of_a_linked_dataset_writes_the_shards_of_a_plain_copy(tmp_path) -> None:
    """Through the CLI, a download folder holding a link to the DED folder: read (not refused), and the same sample
    keys and metadata (origin included) in the shards as a plain copy's."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.reader import iter_samples

    _ded(tmp_path / "store")
    shutil.copytree(tmp_path / "store", tmp_path / "plain" / "DED")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "DED").symlink_to(tmp_path / "store")
    shards = {}
    for name in ("plain", "linked"):
        out = tmp_path / f"out-{name}"
        result = CliRunner().invoke(app, ["ingest", "--ded", str(tmp_path / name), "--out", str(out),
                                          "--split-by", "train", "--workers", "0"])
        assert result.exit_code == 0 and "2 samples" in result.output, result.output
        shards[name] = {s["key"]: s["meta"] for s in iter_samples(out)}
    assert shards["linked"] == shards["plain"] and len(shards["plain"]) == 2
    assert sorted(m["origin"][0] for m in shards["plain"].values()) == [f"DED/image/image_{n}.jpg" for n in (1, 2)]
