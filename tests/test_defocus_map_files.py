"""The dilated defocus-map estimator in files: the redesigned default (band energies, residual blocks at 1/4
resolution) and the former layout (issue 20) load as defocus-map models and as RDDM's frozen estimator, with
and without the blur-detection head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.load import load_model
from defocuskit.io.modelfile import save_model
from defocuskit.methods import defocus_map, get_method
from defocuskit.methods.rddm import ObjectiveConfig as RddmObjective
from defocuskit.methods.rddm import load_map_estimator, upgrade_recipe
from defocuskit.methods.recipes import resolve_recipe

FORMER = {"arch": "dilated", "width": 8, "dilations": [1, 2, 4, 8, 16, 1], "features": "contrast", "downsample": 1,
          "residual": False}
RDDM_TINY = {
    "pre_width": 8, "pre_enc_blocks": [1, 1], "pre_dec_blocks": [1, 1],
    "pre_enc_dw": ["conv", "conv"], "pre_dec_dw": ["conv", "conv"],
    "width": 8, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "enc_dw": ["conv", "conv"], "dec_dw": ["conv", "conv"],
    "resnet_hidden_sizes": [16, 32, 64], "resnet_depths": [1, 1, 1], "resnet_embedding_size": 8,
    "resnet_pretrained": None,
}


def _write(path: Path, model_section: dict, drop: tuple[str, ...] = ()) -> tuple[Path, torch.nn.Module]:
    """A defocus-map file of `model_section`, its recipe without the model keys `drop` (as an older version wrote)."""
    recipe = resolve_recipe({"method": "defocus-map", "model": model_section})
    torch.manual_seed(0)
    net = get_method("defocus-map").build(recipe.model, recipe.objective, False).eval()
    raw = recipe_to_dict(recipe)
    raw["model"] = {k: v for k, v in raw["model"].items() if k not in drop}
    save_model(path, net.state_dict(), "defocus-map", raw)
    return path, net


def test_a_former_dilated_file_loads_with_its_layout(tmp_path: Path) -> None:
    file, net = _write(tmp_path / "former.safetensors", FORMER, drop=("features", "downsample", "residual"))
    _, recipe, loaded = load_model(file)
    assert (recipe.model.features, recipe.model.downsample, recipe.model.residual) == ("contrast", 1, False)
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    estimator, cfg = load_map_estimator(str(file))  # RDDM reads the same file's recipe
    assert cfg.features == "contrast" and not cfg.residual
    with torch.no_grad():
        torch.testing.assert_close(estimator(x), net(x))
    # an RDDM file that recorded such an estimator (model.map_model) is read in today's keys too
    old = {"method": "rddm", "model": {"map_model": {k: v for k, v in FORMER.items()
                                                     if k not in ("features", "downsample", "residual")}}}
    assert upgrade_recipe(old)["model"]["map_model"] == FORMER
    assert defocus_map.upgrade_model_section({"arch": "segformer"}) == {"arch": "segformer"}


@pytest.mark.parametrize("head", ["coc", "blur"])
def test_rddm_trains_on_the_redesigned_estimator(tmp_path: Path, head: str) -> None:
    section = {"arch": "dilated", "width": 8, "blur_head": head == "blur"}
    file, net = _write(tmp_path / "map.safetensors", section)
    method = get_method("rddm")
    recipe = resolve_recipe({"method": "rddm", "model": {"map_checkpoint": str(file), "map_head": head, **RDDM_TINY}})
    torch.manual_seed(1)
    model = method.build(recipe.model, recipe.objective, True).train()
    assert recipe.model.map_model.features == "bands" and recipe.model.map_model.downsample == 4
    assert all(not p.requires_grad for p in model.map_estimator.parameters()) and not model.map_estimator.training
    sharp = torch.rand(2, 3, 32, 32)
    batch = {"blur": torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), "sharp": sharp}
    loss = method.loss(model, batch, RddmObjective())
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in model.map_estimator.parameters())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = net(x) if head == "coc" else net.blur_logit(x)
        got = model.map_estimator(x) if head == "coc" else model.map_estimator.blur_logit(x)
    torch.testing.assert_close(got, want)
