"""Resuming a run folder with a changed recipe or a tampered folder: exact, or said in one line naming the key (old
and new values), or refused before any work; nothing of the earlier run lost or silently mixed in."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.io.modelfile import read_metadata, read_model_file, save_model
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.checkpoints import list_checkpoints

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "nafnet-tiny.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=1, per_shard=8, paired=True)


def train(shards: str, out: Path, *args: str):
    """`defocuskit train` of the tiny recipe; `args` (options, or overrides that replace these)."""
    from defocuskit.config.typed import layered_overrides

    return CliRunner().invoke(app, ["train", TINY, *layered_overrides(
        [f"data.train={shards}", f"output_dir={out}", "data.image_size=32", "optim.schedule=constant",
         "train.checkpoint_every=2", "train.log_every=1"], list(args))])


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "differs from the checkpoint's" in line]


@pytest.fixture(scope="module")
def two_steps(shards, tmp_path_factory) -> Path:
    """A run stopped at its step-2 checkpoint, copied by each test that resumes it."""
    out = tmp_path_factory.mktemp("runs") / "two"
    assert train(shards, out, "train.max_steps=2").exit_code == 0
    return out


def test_changed_training_keys_are_named_in_one_line_with_both_values(two_steps, shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    result = train(shards, out, "train.max_steps=4", "seed=1", "data.batch_size=3", "train.ema_decay=0.5")
    assert result.exit_code == 0, result.output
    (line,) = warnings(result.output)
    for said in ("seed 0 -> 1", "data.batch_size 2 -> 3", "train.ema_decay 0.9 -> 0.5", "from step 2"):
        assert said in line, line
    assert line.index("differs") < result.output.index("resumed from")  # said before the steps
    # keys that change no weight (the checkpoints, the rows, a longer constant schedule): nothing said
    result = train(shards, out, "train.max_steps=6", "seed=1", "data.batch_size=3", "train.ema_decay=0.5",
                   "train.log_every=3", "train.keep_checkpoints=3")
    assert result.exit_code == 0 and warnings(result.output) == [], result.output


def test_a_longer_cosine_schedule_or_another_lr_is_said(two_steps, shards):
    # imported here: the rest of the file also runs on code without the module
    from defocuskit.train.resume import check_resume

    saved = two_steps / "checkpoints" / "step-0000002"
    recipe = load_recipe(TINY, [f"data.train={shards}", f"output_dir={two_steps}", "data.image_size=32",
                                "train.checkpoint_every=2", "train.log_every=1", "train.max_steps=2"])
    assert "optim.schedule 'constant' -> 'cosine'" in check_resume(saved, recipe)
    constant = load_recipe(TINY, [f"data.train={shards}", f"output_dir={two_steps}", "data.image_size=32",
                                  "optim.schedule=constant", "train.checkpoint_every=2", "train.log_every=1",
                                  "train.max_steps=9", "optim.lr=0.01"])
    line = check_resume(saved, constant)
    assert "optim.lr 0.001 -> 0.01" in line and "max_steps" not in line, line


def test_init_from_added_on_resume_is_refused_naming_it(two_steps, shards, tmp_path):
    """A resumed run continues the checkpoint's weights: an init_from it would ignore, while its export recorded
    the file as the weights' origin, is refused before any work."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    before = sorted(p.name for p in out.rglob("*"))
    result = train(shards, out, "train.max_steps=4", f"train.init_from={two_steps / 'model.safetensors'}")
    assert result.exit_code == 2, result.output
    assert "train.init_from=None" in result.output and "--no-resume" in result.output
    assert sorted(p.name for p in out.rglob("*")) == before


def test_a_renamed_checkpoint_folder_is_refused_not_taken_for_its_new_step(two_steps, shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    assert train(shards, out, "train.max_steps=4", "train.keep_checkpoints=2").exit_code == 0
    assert [s for s, _ in list_checkpoints(out)] == [2, 4]
    (out / "checkpoints" / "step-0000002").rename(out / "checkpoints" / "step-0000009")
    result = train(shards, out, "train.max_steps=12", "train.keep_checkpoints=2")
    assert result.exit_code == 2, result.output
    assert "step-0000009: holds the state of step 2, not 9" in result.output
    assert [s for s, _ in list_checkpoints(out)] == [4, 9]  # the step-4 checkpoint is not pruned


def test_keep_best_without_a_best_file_keeps_the_best_from_the_resume_on(shards, tmp_path):
    """keep_best turned on at a resume (or best.safetensors removed): the earlier validations' best weights are
    gone, so the run keeps the best of its own validations, saying so, instead of never writing best.safetensors."""
    out = tmp_path / "run"
    val = (f"data.val={shards}", "train.eval_every=2", "train.val_limit=2")
    assert train(shards, out, *val, "train.max_steps=2").exit_code == 0
    metrics = out / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    for row in rows:  # an earlier validation better than any to come (a peak, then overfitting)
        row["val_psnr"] = 99.0 if "val_psnr" in row else row.get("val_psnr")
    metrics.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    result = train(shards, out, *val, "train.max_steps=4", "train.keep_best=true")
    assert result.exit_code == 0, result.output
    assert (out / "best.safetensors").is_file(), result.output  # (before: never written)
    assert read_metadata(out / "best.safetensors")["best_step"] == "4"
    assert "best.safetensors is missing" in result.output and "99.00 dB" in result.output


def test_a_best_file_counts_where_metrics_jsonl_was_removed(shards, tmp_path):
    """best.safetensors records its PSNR: a resume without the metrics rows does not replace it with worse weights."""
    out = tmp_path / "run"
    val = (f"data.val={shards}", "train.eval_every=2", "train.val_limit=2", "train.keep_best=true")
    assert train(shards, out, *val, "train.max_steps=2").exit_code == 0
    tensors, meta = read_model_file(out / "best.safetensors")
    save_model(out / "best.safetensors", tensors, meta["method"], meta["recipe"],
               extra={"best_step": "2", "val_psnr": "99.0000"})  # a peak no later validation reaches
    (out / "metrics.jsonl").unlink()
    assert train(shards, out, *val, "train.max_steps=4").exit_code == 0
    assert read_metadata(out / "best.safetensors")["best_step"] == "2"


def test_a_best_file_of_a_step_after_the_resumed_checkpoint_is_replaced_by_the_resumed_weights(shards, tmp_path):
    """A run stopped after its step-4 validation wrote best.safetensors, before its step-4 checkpoint: resumed from
    step 2, whose validation was the best up to there, with steps that now score lower (a recipe changed, or a
    different replay), the stopped run's step-4 file stayed, named the best while metrics.jsonl said otherwise."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    val = (f"data.val={shards}", "train.eval_every=2", "train.val_limit=2", "train.keep_best=true",
           "train.keep_checkpoints=3")
    assert train(shards, out, *val, "train.max_steps=4").exit_code == 0
    shutil.rmtree(out / "checkpoints" / "step-0000004")  # stopped before its step-4 checkpoint and the export
    (out / "model.safetensors").unlink()
    tensors, meta = read_model_file(out / "best.safetensors")
    save_model(out / "best.safetensors", tensors, meta["method"], meta["recipe"],  # the stopped run's best: step 4
               extra={"best_step": "4", "val_psnr": "99.0000", "run_folder": str(out.resolve())})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # the step-2 validation: better than any to come
        row["val_psnr"] = 98.0 if row.get("val_psnr") is not None and row["step"] == 2 else row.get("val_psnr")
    (out / "metrics.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n"
                                               for r in rows))
    result = train(shards, out, *val, "train.max_steps=6")
    assert result.exit_code == 0, result.output
    meta = read_metadata(out / "best.safetensors")
    assert (meta["best_step"], meta["val_psnr"]) == ("2", "98.0000"), result.output
    assert "was of step 4, after step 2 this run resumes from" in result.output
    ema = load_file(str(out / "checkpoints" / "step-0000002" / "ema.safetensors"))
    best, _ = read_model_file(out / "best.safetensors")
    shadow = {k.removeprefix("shadow/"): v for k, v in ema.items() if k.startswith("shadow/")}
    assert shadow and all(best[k].equal(v) for k, v in shadow.items())  # the step-2 EMA weights


def test_a_run_stopped_during_a_validation_redoes_it_on_resume(shards, tmp_path, monkeypatch):
    """Ctrl-C (or a kill) while the step-4 validation runs: the resumed run still records that validation (its
    row, grid and best weights), as the uninterrupted run does; the step-4 checkpoint is saved after it."""
    import defocuskit.eval.validation as validation

    out = tmp_path / "run"
    val = (f"data.val={shards}", "train.eval_every=2", "train.val_limit=2", "train.keep_best=true")
    make = validation.make_validator

    def interrupted(recipe):
        validate = make(recipe)

        def once(state, step, accelerator):
            if step == 4:
                raise KeyboardInterrupt
            return validate(state, step, accelerator)
        return once

    monkeypatch.setattr(validation, "make_validator", interrupted)
    assert train(shards, out, *val, "train.max_steps=6").exit_code != 0
    monkeypatch.setattr(validation, "make_validator", make)
    assert train(shards, out, *val, "train.max_steps=6").exit_code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_psnr" in r] == [2, 4, 6]
    assert (out / "val" / "step-0000004.png").is_file()


def test_a_resume_refused_at_loading_leaves_the_run_folder_as_it_was(two_steps, shards, tmp_path):
    """A damaged newest checkpoint is refused when it is loaded; recipe.yaml was already rewritten with the new
    command's recipe by then, so the folder described a run that never happened."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    before = (out / "recipe.yaml").read_text()
    (_, newest), = list_checkpoints(out)[-1:]
    weights = sorted(p for p in newest.iterdir() if p.suffix == ".safetensors")[0]
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by a full disk
    result = train(shards, out, "train.max_steps=4", "seed=3")
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert (out / "recipe.yaml").read_text() == before


def test_the_key_log_of_a_resumed_run_is_the_uninterrupted_runs(shards, tmp_path, monkeypatch):
    """DEFOCUSKIT_LOG_KEYS: a run stopped after training steps 3 and 4 (its last checkpoint: step 2) logged their keys,
    and the resume logged them again as it trained them again; the log is cut back to the checkpoint's step, as
    metrics.jsonl is. A fresh start (--no-resume) logs from step 1 again."""
    import defocuskit.train.loop as loop

    monkeypatch.setenv("DEFOCUSKIT_LOG_KEYS", "1")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(shards, whole, "train.max_steps=4").exit_code == 0
    save = loop.save_checkpoint

    def stopped_at_4(accelerator, net, recipe, step):
        if step == 4:  # Ctrl-C after step 4 was trained, before its checkpoint
            raise KeyboardInterrupt
        return save(accelerator, net, recipe, step)

    monkeypatch.setattr(loop, "save_checkpoint", stopped_at_4)
    assert train(shards, split, "train.max_steps=6").exit_code == 130
    monkeypatch.setattr(loop, "save_checkpoint", save)
    assert train(shards, split, "train.max_steps=4").exit_code == 0

    def log(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "seen-keys-rank0.jsonl").read_text().splitlines()]

    assert [row["step"] for row in log(whole)] == [1, 2, 3, 4]
    assert log(split) == log(whole)
    assert train(shards, split, "train.max_steps=4", "--no-resume").exit_code == 0
    assert log(split) == log(whole)


def test_a_resume_with_another_grad_accum_still_steps_the_optimizer(two_steps, shards, tmp_path):
    """train.grad_accum 1 -> 3 on resume (said as a changed key): every step after it updates the weights. Before,
    Accelerate's own micro-batch counter, restored from the checkpoint (2), decided which micro-batch ended an
    accumulation (every third from 0): no step's last micro-batch did, so the optimizer skipped every step while the
    schedule, the EMA and the step counter went on, and the run exported the step-2 weights as step 4's."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    result = train(shards, out, "train.max_steps=4", "train.grad_accum=3", "train.keep_checkpoints=2")
    assert result.exit_code == 0, result.output
    assert "train.grad_accum 1 -> 3" in warnings(result.output)[0]
    before, after = (load_file(str(out / "checkpoints" / f"step-000000{s}" / "model.safetensors")) for s in (2, 4))
    assert max((after[k] - before[k]).abs().max().item() for k in before) > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["samples_per_step"]) for r in rows] == [(1, 2), (2, 2), (3, 6), (4, 6)]  # batch 2 x accum


def test_a_checkpoint_of_two_processes_resumed_by_one_says_so_only_where_it_trains(two_steps, shards, tmp_path):
    """The data position of a checkpoint written by 2 processes (as `accelerate launch --num_processes 2` writes it):
    a resume by 1 process that trains says the processes changed (not the shards); one with nothing left to train
    (max_steps reached) says nothing of a stream it never draws."""
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    state_file = out / "checkpoints" / "step-0000002" / "loop_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "data": {**state["data"], "world_size": 2}}))
    result = train(shards, out, "train.max_steps=2")
    assert result.exit_code == 0 and "training data differ" not in result.output, result.output
    result = train(shards, out, "train.max_steps=4")
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if "training data differ" in x]
    assert "(processes 2 -> 1)" in line and "from batch 2 of the new stream" in line, line


def test_mixed_precision_auto_resolved_otherwise_on_resume_is_said_with_both_values(two_steps, shards, tmp_path):
    """train.mixed_precision `auto` is resolved where the run starts (the launcher, `accelerate config`, the
    environment): a checkpoint written in fp32 resumed in bf16 (or the reverse) is not the exact continuation, and
    the one line of changed keys says so with what auto resolved to each time; the same resolution says nothing."""
    import subprocess
    import sys

    from defocuskit.train.resume import check_resume

    out = tmp_path / "run"
    shutil.copytree(two_steps, out)  # trained in fp32: auto resolved to "no"
    check = tmp_path / "step-0000002"
    shutil.copytree(out / "checkpoints" / "step-0000002", check)  # the resume below prunes it (keep_checkpoints: 1)
    env = {**os.environ, "ACCELERATE_MIXED_PRECISION": "bf16", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", TINY, f"data.train={shards}",
                           f"output_dir={out}", "data.image_size=32", "optim.schedule=constant",
                           "train.checkpoint_every=2", "train.log_every=1", "train.max_steps=4"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = warnings(proc.stdout + proc.stderr)
    assert "train.mixed_precision 'auto' (no) -> 'auto' (bf16)" in line and "from step 2" in line, line
    newest = out / "checkpoints" / "step-0000004"
    assert [json.loads((c / "loop_state.json").read_text())["mixed_precision"] for c in (check, newest)] == \
        ["no", "bf16"]
    recipe = load_recipe(TINY, [f"data.train={shards}", f"output_dir={out}", "data.image_size=32",
                                "optim.schedule=constant", "train.checkpoint_every=2", "train.log_every=1",
                                "train.max_steps=4"])
    assert check_resume(check, recipe, precision="no") is None
    recipe.train.mixed_precision = "bf16"  # the key changed, the precision too: said as before
    assert "train.mixed_precision 'auto' (no) -> 'bf16'" in check_resume(check, recipe, precision="bf16")
    recipe.train.mixed_precision = "no"  # the key changed, the precision not: the exact continuation
    assert check_resume(check, recipe, precision="no") is None


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_whose_checkpoints_were_deleted_is_refused_beside_the_earlier_export(shards, tmp_path):
    """No checkpoint left but the run's own export: a resume would start at step 0 and, stopped before its export,
    leave the earlier run's model beside its own checkpoints. Refused in one line naming --no-resume; nothing
    written. --no-resume starts over (removing that export), as it says."""
    out = tmp_path / "run"
    assert train(shards, out, "train.max_steps=2").exit_code == 0  # (a copied folder's export names its own)
    shutil.rmtree(out / "checkpoints")
    before = tree_bytes(out)
    result = train(shards, out, "train.max_steps=4", "seed=1")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert f"{out / 'model.safetensors'}: exported by an earlier run of this output_dir" in result.output
    assert "no checkpoint to resume from" in result.output and "--no-resume" in result.output
    assert tree_bytes(out) == before
    tensors, meta = read_model_file(out / "model.safetensors")  # the best weights of a run killed before a save
    save_model(out / "best.safetensors", tensors, meta["method"], meta["recipe"],
               extra={"best_step": "1", "val_psnr": "20.0000"})
    (out / "model.safetensors").unlink()
    assert "best.safetensors: exported by an earlier run" in train(shards, out, "train.max_steps=4").output
    assert train(shards, out, "train.max_steps=4", "seed=1", "--no-resume").exit_code == 0
    assert json.loads(read_metadata(out / "model.safetensors")["recipe"])["seed"] == 1
    assert not (out / "best.safetensors").exists()
