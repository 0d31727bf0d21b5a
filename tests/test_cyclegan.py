"""CycleGAN: the released architecture's sizes, two optimizers both stepped and both restored, any image size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_tiny_recipes import accelerate_train
from test_train import write_shards

from defocuskit.inference.load import load_model
from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "cyclegan-tiny.yaml")
METHOD = get_method("cyclegan")


def test_paper_size_networks_match_the_released_counts():
    recipe = load_recipe(REPO / "recipes" / "cyclegan.yaml")
    net = METHOD.build(recipe.model, recipe.objective, True)
    count = {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}
    # the released code prints 11.378 M for resnet_9blocks and 2.765 M for the basic PatchGAN (3 channels)
    assert count == {"g_blur2sharp": 11_378_179, "g_sharp2blur": 11_378_179, "d_blur": 2_764_737, "d_sharp": 2_764_737}
    gen = {id(p) for p in METHOD.phase_parameters(net, "generator")}
    dis = {id(p) for p in METHOD.phase_parameters(net, "discriminator")}
    assert not gen & dis and len(gen) + len(dis) == len(list(net.parameters()))


def test_restore_any_size_and_range():
    recipe = load_recipe(TINY)
    net = METHOD.build(recipe.model, recipe.objective, False).eval()
    blur = torch.rand(1, 3, 37, 53)
    out = METHOD.restore(net, blur, RestoreContext(METHOD.SamplerConfig(), recipe.objective))
    assert out.shape == blur.shape and 0 <= out.min() and out.max() <= 1


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=2, per_shard=6, paired=True)


def _run(shards: str, out: Path, steps: int):
    return load_recipe(TINY, [f"data.train={shards}", f"output_dir={out}", f"train.max_steps={steps}",
                              "train.checkpoint_every=4", "train.keep_checkpoints=3", "train.log_every=1"])


def _curve(out: Path) -> dict[int, dict[str, float]]:
    return {r["step"]: r["losses"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_both_optimizers_step_and_are_restored_on_resume(shards, tmp_path):
    recipe = load_recipe(TINY)
    init = METHOD.build(recipe.model, recipe.objective, True).state_dict()  # seed 0, as the loop builds it
    full = tmp_path / "full"
    train(_run(shards, full, 8))
    trained = load_file(str(full / "model.safetensors"))
    for prefix in ("g_blur2sharp", "g_sharp2blur", "d_blur", "d_sharp"):  # every network moved
        keys = [k for k in trained if k.startswith(prefix) and k.endswith("weight")]
        assert any(not torch.equal(trained[k], init[k]) for k in keys), prefix
    ckpt = dict(list_checkpoints(full))[8]
    assert (ckpt / "optimizer.bin").is_file() and (ckpt / "optimizer_1.bin").is_file()
    state = json.loads((ckpt / "loop_state.json").read_text())
    assert {k: v["last_epoch"] for k, v in state["schedulers"].items()} == {"generator": 8, "discriminator": 8}

    # stopped at step 4, resumed to 8: the same curves of both phases and the same weights, to the bit
    part = tmp_path / "part"
    train(_run(shards, part, 4))
    train(_run(shards, part, 8))
    a, b = _curve(full), _curve(part)
    assert sorted(b) == list(range(1, 9)) and set(a[8]) == {"generator", "discriminator"}
    for s in range(1, 9):
        for phase in ("generator", "discriminator"):
            assert a[s][phase] == pytest.approx(b[s][phase], rel=1e-6, abs=1e-7), (s, phase)
    resumed = load_file(str(part / "model.safetensors"))
    assert all(torch.equal(trained[k], resumed[k]) for k in trained)


def test_resume_without_the_discriminator_optimizer_state_differs(shards, tmp_path):
    """The check above would catch a discriminator optimizer that is not restored: resetting it changes the run."""
    full, part = tmp_path / "full", tmp_path / "part"
    train(_run(shards, full, 8))
    train(_run(shards, part, 4))
    ckpt = dict(list_checkpoints(part))[4]
    fresh = torch.load(ckpt / "optimizer_1.bin", weights_only=True)
    fresh["state"] = {}  # Adam moments of the discriminators forgotten
    torch.save(fresh, ckpt / "optimizer_1.bin")
    train(_run(shards, part, 8))
    a, b = _curve(full), _curve(part)
    assert any(abs(a[s]["discriminator"] - b[s]["discriminator"]) > 1e-6 for s in range(5, 9))


def test_two_cpu_processes_and_deblur(tmp_path):
    shards = write_shards(tmp_path / "shards", n_shards=2, per_shard=4, paired=True, seed=5)
    out = tmp_path / "ddp"
    accelerate_train("cyclegan-tiny.yaml", out, f"data.train={shards}", "train.max_steps=4")
    method, recipe, model = load_model(out / "model.safetensors")
    assert method.name == "cyclegan" and recipe.method == "cyclegan"
    out_img = method.restore(model, torch.rand(1, 3, 21, 30), RestoreContext(recipe.sampler, recipe.objective))
    assert out_img.shape == (1, 3, 21, 30) and torch.isfinite(out_img).all()
