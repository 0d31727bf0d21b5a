"""The loop's LR schedules: linear_decay (CycleGAN's: constant, then linearly to 0 at max_steps) with its
optim.decay_start checked, and a run under it stopped and resumed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import OptimConfig
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.optim import lr_factor

runner = CliRunner()


def test_linear_decay_holds_then_falls_to_zero_at_max_steps():
    from diffusers.optimization import get_linear_schedule_with_warmup

    for start in (4, 0.4):  # a step, or a fraction of max_steps
        f = lr_factor(OptimConfig(schedule="linear_decay", decay_start=start), max_steps=10)
        assert [f(s) for s in range(11)] == pytest.approx([1, 1, 1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0])
        # past the start, diffusers' linear decay with that many warm-up steps
        ref = get_linear_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1), 4, 10).lr_lambdas[0]
        assert [f(s) for s in range(4, 11)] == pytest.approx([ref(s) for s in range(4, 11)])
    f = lr_factor(OptimConfig(schedule="linear_decay", decay_start=0.5, warmup_steps=2), max_steps=7)  # 3.5 -> 3
    assert [f(s) for s in range(8)] == pytest.approx([0.5, 1, 1, 1, 0.75, 0.5, 0.25, 0])
    recipe = load_recipe("cyclegan")  # the paper's: 2e-4 for the first half, then linearly to 0
    o, t = recipe.optim, recipe.train
    assert (o.schedule, o.decay_start, o.lr, t.max_steps) == ("linear_decay", 0.5, 2e-4, 200_000)
    f = lr_factor(o, t.max_steps)
    assert [f(s) for s in (0, 100_000, 150_000, 199_999, 200_000)] == pytest.approx([1, 1, 0.5, 1e-5, 0])


@pytest.mark.parametrize("overrides, said", [
    (["optim.schedule=linear_decay"], "optim.decay_start: optim.schedule linear_decay needs the step"),
    (["optim.schedule=linear_decay", "optim.decay_start=1.0"], "optim.decay_start: a fraction of train.max_steps in "
                                                               "[0, 1) (a float, e.g. 0.5) or a step below "
                                                               "train.max_steps 20 (an integer), got 1.0"),
    (["optim.schedule=linear_decay", "optim.decay_start=20"], "a step below train.max_steps 20 (an integer), got 20"),
    (["optim.schedule=linear_decay", "optim.decay_start=-1"], "got -1"),
    (["optim.schedule=linear_decay", "optim.decay_start=.nan"], "got nan"),
    (["optim.schedule=linear_decay", "optim.decay_start=1", "optim.warmup_steps=2"],
     "optim.decay_start: the decay would start at step 1, inside the warm-up (optim.warmup_steps 2)"),
    (["optim.decay_start=0.5"], "optim.decay_start: only optim.schedule linear_decay reads it (the schedule is "
                                "'constant')"),
])
def test_decay_start_is_refused_in_one_line_naming_it(tmp_path, overrides, said):
    result = runner.invoke(app, ["train", "cyclegan-tiny", "--dry-run", f"output_dir={tmp_path / 'x'}", *overrides])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    ok = runner.invoke(app, ["train", "cyclegan-tiny", "--dry-run", f"output_dir={tmp_path / 'x'}",
                             "optim.schedule=linear_decay", "optim.decay_start=0.5"])
    assert ok.exit_code == 0 and "decay_start: 0.5" in ok.output, ok.output


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=1, per_shard=8, paired=True)


def train(recipe: str, shards: str, out: Path, *extra: str):
    result = runner.invoke(app, ["train", recipe, f"data.train={shards}", f"output_dir={out}", "data.image_size=32",
                                 "train.checkpoint_every=1", "train.keep_checkpoints=3", "train.log_every=1", *extra])
    assert result.exit_code == 0, result.output
    return result


def loop_state(out: Path, step: int) -> dict:
    return json.loads((out / "checkpoints" / f"step-{step:07d}" / "loop_state.json").read_text())


def tensors(out: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step-{step:07d}" / name))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_linear_decay_run_stopped_and_resumed_is_the_same_run(shards, tmp_path):
    run = ("optim.schedule=linear_decay", "optim.decay_start=0.5", "train.max_steps=4")
    full, part = tmp_path / "full", tmp_path / "part"
    train("nafnet-tiny", shards, full, *run)
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-0000004")
    shutil.rmtree(part / "checkpoints" / "step-0000003")
    assert "resumed from" in train("nafnet-tiny", shards, part, *run).output
    assert same(load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors")))
    rows = [[json.loads(line)["lr"] for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (full, part)]
    assert rows[0] == rows[1] == pytest.approx([0.5e-3, 1e-3, 1e-3, 0.5e-3])  # warm-up 2, decay from step 2
    # a longer run decays later and slower from the checkpoint on: not the exact continuation, said
    result = train("nafnet-tiny", shards, part, *run[:2], "train.max_steps=6")
    assert "train.max_steps 4 -> 6" in result.output and "from step 4" in result.output, result.output
