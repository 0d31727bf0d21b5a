"""`train.init_from`: the weights of a model file start a run only where the file's recipe describes the recipe's
network; same-shaped tensors of another network (a key that changes what they compute) are refused, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.resume import check_resume


def export(recipe_name: str, path: Path, *overrides: str) -> Path:
    """A model file of `recipe_name`'s network (with `overrides`), random weights, as a run exports it."""
    recipe = load_recipe(recipe_name, [f"output_dir={path.parent}", *overrides])
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return path


def test_init_from_weights_of_another_network_with_the_same_tensors_is_refused_naming_the_key(tmp_path):
    """IFAN's released IAC filters with its first kernel in both directions (model.second_kernel: false, as the
    imported release); fine-tuning those weights with the recipe's second_kernel: true started silently from
    weights of every same shape that compute another filter."""
    released = export("ifan-tiny", tmp_path / "released" / "model.safetensors", "model.second_kernel=false")
    out = tmp_path / "tuned"
    said = (f"train.init_from {released}: its weights were trained for another network (model.second_kernel: False "
            "in the file, True in this recipe)")
    runner = CliRunner()
    dry = runner.invoke(app, ["train", "ifan-tiny", f"output_dir={out}", f"train.init_from={released}", "--dry-run"])
    assert dry.exit_code == 1 and said in dry.output and "Traceback" not in dry.output, dry.output
    shards = write_shards(tmp_path / "shards", n_shards=1, per_shard=4, paired=True)
    run = runner.invoke(app, ["train", "ifan-tiny", f"data.train={shards}", f"output_dir={out}", "train.max_steps=1",
                              f"train.init_from={released}"])
    assert run.exit_code == 1 and said in run.output and "Traceback" not in run.output, run.output
    assert not out.exists()
    ok = runner.invoke(app, ["train", "ifan-tiny", f"output_dir={out}", f"train.init_from={released}",
                             "model.second_kernel=false", "--dry-run"])
    assert ok.exit_code == 0, ok.output


def test_init_from_with_other_initialisation_or_dropout_is_accepted(tmp_path):
    """Keys that only shape how training starts or regularises (model.identity_init, dropout, pretrained parts) do
    not change what trained weights compute: a file that differs there starts the run."""
    trained = export("dncnn-tiny", tmp_path / "a" / "model.safetensors", "model.identity_init=false")
    result = CliRunner().invoke(app, ["train", "dncnn-tiny", f"output_dir={tmp_path / 'b'}", "model.identity_init=true",
                                      f"train.init_from={trained}", "--dry-run"])
    assert result.exit_code == 0, result.output


def test_init_from_weights_of_another_noise_schedule_is_refused_and_a_loss_weight_may_change(tmp_path):
    """RDDM's denoiser takes an integer timestep that indexes the noise schedule (objective.num_train_timesteps,
    beta_start, beta_end): weights trained under another schedule read the same t as another noise level, so a
    fine-tune from them is refused naming the key; objective.pre_weight only weighs a loss term: accepted."""
    runner = CliRunner()
    for override, said in (("objective.num_train_timesteps=1000", "objective.num_train_timesteps: 1000 in the file, "
                                                                   "1300 in this recipe"),
                           ("objective.beta_end=0.012", "objective.beta_end: 0.012 in the file, 0.02 in this recipe")):
        trained = export("rddm-tiny", tmp_path / override.split("=")[0] / "model.safetensors", override)
        result = runner.invoke(app, ["train", "rddm-tiny", f"output_dir={tmp_path / 'tuned'}", "--dry-run",
                                     f"train.init_from={trained}"])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert f"train.init_from {trained}: " in result.output and said in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    trained = export("rddm-tiny", tmp_path / "pre" / "model.safetensors", "objective.pre_weight=0.0")
    result = runner.invoke(app, ["train", "rddm-tiny", f"output_dir={tmp_path / 'tuned'}", "--dry-run",
                                 "objective.pre_weight=1.0", f"train.init_from={trained}"])
    assert result.exit_code == 0, result.output


def test_a_resume_under_another_noise_schedule_is_refused_naming_the_key(tmp_path):
    """The same keys on a resume: the checkpoint's weights read the timestep under its own schedule."""
    checkpoint = tmp_path / "checkpoints" / "step-0000002"
    checkpoint.mkdir(parents=True)
    saved = load_recipe("rddm-tiny", [f"output_dir={tmp_path}"])
    (checkpoint / "recipe.json").write_text(json.dumps(recipe_to_dict(saved)))
    now = load_recipe("rddm-tiny", [f"output_dir={tmp_path}", "objective.beta_start=0.0002"])
    with pytest.raises(ValueError, match=r"checkpoint has objective.beta_start=0.0001 but the recipe has "
                                         r"objective.beta_start=0.0002; use another output_dir or --no-resume"):
        check_resume(checkpoint, now)
    weighed = load_recipe("rddm-tiny", [f"output_dir={tmp_path}", "objective.pre_weight=0.5"])
    assert "objective.pre_weight 1.0 -> 0.5" in check_resume(checkpoint, weighed)


def test_weights_with_a_tensor_more_name_only_what_differs(tmp_path):
    """A file holding every tensor of the network and one more said "0 missing (e.g. [])": the message names only
    the kinds of difference there are."""
    import torch
    from safetensors.torch import load_file

    from defocuskit.train.checks import TrainingError
    from defocuskit.train.init import load_initial_weights

    path = export("nafnet-tiny", tmp_path / "a" / "model.safetensors")
    recipe = load_recipe("nafnet-tiny", [f"output_dir={tmp_path / 'b'}"])
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    tensors = {**load_file(str(path)), "extra.weight": torch.zeros(1)}
    save_model(path, tensors, recipe.method, recipe_to_dict(recipe))
    with pytest.raises(TrainingError) as exc:
        load_initial_weights(net, path, recipe.method, str(path))
    assert "1 unexpected (e.g. ['extra.weight'])" in str(exc.value) and "missing" not in str(exc.value), exc.value


def test_a_resume_keeps_the_init_from_it_started_from_and_does_not_need_the_file(tmp_path):
    # a resume recomputed the provenance from the file as it was then: gone, the run failed; re-exported, the model
    # recorded the new file's SHA-256, which the run never started from
    from defocuskit.io.hub import file_sha256
    from defocuskit.io.modelfile import read_metadata

    init = export("dncnn-tiny", tmp_path / "pre" / "model.safetensors")
    started_from = file_sha256(init)
    shards = write_shards(tmp_path / "shards", n_shards=1, per_shard=4, paired=True)
    out = tmp_path / "tuned"
    args = ["train", "dncnn-tiny", f"data.train={shards}", f"output_dir={out}", "train.checkpoint_every=2",
            f"train.init_from={init}", f"data.val={shards}", "train.eval_every=2", "train.keep_best=true",
            "train.val_limit=2"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "train.max_steps=2"])
    assert first.exit_code == 0, first.output
    init.unlink()
    resumed = runner.invoke(app, [*args, "train.max_steps=4"])
    assert resumed.exit_code == 0 and "resumed from" in resumed.output, resumed.output
    assert read_metadata(out / "model.safetensors")["init_from_sha256"] == started_from
    assert read_metadata(out / "best.safetensors")["init_from_sha256"] == started_from  # it had none
    export("dncnn-tiny", init, "seed=7")  # another file at the same path: its SHA-256 is not what the run started from
    assert file_sha256(init) != started_from
    again = runner.invoke(app, [*args, "train.max_steps=6"])
    assert again.exit_code == 0, again.output
    assert read_metadata(out / "model.safetensors")["init_from_sha256"] == started_from


def test_an_init_from_file_changed_after_its_check_is_refused(tmp_path):
    from defocuskit.io.hub import file_sha256
    from defocuskit.train.checks import TrainingError
    from defocuskit.train.init import load_initial_weights

    init = export("dncnn-tiny", tmp_path / "pre" / "model.safetensors")
    recipe = load_recipe("dncnn-tiny", [f"output_dir={tmp_path / 'run'}"])
    net = get_method("dncnn").build(recipe.model, recipe.objective, False)
    with pytest.raises(TrainingError, match=r"changed since the run checked it \(sha256 000000000000\.\.\.\)"):
        load_initial_weights(net, init, "dncnn", str(init), recipe, sha256="0" * 64)
    load_initial_weights(net, init, "dncnn", str(init), recipe, sha256=file_sha256(init))
