"""A fresh start (`train --no-resume`, checkpoints.clean_run_folder) removes only what train wrote INTO THIS run
folder: not the best weights of another run folder copied in, not another run's checkpoint linked in (nor its files
through the link), not a link or folder where a grid of a validated step would be."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from defocuskit.io.modelfile import MODEL_FORMAT
from defocuskit.train.checkpoints import clean_run_folder
from defocuskit.train.exports import earlier_weights


def best_weights(path: Path, output_dir: Path, run_folder: Path | None) -> Path:
    """A best.safetensors as train.keep_best writes it: a run's metadata, its best step, and (since exports record
    it) the absolute run folder; without `run_folder`, one written before they did."""
    meta = {"format": MODEL_FORMAT, "method": "nafnet", "recipe": json.dumps({"output_dir": str(output_dir)}),
            "best_step": "2", "val_psnr": "20.0"}
    if run_folder is not None:
        meta["run_folder"] = str(run_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(1)}, str(path), metadata=meta)
    return path


def test_a_best_safetensors_copied_in_from_another_run_folder_is_kept_and_said(tmp_path):
    """`best_written_by_train` (format and best_step) was enough to delete it: a copy of another run's best weights
    into this folder (kept beside a new run, or an init_from source) was lost to --no-resume. It goes only when it
    records this folder (or, written before it recorded one, its recipe's output_dir is this folder)."""
    out, other = tmp_path / "run", tmp_path / "other"
    other.mkdir()
    for recorded, output_dir in ((other, out), (None, other)):  # the run folder it records, else its output_dir
        best = best_weights(out / "best.safetensors", output_dir, recorded)
        said: list[str] = []
        clean_run_folder(out, fresh=True, say=said.append)
        assert best.is_file(), "another run folder's best weights were deleted"
        assert len(said) == 1 and said[0].startswith(f"kept {best}: ") and str(other) in said[0], said
        assert earlier_weights(out) is None  # nor does it make a resume without checkpoints refuse
    for recorded, output_dir in ((out, other), (None, out)):  # this folder's own: removed, silently
        best = best_weights(out / "best.safetensors", output_dir, recorded)
        assert earlier_weights(out) == best
        said = []
        clean_run_folder(out, fresh=True, say=said.append)
        assert not best.exists() and said == []


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


def test_a_link_or_folder_where_a_validated_steps_grid_would_be_is_kept(tmp_path):
    """val/step-N.png of a step metrics.jsonl validated was unlinked whatever it was: a link of the user's (to
    another run's grid) went, and a folder of that name stopped the fresh run (IsADirectoryError) after the earlier
    checkpoints were gone. Only a grid file a run wrote goes (`grid_written_by_train`)."""
    out = tmp_path / "run"
    (out / "val").mkdir(parents=True)
    rows = [{"step": s, "val_psnr": 20.0} for s in (2, 4, 6)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    theirs = tmp_path / "other" / "val" / "step-0000002.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"another run's grid")
    (out / "val" / "step-0000002.png").symlink_to(theirs)
    (out / "val" / "step-0000004.png").mkdir()
    (out / "val" / "step-0000004.png" / "notes.txt").write_text("mine")
    (out / "val" / "step-0000006.png").write_bytes(b"an earlier run's untagged grid")
    clean_run_folder(out, fresh=True)
    assert (out / "val" / "step-0000002.png").is_symlink() and theirs.read_bytes() == b"another run's grid"
    assert (out / "val" / "step-0000004.png" / "notes.txt").read_text() == "mine"
    assert not (out / "val" / "step-0000006.png").exists() and not (out / "metrics.jsonl").exists()


def test_the_only_copy_of_another_run_folders_weights_is_refused_before_the_run_replaces_it(tmp_path):
    """A model.safetensors (or, where the run validates, best.safetensors) that train wrote into another run folder,
    copied into this one and since gone from there (moved out, or replaced by that folder's next run), was replaced
    by this run's export (or first validation): the user's only copy lost. Refused before anything is written,
    naming the file and the folder it records. Still passing: a copy whose original is still there byte for byte (a
    copied run folder resumed: replacing the copy loses nothing), this folder's own, and the own file of a run
    folder since renamed (the folder it records is gone)."""
    import pytest

    from defocuskit.train.checks import TrainingError
    from defocuskit.train.runfolder import check_run_folder

    out, other = tmp_path / "run", tmp_path / "other"
    for name, validates in (("model.safetensors", False), ("best.safetensors", True)):
        original = best_weights(other / name, other, other)
        copy = out / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(original.read_bytes())
        check_run_folder(out, validates=validates)  # the original is still there
        original.unlink()
        with pytest.raises(TrainingError, match=f"{name}: .* another run folder, {other}, which no longer holds it"):
            check_run_folder(out, validates=validates)
        best_weights(original, other, other).write_bytes(b"that folder's next run")
        with pytest.raises(TrainingError, match="the only copy"):
            check_run_folder(out, validates=validates)
        assert copy.read_bytes() != b"that folder's next run" and copy.stat().st_size > 0
        if validates:  # a run that does not validate writes no best.safetensors
            check_run_folder(out, validates=False)
        best_weights(copy, out, out)  # this folder's own
        check_run_folder(out, validates=validates)
        best_weights(copy, tmp_path / "renamed", tmp_path / "renamed")  # its folder since renamed to `out`
        check_run_folder(out, validates=validates)
        copy.unlink()
