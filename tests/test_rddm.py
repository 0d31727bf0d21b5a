"""RDDM: pre-deblur, guidance, residual denoiser, residual DDIM, the method end to end and its bad inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from defocuskit.diffusion.ddim_residual import make_scheduler, q_sample, sample_residual_ddim
from defocuskit.methods import defocus_map, get_method
from defocuskit.methods.rddm import ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.models.rddm import RDDM, GuidanceNet, PreDeblur, ResidualDenoiser
from defocuskit.train.export import load_model, save_model
from defocuskit.train.recipe import recipe_to_dict, resolve_recipe

MAP_TINY = {
    "hidden_sizes": [8, 16, 32, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1],
    "decoder_hidden_size": 16, "drop_path_rate": 0.0,
}
RDDM_TINY = {
    "pre_width": 8, "pre_enc_blocks": [1, 1], "pre_dec_blocks": [1, 1], "width": 8,
    "enc_blocks": [1, 1], "dec_blocks": [1, 1], "guidance_channels": 8,
    "resnet_hidden_sizes": [16, 32, 64], "resnet_depths": [1, 1, 1], "resnet_embedding_size": 8,
}


def _write_model(path: Path, method: str, model_section: dict) -> Path:
    recipe = resolve_recipe({"method": method, "model": model_section})
    m = get_method(method)
    torch.manual_seed(0)
    net = m.build(recipe.model, recipe.objective, False)
    save_model(path, net.state_dict(), method, recipe_to_dict(recipe))
    return path




@pytest.fixture(scope="module")
def map_file(tmp_path_factory) -> Path:
    return _write_model(tmp_path_factory.mktemp("map") / "defocus-map.safetensors", "defocus-map", MAP_TINY)


def _cfg(map_file: Path | str, **kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig(map_checkpoint=str(map_file), **RDDM_TINY), **kw)


def _guidance() -> GuidanceNet:
    return GuidanceNet(8, [16, 32, 64], [1, 1, 1], 8)


def test_pre_deblur_works_at_one_eighth_any_size():
    torch.manual_seed(0)
    pre = PreDeblur(3, 8, [1, 1], 1, [1, 1], scale=8, deform_levels=1)
    blur = torch.rand(2, 3, 40, 52, requires_grad=True)
    out = pre(blur, torch.rand(2, 1, 40, 52))
    assert out.shape == blur.shape
    assert pre.net.intro.in_channels == 4 * 64  # RGB + map, 8x8 pixel-unshuffled
    out.mean().backward()
    assert blur.grad is not None and pre.net.intro.weight.grad.abs().sum() > 0
    with torch.no_grad():
        pre.net.ending.weight.zero_()
        pre.net.ending.bias.zero_()
    assert torch.allclose(pre(blur, torch.rand(2, 1, 40, 52)), blur)  # global residual around the 1/8 net


def test_guidance_and_denoiser_forward_backward():
    torch.manual_seed(1)
    guidance = _guidance()
    g = guidance(torch.rand(2, 3, 32, 40))
    assert g.shape == (2, 8, 8, 10)  # ResNet stage 1 resolution (1/4)
    assert len(guidance.resnet.encoder.stages) == 3
    den = ResidualDenoiser(3, 8, [1, 1], 1, [1, 1], guidance_channels=8)
    cond = torch.rand(2, 4, 30, 34)
    r_t = torch.randn(2, 3, 30, 34)
    t = torch.tensor([0, 1299])
    out = den(r_t, t, cond, guidance(cond[:, :3]))
    assert out.shape == r_t.shape
    out.square().mean().backward()
    assert guidance.fuse[0].weight.grad.abs().sum() > 0
    assert den.t_proj[0].weight.grad.abs().sum() > 0 and den.g_proj[-1].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in guidance.resnet.parameters())
    with torch.no_grad():
        g = guidance(cond[:, :3])
        # the timestep and the guidance both matter
        assert not torch.allclose(den(r_t, torch.tensor([5, 5]), cond, g), out)
        assert not torch.allclose(den(r_t, t, cond, torch.zeros_like(g)), out)
    frozen = GuidanceNet(8, [16, 32, 64], [1, 1, 1], 8, resnet_trainable=False).train()
    assert not frozen.resnet.training and frozen.fuse.training
    assert not any(p.requires_grad for p in frozen.resnet.parameters())


def test_q_sample_matches_diffusers_add_noise():
    r0 = torch.randn(3, 3, 8, 8)
    noise = torch.randn_like(r0)
    t = torch.tensor([0, 650, 1299])
    ref = make_scheduler().add_noise(r0, noise, t)
    assert torch.allclose(q_sample(r0, t, noise), ref, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_sampler_recovers_residual_of_an_oracle(steps):
    torch.manual_seed(2)
    true = torch.randn(2, 3, 8, 8)
    cond = torch.rand(2, 4, 8, 8)
    seen, progress = [], []

    def oracle(r_t, t, c):
        seen.append(int(t[0]))
        assert c is cond and r_t.shape == true.shape
        return true

    gen = torch.Generator().manual_seed(0)
    out = sample_residual_ddim(oracle, cond, true.shape, steps, generator=gen, callback=lambda i, n: progress.append((i, n)))
    assert torch.allclose(out, true, atol=1e-5)
    assert seen[0] == 1299 and len(seen) == steps  # trailing spacing starts from pure noise
    assert progress == [(i, steps) for i in range(steps)]


def test_sampler_is_reproducible_with_generator_and_eta():
    cond = torch.zeros(1, 4, 8, 8)

    def den(r_t, t, c):
        return 0.5 * r_t

    a = sample_residual_ddim(den, cond, (1, 3, 8, 8), 3, eta=1.0, generator=torch.Generator().manual_seed(7))
    b = sample_residual_ddim(den, cond, (1, 3, 8, 8), 3, eta=1.0, generator=torch.Generator().manual_seed(7))
    c = sample_residual_ddim(den, cond, (1, 3, 8, 8), 3, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="steps"):
        sample_residual_ddim(den, cond, (1, 3, 8, 8), 0)


def test_rddm_end_to_end(map_file):
    method = get_method("rddm")
    assert method.data == "paired" and method.output == "image"
    cfg = _cfg(map_file)
    obj = ObjectiveConfig()
    torch.manual_seed(3)
    model = method.build(cfg, obj, True)
    assert isinstance(model, RDDM)
    assert cfg.map_model == defocus_map.ModelConfig(**MAP_TINY)  # recorded for the exported recipe
    assert all(not p.requires_grad for p in model.map_estimator.parameters())
    model.train()
    assert not model.map_estimator.training and model.pre_deblur.training
    frozen = {k: v.clone() for k, v in model.map_estimator.state_dict().items()}

    sharp = torch.rand(2, 3, 32, 32)
    blur = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    batch = {"blur": blur, "sharp": sharp}

    def fixed_loss() -> float:
        torch.manual_seed(123)  # same timesteps and noise every time
        with torch.no_grad():
            return method.loss(model, batch, obj).item()

    first = fixed_loss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    for step in range(30):
        torch.manual_seed(step)
        opt.zero_grad()
        method.loss(model, batch, obj).backward()
        opt.step()
    assert fixed_loss() < first - 1.0
    assert all(torch.equal(v, model.map_estimator.state_dict()[k]) for k, v in frozen.items())

    model.eval()
    odd = torch.rand(1, 3, 30, 37)
    for steps in (1, 2, 3, 4):
        calls = []
        out = method.restore(model, odd, SamplerConfig(steps=steps), obj, torch.Generator().manual_seed(0),
                             lambda i, n: calls.append(i))
        assert out.shape == odd.shape and out.min() >= 0 and out.max() <= 1
        assert calls == list(range(steps))
    for bad in (0, 5):
        with pytest.raises(ValueError, match="sampler.steps"):
            method.restore(model, odd, SamplerConfig(steps=bad), obj)
    with pytest.raises(ValueError, match="RGB"):
        method.restore(model, odd[:, :1], SamplerConfig(), obj)


def test_exported_rddm_is_self_contained(map_file, tmp_path):
    method = get_method("rddm")
    copy = tmp_path / "map-copy.safetensors"
    copy.write_bytes(map_file.read_bytes())
    recipe = resolve_recipe({"method": "rddm", "model": {"map_checkpoint": str(copy), **RDDM_TINY}})
    torch.manual_seed(4)
    model = method.build(recipe.model, recipe.objective, True)
    out_file = tmp_path / "rddm.safetensors"
    save_model(out_file, model.state_dict(), "rddm", recipe_to_dict(recipe))
    copy.unlink()  # the exported file alone must suffice
    _, loaded_recipe, loaded = load_model(out_file)  # builds with for_training=False from map_model
    assert loaded_recipe.model.map_model == defocus_map.ModelConfig(**MAP_TINY)
    x = torch.rand(1, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.map_estimator(x), model.map_estimator(x), atol=1e-6)


def test_missing_or_wrong_map_checkpoint_is_a_clear_error(map_file, tmp_path):
    method = get_method("rddm")
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ValueError, match=r"map_checkpoint.*not found.*nope\.safetensors"):
        method.build(_cfg(missing), ObjectiveConfig(), True)
    wrong = _write_model(tmp_path / "naf.safetensors", "nafnet", {"width": 8, "enc_blocks": [1], "dec_blocks": [1]})
    with pytest.raises(ValueError, match=r"naf\.safetensors.*'nafnet'.*defocus-map"):
        method.build(_cfg(wrong), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="map_checkpoint"):
        method.build(_cfg(map_file, map_checkpoint=None), ObjectiveConfig(), True)
    other = defocus_map.ModelConfig(**{**MAP_TINY, "decoder_hidden_size": 32})
    with pytest.raises(ValueError, match="map_model does not match"):
        method.build(_cfg(map_file, map_model=other), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="map_model"):
        method.build(_cfg(map_file), ObjectiveConfig(), False)


def test_ddim_timesteps_are_recorded_as_run():
    """deblur.json / report.json record the DDIM grid: 1300 training steps, trailing spacing (this port's default)."""
    from defocuskit.infer import sampler_settings
    from defocuskit.methods import get_method

    method = get_method("rddm")
    objective = method.ObjectiveConfig()
    two = sampler_settings(method, method.SamplerConfig(steps=2), objective)
    three = sampler_settings(method, method.SamplerConfig(steps=3), objective)
    assert two["timesteps"] == [1299, 649] and three["timesteps"] == [1299, 866, 432]
    leading = sampler_settings(method, method.SamplerConfig(steps=2, timestep_spacing="leading"), objective)
    assert leading["timesteps"] == [650, 0]  # diffusers' `leading` grid, what the released code's defaults give
    assert "timesteps" not in sampler_settings(get_method("nafnet"), get_method("nafnet").SamplerConfig(), None)
