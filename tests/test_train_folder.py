"""The run folder belongs to the user: `train` replaces or removes only what an earlier defocuskit run wrote
there, and a folder it cannot write to is a one-line error naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.io.modelfile import read_model_file
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.runfolder import metrics_written_by_train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "nafnet-tiny.yaml")
USER_FILES = {"model.safetensors": "my model\n", "recipe.yaml": "my: recipe\n", "metrics.jsonl": '{"m": 1}\n'}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=1, per_shard=8, paired=True)


def train(shards: str, out: Path, *args: str):
    """`defocuskit train` of the tiny recipe for 2 steps; `args` (options, or overrides that replace these)."""
    from defocuskit.config.typed import layered_overrides

    return CliRunner().invoke(app, ["train", TINY, *layered_overrides(
        [f"data.train={shards}", f"output_dir={out}", "data.image_size=32", "train.max_steps=2"], list(args))])


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(USER_FILES))
def test_a_users_file_in_output_dir_is_refused_before_anything_is_written(name, shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text(USER_FILES[name])
    result = train(shards, out)
    assert result.exit_code == 1, result.output
    assert str(out / name) in result.output and "not written by" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert tree(out) == {name: USER_FILES[name]}


@pytest.mark.parametrize("target", ["dangling", "a run's metrics"])
def test_metrics_jsonl_that_is_a_link_is_refused_and_nothing_is_written_through_it(target, shards, tmp_path):
    """A link at metrics.jsonl (dangling, or to another run's own metrics elsewhere): the run would append its rows
    to the link's target outside the run folder; it is refused before anything is written."""
    other = tmp_path / "other-run"
    assert train(shards, other).exit_code == 0
    elsewhere = other / "metrics.jsonl" if target != "dangling" else tmp_path / "elsewhere.jsonl"
    before = elsewhere.read_text() if elsewhere.exists() else None
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to(elsewhere)
    result = train(shards, out)
    assert result.exit_code == 1 and f"{out / 'metrics.jsonl'}: a link" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (elsewhere.read_text() if elsewhere.exists() else None) == before
    assert [p.name for p in out.iterdir()] == ["metrics.jsonl"]


VALIDATING = ("train.eval_every=2", "train.keep_best=true", "train.val_limit=2")


@pytest.mark.parametrize("name", ["best.safetensors", "val/step-0000002.png", "val"])
def test_a_users_best_weights_or_grid_is_refused_where_the_run_validates(name, shards, tmp_path):
    """best.safetensors and val/step-NNNNNNN.png are written by a run that validates: a user's file there (or a
    file named val) stops it before anything is written; a run that does not validate leaves them and goes on."""
    out = tmp_path / "run"
    (out / "val").mkdir(parents=True)
    if name == "val":
        (out / "val").rmdir()
    (out / name).write_text("the user's own file\n")
    result = train(shards, out, f"data.val={shards}", *VALIDATING)
    assert result.exit_code == 1, result.output
    assert str(out / name) in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert tree(out) == {name: "the user's own file\n"}
    if name != "val":  # no validation: nothing of the run's lands on the user's file
        assert train(shards, out).exit_code == 0
        assert (out / name).read_text() == "the user's own file\n"


def test_a_validating_runs_own_grids_and_best_weights_are_replaced_on_resume(shards, tmp_path):
    out = tmp_path / "run"
    assert train(shards, out, f"data.val={shards}", *VALIDATING).exit_code == 0
    assert (out / "val" / "step-0000002.png").is_file() and (out / "best.safetensors").is_file()
    (out / "val" / "notes.png").write_text("not a grid's name: never judged")
    result = train(shards, out, f"data.val={shards}", *VALIDATING, "train.max_steps=4")
    assert result.exit_code == 0, result.output
    assert (out / "val" / "step-0000004.png").is_file()
    assert read_model_file(out / "best.safetensors")[1]["recipe"]["train"]["max_steps"] in (2, 4)
    result = train(shards, out, f"data.val={shards}", *VALIDATING, "train.max_steps=2", "--no-resume")
    assert result.exit_code == 0, result.output
    assert (out / "val" / "notes.png").read_text() == "not a grid's name: never judged"


def test_a_runs_own_files_are_resumed_and_replaced(shards, tmp_path):
    out = tmp_path / "run"
    assert train(shards, out).exit_code == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # a row cut short by a kill
    assert metrics_written_by_train(out / "metrics.jsonl")
    result = train(shards, out, "train.max_steps=4")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output
    assert read_model_file(out / "model.safetensors")[1]["recipe"]["train"]["max_steps"] == 4
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    result = train(shards, out, "train.max_steps=3")  # below the newest checkpoint: said, and which model
    assert result.exit_code == 0 and "already holds step 4 > train.max_steps 3" in result.output, result.output
    result = train(shards, out, "--no-resume")
    assert result.exit_code == 0, result.output
    assert [s for s, _ in list_checkpoints(out)] == [2]


def test_a_failing_init_from_writes_no_recipe(shards, tmp_path):
    assert train(shards, tmp_path / "a").exit_code == 0
    out = tmp_path / "b"
    result = train(shards, out, "model.width=16", f"train.init_from={tmp_path / 'a' / 'model.safetensors'}")
    assert result.exit_code == 1 and "in this recipe's network" in result.output, result.output
    assert not (out / "recipe.yaml").exists() and not (out / "checkpoints").exists()


def test_no_resume_removes_only_the_checkpoint_files_defocuskit_wrote(shards, tmp_path):
    out = tmp_path / "run"
    assert train(shards, out, "train.max_steps=3").exit_code == 0
    mine = out / "checkpoints" / "step-0000001"
    mine.mkdir()
    (mine / "my.txt").write_text("data")
    (out / "checkpoints" / "step-0000003" / "notes.txt").write_text("mine")
    before = tree(out)
    result = train(shards, out, "train.max_steps=3", "--no-resume")  # would save step 3 where notes.txt is
    assert result.exit_code == 1 and "step-0000003" in result.output and "Traceback" not in result.output
    assert tree(out) == before
    result = train(shards, out, "train.max_steps=2", "--no-resume")
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and "notes.txt" in result.output
    assert (mine / "my.txt").read_text() == "data"
    assert sorted(p.name for p in (out / "checkpoints" / "step-0000003").iterdir()) == ["notes.txt"]
    assert [s for s, _ in list_checkpoints(out)] == [2]


def test_a_killed_saves_folders_lose_only_checkpoint_files(shards, tmp_path):
    """`.tmp-step-N` and `.trash-step-N-PID` are a killed save's: the next run removes the checkpoint files in
    them, never anything else; a user's file in the temporary of a step the run would save stops it first."""
    out = tmp_path / "run"
    assert train(shards, out).exit_code == 0
    checkpoints = out / "checkpoints"
    killed, trash, users = (checkpoints / ".tmp-step-0000003", checkpoints / ".trash-step-0000002-99",
                            checkpoints / ".tmp-step-0000009")
    for folder in (killed, trash, users):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
    (killed / "random_states_0.pkl").write_bytes(b"state")
    (users / "notes.txt").write_text("mine")
    (users / "sub").mkdir()
    before = tree(out)
    result = train(shards, out, "train.max_steps=9", "--no-resume")  # would save step 9 where notes.txt is
    assert result.exit_code == 1 and str(users) in result.output and "Traceback" not in result.output, result.output
    assert tree(out) == before
    result = train(shards, out, "train.max_steps=4")
    assert result.exit_code == 0, result.output
    assert not killed.exists() and not trash.exists()
    assert "kept" in result.output and str(users) in result.output
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt", "sub"]
    assert [s for s, _ in list_checkpoints(out)] == [4]


def test_pruning_old_checkpoints_keeps_a_users_file_put_into_one(shards, tmp_path):
    out = tmp_path / "run"
    args = ("train.checkpoint_every=1", "train.keep_checkpoints=1")
    assert train(shards, out, "train.max_steps=2", *args).exit_code == 0  # keeps step 2 only
    (out / "checkpoints" / "step-0000002" / "notes.txt").write_text("mine")
    result = train(shards, out, "train.max_steps=4", *args)  # resumes; step 3 prunes step 2
    assert result.exit_code == 0 and "kept" in result.output and "notes.txt" in result.output, result.output
    assert sorted(p.name for p in (out / "checkpoints" / "step-0000002").iterdir()) == ["notes.txt"]
    assert [s for s, _ in list_checkpoints(out)] == [4]


def test_a_checkpoint_of_another_run_linked_in_is_resumed_but_nothing_is_removed_through_it(shards, tmp_path):
    """Another run's checkpoint linked into checkpoints/ to resume from it: pruning it (train.keep_checkpoints)
    deleted that run's files through the link, then failed on it; a fresh run that would save its step replaced it
    the same way. The link is kept (said once) and its files stay; a run that would save its step is refused."""
    other, out = tmp_path / "other", tmp_path / "run"
    assert train(shards, other).exit_code == 0
    theirs = other / "checkpoints" / "step-0000002"
    before = tree(theirs)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-0000002").symlink_to(theirs)
    result = train(shards, out, "--no-resume")  # would save its step 2 there
    assert result.exit_code == 1 and f"{out / 'checkpoints' / 'step-0000002'}: a link" in result.output, result.output
    assert "Traceback" not in result.output and tree(theirs) == before
    result = train(shards, out, "train.max_steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=1")
    assert result.exit_code == 0 and "resumed from" in result.output, result.output
    assert tree(theirs) == before and (out / "checkpoints" / "step-0000002").is_symlink()
    assert result.output.count("a link (to") == 1, result.output
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]


def test_output_dir_that_is_a_file_or_cannot_be_written(shards, tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "sub"):
        result = train(shards, out)
        assert result.exit_code == 1 and f"output_dir {out}:" in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "f").read_text() == "x"

    import defocuskit.train.runfolder as runfolder

    monkeypatch.setattr(runfolder.os, "access", lambda path, mode: False)
    result = train(shards, tmp_path / "ro")
    assert result.exit_code == 1 and "not writable" in result.output and str(tmp_path) in result.output

    monkeypatch.undo()  # the check passes (root writes anywhere) but the folder's creation fails: still one line
    out = tmp_path / "denied"
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(out)):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = train(shards, out)
    assert result.exit_code == 1 and f"error: {out}: Permission denied" in result.output, result.output


def stop_after_checkpoint(monkeypatch, step: int) -> None:
    """Ctrl-C (KeyboardInterrupt) once the run has saved its checkpoint of `step`."""
    import defocuskit.train.loop as loop

    save = loop.save_checkpoint

    def saved_then_stopped(accelerator, net, recipe, at):
        path = save(accelerator, net, recipe, at)
        if at == step:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(loop, "save_checkpoint", saved_then_stopped)


def test_no_resume_removes_the_earlier_export_so_a_stopped_run_leaves_no_old_model(shards, tmp_path, monkeypatch):
    """The earlier run's model.safetensors stayed until the fresh run exported: stopped after a checkpoint, the folder
    held the new run's checkpoints and metrics beside the old run's model, which `eval OUT/model.safetensors` scored
    as the new one. A fresh start removes the export train wrote into this folder, and only that: a model it did not
    export here (copied from another run folder) is kept, said in one line."""
    out, other = tmp_path / "run", tmp_path / "other"
    first = train(shards, out, "seed=1")
    assert first.exit_code == 0, first.output
    assert train(shards, other).exit_code == 0
    stop_after_checkpoint(monkeypatch, 2)
    result = train(shards, out, "train.max_steps=4", "train.checkpoint_every=2", "--no-resume")
    assert result.exit_code == 130, result.output
    assert [s for s, _ in list_checkpoints(out)] == [2] and not (out / "model.safetensors").exists()
    assert "run the same command without --no-resume to resume" in result.output, result.output  # not: again
    theirs = (other / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(theirs)  # another folder's export: not provably this folder's
    result = train(shards, out, "train.max_steps=4", "train.checkpoint_every=2", "--no-resume")
    assert result.exit_code == 130 and (out / "model.safetensors").read_bytes() == theirs, result.output
    said = [line for line in result.output.splitlines() if line.startswith(f"kept {out / 'model.safetensors'}: ")]
    assert len(said) == 1 and "did not export it into this folder" in said[0], result.output


def test_an_export_is_its_folders_whatever_the_working_folder_and_a_copy_is_not(shards, tmp_path, monkeypatch):
    """A run given a relative output_dir (runs/a, from x/) recorded only that in its exports, which a later command
    from y/ resolved against y/: its own export was not known (--no-resume kept it, "not exported into this folder";
    a resume with its checkpoints gone started beside it), and a copy into y/runs/a was known as y/runs/a's. An
    export records its absolute run folder: known from any working folder, and a copy elsewhere is not."""
    from defocuskit.train.exports import earlier_weights, written_here

    x, y = tmp_path / "x", tmp_path / "y"
    x.mkdir(), y.mkdir()
    monkeypatch.chdir(x)
    assert train(shards, Path("runs/a"), f"data.val={shards}", *VALIDATING).exit_code == 0
    out, copy = x / "runs" / "a", y / "runs" / "a"
    monkeypatch.chdir(y)
    assert earlier_weights(out) == out / "model.safetensors"
    assert earlier_weights(Path("../x/runs/a")) == Path("../x/runs/a/model.safetensors")
    (out / "model.safetensors").rename(tmp_path / "aside")
    assert earlier_weights(out) == out / "best.safetensors"  # train.keep_best's weights record it too
    (tmp_path / "aside").rename(out / "model.safetensors")
    copy.mkdir(parents=True)
    shutil.copy(out / "model.safetensors", copy / "model.safetensors")  # the same relative output_dir, from y/
    assert not written_here(copy / "model.safetensors", Path("runs/a")) and earlier_weights(copy) is None
    stop_after_checkpoint(monkeypatch, 2)
    result = train(shards, out, "train.max_steps=4", "train.checkpoint_every=2", "--no-resume")
    assert result.exit_code == 130 and f"kept {out / 'model.safetensors'}" not in result.output, result.output
    assert not (out / "model.safetensors").exists() and not (out / "best.safetensors").exists()


def test_a_resume_stopped_before_its_export_keeps_the_runs_earlier_export(shards, tmp_path, monkeypatch):
    """A resume (no --no-resume) stopped before it exports leaves the export of the same run's earlier step: kept, and
    the interruption says to run the same command again (which resumes and then replaces it)."""
    out = tmp_path / "run"
    assert train(shards, out, "train.checkpoint_every=2").exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    stop_after_checkpoint(monkeypatch, 4)
    result = train(shards, out, "train.max_steps=6", "train.checkpoint_every=2")
    assert result.exit_code == 130 and "run the same command again to resume" in result.output, result.output
    assert (out / "model.safetensors").read_bytes() == before and f"kept {out}" not in result.output



def test_a_fresh_start_removes_only_the_weight_checksums_a_run_wrote(tmp_path):
    """DEFOCUSKIT_LOG_KEYS: weights-rankR.json (a run's checksums of its final weights) go with the export they
    describe; a file of that name with other content is not a run's and stays."""
    from defocuskit.train.checkpoints import clean_run_folder

    ours, theirs = tmp_path / "weights-rank0.json", tmp_path / "weights-rank1.json"
    ours.write_text(json.dumps({"step": 2, "weights": "ab", "ema": "cd"}))
    theirs.write_text('{"my": "notes"}')
    clean_run_folder(tmp_path, fresh=True)
    assert not ours.exists() and theirs.read_text() == '{"my": "notes"}'

def test_a_shard_folder_an_ingest_is_writing_is_not_trained_on(shards, tmp_path):
    """Its shards would change under the run (a re-plan removed one mid-run: 'No such file or directory'), whether
    data.train names the folder or a pattern of its shards. The ingest holds its --out folder (a copy here: the
    module's shards stay as they are, and nothing is made from the pattern's name)."""
    from defocuskit.data.folder import run_lock

    folder = tmp_path / "shards"
    shutil.copytree(Path(shards).parent, folder)
    out = tmp_path / "run"
    with run_lock(folder, "ingest", "plan-digest"):
        for spec in (str(folder), str(folder / "train-*.tar"), str(folder / "train-000000.tar")):
            result = train(spec, out)
            assert result.exit_code == 2 and f"{folder}: ingest is writing it now (pid" in result.output, result.output
    assert not out.exists() and not [p for p in folder.iterdir() if p.is_dir()]
