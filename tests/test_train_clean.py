"""A fresh start (`train --no-resume`, checkpoints.clean_run_folder) removes only what train wrote INTO THIS run
folder: not another run's checkpoint linked in (nor its files through the link)."""

from __future__ import annotations

from pathlib import Path

from defocuskit.train.checkpoints import clean_run_folder


def fake_checkpoint(folder: Path) -> dict[str, bytes]:
    """A checkpoints/step-N folder's files (what clean_run_folder takes for a checkpoint); their contents."""
    files = {"recipe.json": b"{}", "model.safetensors": b"weights", "random_states_0.pkl": b"state"}
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_another_runs_checkpoint_linked_in_keeps_its_files(tmp_path):
    """A checkpoint of another run linked into checkpoints/ (to resume from it) is a complete checkpoint to
    `list_checkpoints`: --no-resume deleted its files in the other run's folder through the link, then failed on
    the link ("Not a directory"). Nothing is removed through a link: kept, said in one line."""
    theirs = tmp_path / "other" / "checkpoints" / "step-0000002"
    files = fake_checkpoint(theirs)
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    link = out / "checkpoints" / "step-0000002"
    link.symlink_to(theirs)
    said: list[str] = []
    clean_run_folder(out, fresh=True, say=said.append)
    assert {p.name: p.read_bytes() for p in theirs.iterdir()} == files
    assert link.is_symlink() and len(said) == 1 and said[0].startswith(f"kept {link}: a link"), said