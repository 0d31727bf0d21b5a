"""A path that cannot be used as asked (a file where a folder goes, a folder where a file goes, a read-only
folder) is one line naming it, from any command, and nothing of the user's is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from defocuskit.cli.options import file_fault_line

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("exc, said", [
    (FileExistsError(17, "File exists", "out"), "out: exists and is a file where a folder is needed"),
    (NotADirectoryError(20, "Not a directory", "a.txt/x"), "a.txt/x: a part of this path is a file"),
    (IsADirectoryError(21, "Is a directory", "sheet"), "sheet: is a folder where a file is needed"),
    (PermissionError(13, "Permission denied", "ro/x"), "ro/x: permission denied"),
    (OSError(36, "File name too long", "n" * 300), "n" * 300 + ": a name in this path is longer than the file system"),
    (OSError(40, "Too many levels of symbolic links", "loop/x"), "loop/x: a loop of symbolic links"),
])
def test_path_faults_are_one_line_naming_the_path(exc: OSError, said: str) -> None:
    assert file_fault_line(exc).startswith(said)


def test_defocuskit_own_words_for_a_path_in_its_way_are_kept(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.io import atomic

    monkeypatch.setattr(atomic, "new_token", lambda: "0badcafe")
    (tmp_path / ".a.png.0badcafe.defocuskit-partial").mkdir()
    with pytest.raises(FileExistsError) as caught:
        atomic.write_journalled(tmp_path / "a.png", b"x", lambda name: None)
    assert file_fault_line(caught.value).startswith(f"{tmp_path}/.a.png.0badcafe.defocuskit-partial: in the way of "
                                                     "the temporary copy of a.png")


def test_cli_a_folder_at_an_older_temporary_name_is_left_alone_and_blocks_nothing(tmp_path: Path) -> None:
    import numpy as np

    from defocuskit.io.images import write_image

    write_image(tmp_path / "a.png", np.full((16, 16, 3), 100, np.uint8))
    out = tmp_path / "out"
    (out / ".a.png.defocuskit-partial").mkdir(parents=True)
    (out / ".a.png.defocuskit-partial" / "keep.txt").write_text("mine")
    model = _tiny_model(tmp_path)
    run = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", "deblur", str(tmp_path / "a.png"),
                          "--checkpoint", str(model), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert (out / ".a.png.defocuskit-partial" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == [".a.png.defocuskit-partial", ".defocuskit-deblur.lock", "a.png",
                                                     "deblur.json"]


def _tiny_model(folder: Path) -> Path:
    """A DnCNN model file of random weights (deblur needs only a network that runs)."""
    import torch

    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import resolve_recipe

    recipe = resolve_recipe({"method": "dncnn", "model": {"depth": 3, "features": 8}})
    torch.manual_seed(0)
    net = get_method("dncnn").build(recipe.model, recipe.objective, False)
    path = folder / "dncnn.safetensors"
    save_model(path, net.state_dict(), "dncnn", recipe_to_dict(recipe))
    return path


def test_other_errors_are_not_dressed_as_path_faults() -> None:
    assert file_fault_line(PermissionError("no filename")) is None  # nothing to name: the traceback stays
    assert file_fault_line(ValueError("x")) is None


def test_cli_file_where_a_folder_goes_is_one_line_and_left_alone(tmp_path: Path) -> None:
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    for args in (["ingest", "--synthetic", "builtin", "--synthetic-size", "32", "--out", str(user), "--workers", "0"],
                 ["recipes", "cp", "nafnet-tiny", str(user / "x.yaml")]):
        run = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert f"{user}: exists and is a file where a folder is needed" in run.stderr
    assert user.read_text() == "mine"


def test_an_interrupted_command_says_how_to_go_on(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli import pseudo_coc
    from defocuskit.cli.app import app
    from defocuskit.inference import files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from defocuskit.eval import evaluate

    monkeypatch.setattr(evaluate, "evaluate", interrupted)
    monkeypatch.setattr(files, "deblur_files", interrupted)
    monkeypatch.setattr(pseudo_coc, "write_pseudo_coc", interrupted)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    for args, said in ((["deblur", str(tmp_path), "--checkpoint", str(model), "--out", str(tmp_path / "o")],
                        "run the same command again to finish"),
                       (["pseudo-coc", "--checkpoint", str(model), "--shards", str(tmp_path), "--out",
                         str(tmp_path / "p")], "completed shards are kept"),
                       (["eval", "--shards", str(tmp_path), "--baseline", "input", "--report", str(tmp_path / "r")],
                        "holds the previous report, if any, as it was")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 130 and said in result.stderr, result.output


def test_a_name_of_255_bytes_has_its_temporaries_beside_it(tmp_path: Path) -> None:
    from defocuskit.io import atomic

    long = tmp_path / ("é" * 125 + "a.png")  # 255 bytes: a name the disk takes, its temporary's name would not
    atomic.atomic_write(long, b"one")
    listed: list[str] = []
    atomic.write_journalled(long, b"two", listed.append)
    assert long.read_bytes() == b"two" and sorted(p.name for p in tmp_path.iterdir()) == [long.name]
    assert all(len(n.encode()) <= 255 for n in listed)
    left = atomic.partial_path(long, "0badcafe")
    left.write_bytes(b"killed")
    other = atomic.partial_path(tmp_path / ("é" * 125 + "b.png"), "0badcafe")  # the same first characters
    atomic.remove_partial(long, other.name)  # another file's temporary: not this file's to remove
    assert left.exists()
    atomic.remove_partial(long, left.name)
    assert not left.exists()


def test_cli_deblur_of_a_photo_whose_name_is_255_bytes(tmp_path: Path) -> None:
    import numpy as np

    from defocuskit.io.images import write_image

    photo = tmp_path / ("a" * 251 + ".png")
    write_image(photo, np.full((16, 16, 3), 100, np.uint8))
    run = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", "deblur", str(photo), "--checkpoint",
                          str(_tiny_model(tmp_path)), "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [".defocuskit-deblur.lock", photo.name, "deblur.json"]


def test_cli_an_output_name_over_255_bytes_is_one_line(tmp_path: Path) -> None:
    name = tmp_path / ("r" * 260 + ".yaml")
    run = subprocess.run([sys.executable, "-m", "defocuskit", "recipes", "cp", "nafnet-tiny", str(name)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == f"error: {name}: a name in this path is longer than the file system allows (255 " \
                                 "bytes); give a shorter one"
    assert list(tmp_path.iterdir()) == []


_KILLED_AT = """
import os, signal, sys
from pathlib import Path
import defocuskit.io.atomic as atomic
fill, where, nth = atomic._fill, sys.argv[1], int(sys.argv[2])
seen = []
def killing_fill(tmp, data, fsync):  # kill -9 as the nth write of deblur.json (or of an image) begins
    seen.append(Path(tmp).name.startswith(".deblur.json.") == (where == "journal"))
    if sum(seen) == nth and seen[-1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return fill(tmp, data, fsync)
atomic._fill = killing_fill
from defocuskit.cli.app import app
app(sys.argv[3:])
"""


@pytest.mark.parametrize("where, nth", [("journal", 1), ("journal", 2), ("journal", 3), ("image", 2)])
def test_a_deblur_killed_at_any_write_leaves_nothing_the_next_run_does_not_remove(tmp_path: Path, where, nth) -> None:
    """kill -9 while deblur.json lists an image (before the image's temporary is made: it was made first, and left
    unlisted) or while the image is written; the first deblur.json's own temporary too (`.deblur.json.*.tmp`)."""
    import numpy as np

    from defocuskit.io.images import write_image

    for name, value in (("a.png", 100), ("b.png", 50)):
        write_image(tmp_path / name, np.full((16, 16, 3), value, np.uint8))
    out = tmp_path / "out"
    args = ["deblur", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--checkpoint", str(_tiny_model(tmp_path)),
            "--out", str(out)]
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT, where, str(nth), *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert any(p.name.startswith((".a.png", ".b.png", ".deblur.json")) for p in out.iterdir())
    run = subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == [".defocuskit-deblur.lock", "a.png", "b.png", "deblur.json"]
