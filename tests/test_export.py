"""Exported models: safetensors with method + recipe metadata; round trip, wrong method, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.load import load_model
from defocuskit.io.modelfile import read_model_file, save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.ema import EMA

TINY = Path(__file__).resolve().parents[1] / "recipes" / "hidd-tiny.yaml"


@pytest.fixture()
def exported(tmp_path):
    recipe = load_recipe(TINY)
    torch.manual_seed(0)
    model = get_method("hidd").build(recipe.model, recipe.objective, True)
    path = tmp_path / "model.safetensors"
    save_model(path, model.state_dict(), "hidd", recipe_to_dict(recipe))
    return path, model, recipe


def test_round_trip(exported):
    path, model, recipe = exported
    tensors, meta = read_model_file(path)
    assert meta["method"] == "hidd" and meta["format"] == "defocuskit-model-1" and meta["defocuskit_version"]
    assert meta["recipe"] == recipe_to_dict(recipe)
    method, recipe2, loaded = load_model(path, expect_method="hidd")
    assert method.name == "hidd" and recipe2 == recipe and not loaded.training
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not list(path.parent.glob(".*tmp*"))  # written under a temporary name, then renamed


def test_wrong_method_names_file_and_methods(exported):
    path, _, _ = exported
    with pytest.raises(ValueError, match=r"model\.safetensors.*'hidd'.*'nafnet'"):
        load_model(path, expect_method="nafnet")


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        read_model_file(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        read_model_file(corrupt)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="no defocuskit metadata"):
        read_model_file(plain)
    release = tmp_path / "net_g.pth"  # a published checkpoint given where a model file goes (train.init_from=)
    torch.save({"w": torch.zeros(2)}, release)
    from defocuskit.io.modelfile import read_metadata

    with pytest.raises(ValueError, match=r"net_g\.pth: not a safetensors file: a zip archive or a pickle, as "
                                         r"torch\.save writes; .*defocuskit import-weights"):
        read_metadata(release)


def test_weights_that_do_not_fit_the_recipe(exported, tmp_path):
    path, model, recipe = exported
    tensors, meta = read_model_file(path)
    tensors.pop(next(iter(tensors)))
    broken = tmp_path / "broken.safetensors"
    save_model(broken, tensors, "hidd", meta["recipe"])
    with pytest.raises(ValueError, match="broken.safetensors"):
        load_model(broken)


def test_tied_weights_and_ema_export(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 3)
            self.b = torch.nn.Linear(3, 3)
            self.b.weight = self.a.weight
            self.register_buffer("count", torch.zeros(()))

    net = Tied()
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.a.weight.add_(1.0)
        net.count.fill_(7)
    ema.update(net)  # first update: decay min(0.5, 1/10) = 0.1
    avg = ema.averaged_state_dict(net)
    torch.testing.assert_close(avg["a.weight"], avg["b.weight"])
    torch.testing.assert_close(avg["a.weight"], net.a.weight.detach() - 0.1)
    assert avg["count"].item() == 7
    save_model(tmp_path / "tied.safetensors", avg, "hidd", {"method": "hidd"})
    tensors, meta = read_model_file(tmp_path / "tied.safetensors")
    assert set(tensors) == {"a.weight", "a.bias", "b.weight", "b.bias", "count"} and meta["recipe"] == {"method": "hidd"}
    # EMA state round trip (what Accelerate checkpoints)
    other = EMA(net, decay=0.5)
    other.load_state_dict(json.loads(json.dumps({k: v for k, v in ema.state_dict().items() if k in ("decay", "num_updates")}))
                          | {"shadow": ema.shadow, "buffers": ema.buffers})
    assert other.num_updates == 1 and torch.equal(other.shadow["a.weight"], ema.shadow["a.weight"])


def test_non_finite_weights_are_refused_naming_file_and_tensor(exported, tmp_path):
    path, model, recipe = exported
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() >= 3)
    state[name].view(-1)[:2] = float("nan")
    state[name].view(-1)[2] = float("inf")
    broken = tmp_path / "diverged.safetensors"
    save_model(broken, state, "hidd", recipe_to_dict(recipe))
    expect = rf"diverged\.safetensors: tensor '{name}' holds 3 NaN/inf values of {state[name].numel()};.*broken"
    with pytest.raises(ValueError, match=expect):
        load_model(broken)
    with pytest.raises(ValueError, match=expect):
        read_model_file(broken)
    other = next(k for k, v in state.items() if k != name and v.is_floating_point())
    state[other].view(-1)[0] = float("-inf")
    save_model(broken, state, "hidd", recipe_to_dict(recipe))
    with pytest.raises(ValueError, match=r"and 1 more tensor\)"):
        load_model(broken)


def test_model_file_is_readable_by_others_whatever_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o077)  # a private umask (as on many clusters) must not make a shared model unreadable
    try:
        save_model(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, "nafnet", {"method": "nafnet"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644


def test_a_malformed_recipe_in_the_metadata_is_one_line_naming_the_file(exported, tmp_path):
    """A recipe that is JSON but no mapping stopped load_model in AttributeError ('list' object has no attribute
    'get'), one nested too deeply in RecursionError; one that does not type named its key but not the file."""
    path, _, _ = exported
    tensors, meta = read_model_file(path)
    altered = tmp_path / "altered.safetensors"
    for recipe, said in (([1, 2], "not a mapping of sections (JSON array)"),
                         (None, "not a mapping of sections (JSON null)"),
                         ({**meta["recipe"], "seed": "x"}, "the recipe in its metadata: seed: expected an integer"),
                         ({**meta["recipe"], "bogus": 1}, "the recipe in its metadata: unknown recipe key 'bogus'")):
        save_model(altered, tensors, "hidd", recipe)
        with pytest.raises(ValueError) as info:
            load_model(altered)
        assert str(info.value).startswith(f"{altered}: ") and said in str(info.value)
    deep = {k: v for k, v in read_model_file(path)[1].items() if k != "recipe"}
    save_file(tensors, str(altered), metadata={**deep, "recipe": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError, match=f"^{altered}: the recipe in the metadata is nested too deeply$"):
        load_model(altered)
