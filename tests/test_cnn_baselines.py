"""DnCNN and FFDNet, the HIDD paper's CNN baselines: paper-size networks, residual learning, the level map
(really used, and required), odd sizes, and the tiny recipes trained through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestOptions
from defocuskit.inference.load import load_model
from defocuskit.inference.restore import restore_batch, restore_image
from defocuskit.io.modelfile import read_model_file
from defocuskit.methods import dncnn, ffdnet, get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.recipes import load_recipe, resolve_recipe
from defocuskit.train.checks import check_recipe

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = {"dncnn": dncnn.ModelConfig(depth=4, features=8), "ffdnet": ffdnet.ModelConfig(depth=4, features=8)}


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, bias: bool = True) -> int:
    """Parameters of a 3x3 convolution."""
    return 9 * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    """Parameters of a BatchNorm (scale and shift; running statistics are buffers)."""
    return 2 * c


def _tiny(name: str, **changes: object) -> tuple:
    method = get_method(name)
    cfg = method.ModelConfig(**{**vars(TINY[name]), **changes})
    torch.manual_seed(0)
    return method, method.build(cfg, method.ObjectiveConfig(), True)


@pytest.mark.parametrize("channels", [1, 3])
def test_dncnn_paper_size(channels: int) -> None:
    net = get_method("dncnn").build(dncnn.ModelConfig(channels=channels), dncnn.ObjectiveConfig(), True)
    # Zhang et al. 2017, Sec. III: Conv+ReLU, 15 x Conv+BN+ReLU, Conv; 64 filters of 3x3 (no bias before BN)
    expected = conv(channels, 64) + 15 * (conv(64, 64, bias=False) + bn(64)) + conv(64, channels)
    assert _count(net) == expected and round(expected / 1e6, 2) == 0.56
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 17 and all(m.kernel_size == (3, 3) for m in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 15


@pytest.mark.parametrize("channels, depth, features", [(3, 12, 96), (1, 15, 64)])
def test_ffdnet_paper_size(channels: int, depth: int, features: int) -> None:
    # Zhang et al. 2018, Sec. III-A: 4C sub-images + the level map in, 4C out; colour 12 x 96, grayscale 15 x 64
    cfg = ffdnet.ModelConfig(channels=channels, depth=depth, features=features)
    net = get_method("ffdnet").build(cfg, ffdnet.ObjectiveConfig(), True)
    expected = conv(4 * channels + 1, features) + (depth - 2) * (conv(features, features, bias=False) + bn(features)) \
        + conv(features, 4 * channels)
    assert _count(net) == expected
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == depth
    default = ffdnet.ModelConfig()
    assert (default.channels, default.depth, default.features, default.residual) == (3, 12, 96, True)


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_restore_keeps_odd_sizes_dtype_and_range(name: str, dtype: torch.dtype) -> None:
    method, model = _tiny(name)
    blur = torch.rand(2, 3, 37, 53, dtype=dtype)
    coc = torch.rand(2, 1, 37, 53, dtype=dtype) * 4
    out = restore_batch(method, model, blur, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig(), conditions={"coc": coc}), model.channels)
    assert out.shape == blur.shape and out.dtype == dtype and out.min() >= 0 and out.max() <= 1
    # BatchNorm in eval mode: an image restored alone comes out the same; the model's mode is given back
    alone = restore_batch(method, model, blur[1:], RestoreContext(method.SamplerConfig(), method.ObjectiveConfig(),
                           conditions={"coc": coc[1:]}), model.channels)
    torch.testing.assert_close(alone, out[1:], atol=1e-5, rtol=0)  # float32 network, other batch size
    assert model.training


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])
def test_grayscale_model_restores_colour_channel_by_channel(name: str) -> None:
    method, model = _tiny(name, channels=1)
    blur, coc = torch.rand(1, 3, 21, 19), torch.full((1, 1, 21, 19), 2.0)
    sampler, obj = method.SamplerConfig(), method.ObjectiveConfig()
    out = restore_batch(method, model, blur, RestoreContext(sampler, obj, conditions={"coc": coc}), model.channels)
    green = restore_batch(method, model, blur[:, 1:2], RestoreContext(sampler, obj, conditions={"coc": coc}), model.channels)
    assert out.shape == blur.shape
    torch.testing.assert_close(out[:, 1:2], green)


def test_dncnn_residual_learning() -> None:
    method, model = _tiny("dncnn")
    assert method.data == "paired" and method.SamplerConfig().needs() == frozenset()
    y, x = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)
    torch.testing.assert_close(model(y), y - model.body(y))  # output = input - net(input)
    # the loss is the paper's residual MSE: R(y) against y - x (as a mean)
    loss = method.loss(model, {"blur": y, "sharp": x}, method.ObjectiveConfig())
    torch.testing.assert_close(loss, (model.residual(y) - (y - x)).square().mean())
    with torch.no_grad():  # a network that predicts no residual returns its input
        model.body[-1].weight.zero_()
        model.body[-1].bias.zero_()
    assert torch.equal(restore_batch(method, model, y, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig()), model.channels), y)
    with pytest.raises(ValueError, match="channels"):  # the loss sees data.channels images: checked once, before
        check_recipe(resolve_recipe({"method": "dncnn", "data": {"channels": 1}}), method)


def test_ffdnet_uses_the_level_map() -> None:
    method, model = _tiny("ffdnet", residual=False, identity_init=False)  # the paper's variant, randomly initialised
    sampler, obj = method.SamplerConfig(), method.ObjectiveConfig()
    blur = torch.rand(1, 3, 33, 41)
    sharp_scene = restore_batch(method, model, blur, RestoreContext(sampler, obj, conditions={"coc": torch.zeros(1, 1, 33, 41)}), model.channels)
    blurred_scene = restore_batch(method, model, blur, RestoreContext(sampler, obj, conditions={"coc": torch.full((1, 1, 33, 41), 8.0)}), model.channels)
    assert not torch.allclose(sharp_scene, blurred_scene)
    # the map is coc / coc_scale and spatially variant: a change on the left leaves the far right alone
    coc = torch.zeros(1, 1, 33, 41)
    coc[..., :10] = 8.0
    assert torch.equal(model.level(coc, blur), coc / model.coc_scale)
    model.eval()
    with torch.no_grad():
        base = model(blur, torch.zeros_like(coc))
        moved = model(blur, model.level(coc, blur))
    assert not torch.allclose(moved[..., :10], base[..., :10])
    torch.testing.assert_close(moved[..., 24:], base[..., 24:])  # 4 layers of 3x3 at half resolution reach 8 px
    # the default (residual + identity_init, not the paper): the untrained net returns its input
    _, residual = _tiny("ffdnet", residual=True, identity_init=True)
    assert torch.equal(restore_batch(method, residual, blur, RestoreContext(sampler, obj, conditions={"coc": coc}), residual.channels), blur)
    with pytest.raises(ValueError, match="identity_init needs residual"):
        _tiny("ffdnet", residual=False, identity_init=True)


def test_ffdnet_needs_a_coc_map() -> None:
    method, model = _tiny("ffdnet")
    assert method.data == "coc" and ffdnet.SamplerConfig().needs() == {"coc"}
    blur, obj = torch.rand(2, 3, 16, 16), ffdnet.ObjectiveConfig()
    with pytest.raises(ValueError, match=r"needs conditions\['coc'\].*--coc"):
        restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(), obj), model.channels)
    with pytest.raises(ValueError, match="does not fit"):
        restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(), obj, conditions={"coc": torch.zeros(2, 1, 8, 8)}), model.channels)
    with pytest.raises(ValueError, match="coc"):
        method.loss(model, {"blur": blur, "sharp": blur}, obj)
    # sampler.level_map none: a zero map, no condition needed
    assert ffdnet.SamplerConfig(level_map="none").needs() == frozenset()
    zero = restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(level_map="none"), obj), model.channels)
    torch.testing.assert_close(zero, restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(), obj,
                                                    conditions={"coc": torch.zeros(2, 1, 16, 16)}), model.channels))


def test_ffdnet_without_level_map() -> None:
    method, model = _tiny("ffdnet", level_map="none")
    blur, obj = torch.rand(2, 3, 16, 16), ffdnet.ObjectiveConfig()
    out = restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(), obj), model.channels)  # no conditions needed
    assert out.shape == blur.shape
    assert method.loss(model, {"blur": blur, "sharp": blur.flip(-1)}, obj).item() > 0  # trains without batch["coc"]
    with pytest.raises(ValueError, match="trained without a level map"):
        restore_batch(method, model, blur, RestoreContext(ffdnet.SamplerConfig(level_map="coc"), obj,
                       conditions={"coc": torch.zeros(2, 1, 16, 16)}), model.channels)
    # a model file's recipe says what restore feeds: needs() follows model.level_map
    for level_map, needed in (("none", frozenset()), ("coc", frozenset({"coc"}))):
        recipe = load_recipe(REPO / "recipes" / "ffdnet-tiny.yaml", [f"model.level_map={level_map}"])
        assert recipe.sampler.level_map is None
        read_back = resolve_recipe(method.upgrade_recipe(recipe_to_dict(recipe)))
        assert read_back.sampler.level_map == level_map and read_back.sampler.needs() == needed
    with pytest.raises(ValueError, match="model.level_map"):
        ffdnet.ModelConfig(level_map="sigma")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synthetic shards: blur.png, sharp.png and coc.png (48 px scenes at f/1.4)."""
    out = tmp_path_factory.mktemp("cnn") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(1.4,)), progress=False)
    return out


@pytest.mark.parametrize("name", ["dncnn", "ffdnet"])
def test_tiny_recipe_trains_through_cli_and_exports(name: str, shards: Path, tmp_path: Path) -> None:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "defocuskit", "train", str(REPO / "recipes" / f"{name}-tiny.yaml"),
           f"data.train={shards}", f"output_dir={out}", "train.log_every=1"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    tensors, meta = read_model_file(out / "model.safetensors")
    assert meta["method"] == name and meta["recipe"]["method"] == name
    # BatchNorm's running statistics travel in the file (the EMA copies buffers) and were updated by training
    running_var = [v for k, v in tensors.items() if k.endswith("running_var")]
    assert running_var and not all(torch.equal(v, torch.ones_like(v)) for v in running_var)
    # the exported model restores an odd-sized image end to end (ffdnet with a CoC map)
    method, recipe, model = load_model(out / "model.safetensors")
    image = np.random.default_rng(0).random((37, 53, 3)).astype(np.float32)
    coc = np.full((37, 53), 2.0, np.float32) if "coc" in recipe.sampler.needs() else None
    assert (coc is not None) == (name == "ffdnet")
    result = restore_image(method, recipe, model, image, progress=False, coc=coc)
    assert result.shape == image.shape and result.min() >= 0 and result.max() <= 1


@pytest.mark.parametrize("name", ["dncnn", "ffdnet", "cyclegan"])
def test_untrained_baselines_return_their_input_by_default(name: str) -> None:
    """The sound defaults start at the identity (the papers' inits are options): an untrained net cannot lose to its input."""
    method = get_method(name)
    net = method.build(method.ModelConfig(channels=3, **({"depth": 4, "features": 8} if name != "cyclegan" else
                                                        {"ngf": 8, "ndf": 8, "n_blocks": 1})),
                       method.ObjectiveConfig(), False)
    blur = torch.rand(1, 3, 24, 36)
    out = restore_batch(method, net, blur, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig(),
                         conditions={"coc": torch.full((1, 1, 24, 36), 3.0)}), net.channels)
    torch.testing.assert_close(out, blur, atol=1e-6, rtol=0)
    paper = {"dncnn": {"identity_init": False}, "ffdnet": {"residual": False, "identity_init": False},
             "cyclegan": {"global_residual": False}}[name]
    torch.manual_seed(0)
    released = method.build(method.ModelConfig(channels=3, **({"depth": 4, "features": 8} if name != "cyclegan" else
                                                             {"ngf": 8, "ndf": 8, "n_blocks": 1}), **paper),
                            method.ObjectiveConfig(), False)
    out = restore_batch(method, released, blur, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig(),
                         conditions={"coc": torch.full((1, 1, 24, 36), 3.0)}), released.channels)
    assert (out - blur).abs().mean() > 0.01
