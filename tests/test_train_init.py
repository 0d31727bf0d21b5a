"""`train.init_from`: the weights of a model file start a run only where the file's recipe describes the recipe's
network; same-shaped tensors of another network (a key that changes what they compute) are refused, naming it."""

from __future__ import annotations

from pathlib import Path

from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe


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
