"""`--dpdd`, `--realblur` and `--ded` given the PARENT folder of their dataset (a download folder holding RealBlur/,
DED/, DPDD/): read as the one dataset folder inside it (said in one line), or refused naming the folders to give where
it holds several. Before, RealBlur and DED refused any parent and DPDD took only one named dd_dp_dataset_png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.sample import IngestOptions, Rejected, Task
from defocuskit.data.sources import ded, dpdd, realblur
from defocuskit.data.sources.layout import LayoutError, check_layout
from defocuskit.io.images import write_image

OPTS = IngestOptions(split_by="train")
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


def _split(items):
    return [t for t in items if isinstance(t, Task)], [r for r in items if isinstance(r, Rejected)]


@pytest.mark.parametrize("module, build, folder", [
    (realblur, _realblur, "RealBlur"), (ded, _ded, "DED"), (dpdd, _dpdd, "DPDD")])
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
    from defocuskit.data.sources.layout import read_inside

    option = {"realblur": "--realblur", "ded": "--ded", "dpdd": "--dpdd"}[module.NAME]
    assert read_inside(module.NAME, tmp_path / "downloads") == (
        f"{option} {tmp_path / 'downloads'}: reading the {module.TITLE} folder inside it, "
        f"{tmp_path / 'downloads' / folder}")
    assert read_inside(module.NAME, tmp_path / "downloads" / folder) is None  # the folder itself: nothing to say


@pytest.mark.parametrize("module, build", [(realblur, _realblur), (ded, _ded), (dpdd, _dpdd)])
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


def test_a_parent_with_no_dataset_folder_still_fails_as_before(tmp_path) -> None:
    write_image(tmp_path / "DED" / "sharp" / "sharp_1.jpg", _img(1))  # half a layout: not a DED folder
    with pytest.raises(LayoutError, match=r"\(DED\); no sharp/ or image/; found DED/sharp$"):
        check_layout(ded.SOURCE, tmp_path)


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
