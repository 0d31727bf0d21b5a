"""RDDM: pre-deblur, guidance, residual denoiser, residual DDIM, the method end to end and its bad inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.diffusion.ddim_residual import make_scheduler, q_sample, sample_residual_ddim
from defocuskit.inference.load import load_model
from defocuskit.inference.restore import restore_batch
from defocuskit.io.modelfile import MODEL_FORMAT, save_model
from defocuskit.methods import defocus_map, get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.rddm import ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.methods.recipes import load_recipe, resolve_recipe
from defocuskit.models.deform import DCNv4
from defocuskit.models.nafnet import psnr_loss
from defocuskit.models.rddm import (
    RDDM,
    PreDeblur,
    RDDBlock,
    ResidualDenoiser,
    SemanticEncoder,
    build_resnet,
    normalize_map,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MAP_TINY = {
    "hidden_sizes": [8, 16, 32, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1],
    "decoder_hidden_size": 16, "drop_path_rate": 0.0,
}
RDDM_TINY = {
    "pre_width": 8, "pre_enc_blocks": [1, 1], "pre_dec_blocks": [1, 1],
    "pre_enc_dw": ["dcn_norm", "conv"], "pre_dec_dw": ["conv", "dcn_norm"],
    "width": 8, "enc_blocks": [1, 1], "dec_blocks": [1, 1], "enc_dw": ["dcn", "conv"], "dec_dw": ["conv", "dcn_norm"],
    "resnet_hidden_sizes": [16, 32, 64], "resnet_depths": [1, 1, 1], "resnet_embedding_size": 8,
    "resnet_pretrained": None,
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


def _semantic() -> SemanticEncoder:
    return SemanticEncoder(build_resnet([16, 32, 64], [1, 1, 1], 8, None))


def _kinds(levels) -> list[str]:
    """The spatial layer of each level's blocks: conv, dcn or dcn_norm (one kind per level)."""
    out = []
    for blocks in levels:
        conv2 = {type(b.conv2).__name__ + ("" if not isinstance(b.conv2, torch.nn.Sequential) else ":" + type(b.conv2[0]).__name__)
                 for b in blocks}
        assert len(conv2) == 1
        out.append({"Conv2d": "conv", "DCNv4": "dcn", "Sequential:DCNv4": "dcn_norm"}[conv2.pop()])
    return out


def test_released_pre_deblur_layout():
    """Predelur_network.py / the YAML: width 32, [1,1,1,6] + 1 + [1,1,1,1], DCNv4 on 3 of 4 levels, full resolution."""
    recipe = load_recipe(RECIPES / "rddm.yaml")
    m = recipe.model
    assert m.pre_global_residual  # the port's default; the release's layout is global_residual=False
    pre = PreDeblur(3, m.pre_width, m.pre_enc_blocks, m.pre_middle_blocks, m.pre_dec_blocks, m.pre_enc_dw,
                    m.pre_dec_dw, m.pre_scale, global_residual=False)
    net = pre.net
    assert [len(e) for e in net.encoders] == [1, 1, 1, 6] and len(net.middle) == 1
    assert [len(d) for d in net.decoders] == [1, 1, 1, 1]
    assert _kinds(net.encoders) == ["dcn_norm", "dcn", "dcn", "conv"] and _kinds([net.middle]) == ["conv"]
    assert _kinds(net.decoders) == ["conv", "dcn", "dcn", "dcn_norm"]
    assert net.intro.in_channels == 4 and net.intro.out_channels == 32 and net.ending.out_channels == 3
    assert sum(p.numel() for p in pre.parameters()) == 7_327_107  # the released NAFNetModified, counted
    torch.manual_seed(0)
    blur, coc_map = torch.rand(1, 3, 40, 52), torch.rand(1, 1, 40, 52)
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.zero_()
        assert torch.all(pre(blur, coc_map) == 0)  # no global residual: the net's output is the image


def test_pre_deblur_scale_option_works_at_any_size():
    torch.manual_seed(0)
    pre = PreDeblur(3, 8, [1, 1], 1, [1, 1], ["dcn_norm", "conv"], ["conv", "dcn"], scale=8, global_residual=True)
    blur = torch.rand(2, 3, 40, 52, requires_grad=True)
    out = pre(blur, torch.rand(2, 1, 40, 52))
    assert out.shape == blur.shape and pre.net.intro.in_channels == 4 * 64  # RGB + map, 8x8 pixel-unshuffled
    out.mean().backward()
    assert pre.net.intro.weight.grad.abs().sum() > 0
    with torch.no_grad():
        pre.net.ending.weight.zero_()
        pre.net.ending.bias.zero_()
    assert torch.allclose(pre(blur, torch.rand(2, 1, 40, 52)), blur)


def test_released_denoiser_layout_and_guidance():
    """DenoisingNetwork.py: [1,1,1,14] + 1 + [1,1,1,1] RDD blocks, DCNv4 placement, 1856 guidance channels per block."""
    recipe = load_recipe(RECIPES / "rddm.yaml")
    m = recipe.model
    resnet = build_resnet(m.resnet_hidden_sizes, m.resnet_depths, m.resnet_embedding_size, None)
    semantic = SemanticEncoder(resnet)
    assert semantic.channels == 64 + 256 + 512 + 1024 and len(resnet.encoder.stages) == 3
    den = ResidualDenoiser(3, m.width, m.enc_blocks, m.middle_blocks, m.dec_blocks, semantic.channels, m.enc_dw, m.dec_dw)
    assert [len(e) for e in den.encoders] == [1, 1, 1, 14] and len(den.middle) == 1
    assert [len(d) for d in den.decoders] == [1, 1, 1, 1]
    assert _kinds(den.encoders) == ["dcn", "dcn_norm", "dcn_norm", "conv"] and _kinds([den.middle]) == ["conv"]
    assert _kinds(den.decoders) == ["conv", "dcn", "dcn", "dcn_norm"]
    assert den.intro.in_channels == 7
    assert all(b.guide[0].in_channels == 1856 for level in den.encoders for b in level)
    assert sum(p.numel() for p in den.parameters()) == 82_267_443  # the released NAFNetFusionModifiedcat, counted
    groups = {b.conv2.group if isinstance(b.conv2, DCNv4) else b.conv2[0].group
              for b in den.encoders[1]}
    assert groups == {8}  # released group = c // 16 (c = 128 at level 1)


def test_rdd_block_fuses_guidance_twice_and_modulates_by_time():
    torch.manual_seed(1)
    block = RDDBlock(16, 32, 12, "dcn")
    with torch.no_grad():
        for p in (block.beta, block.gamma):
            p.fill_(1.0)
    calls = []
    block.fusion.register_forward_hook(lambda *a: calls.append(1))
    x, g = torch.randn(2, 16, 6, 7), torch.randn(2, 12, 6, 7)
    t1, t2 = torch.randn(2, 32), torch.randn(2, 32)
    out = block(x, t1, g)
    assert len(calls) == 2  # before the block and again after its channel attention
    assert not torch.allclose(block(x, t2, g), out) and not torch.allclose(block(x, t1, torch.zeros_like(g)), out)


def test_semantic_encoder_and_denoiser_forward_backward():
    torch.manual_seed(1)
    semantic = _semantic()
    feats = semantic(torch.rand(2, 3, 32, 40))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 8, 10), (16, 8, 10), (32, 4, 5), (64, 2, 3)]  # stem + 3 stages
    den = ResidualDenoiser(3, 8, [1, 1], 1, [1, 1], semantic.channels, ["dcn", "conv"], ["conv", "dcn_norm"])
    with torch.no_grad():  # blocks start as identities (beta = gamma = 0, as released): open them
        for name, p in den.named_parameters():
            if name.endswith(("beta", "gamma")) or "offset_mask." in name:
                p.normal_(std=0.5)
    cond = torch.rand(2, 4, 30, 34)
    r_t = torch.randn(2, 3, 30, 34)
    t = torch.tensor([0, 1299])
    out = den(r_t, t, cond, semantic(cond[:, :3]))
    assert out.shape == r_t.shape
    out.square().mean().backward()
    assert den.time_mlp[1].weight.grad.abs().sum() > 0 and den.encoders[0][0].guide[0].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in semantic.resnet.parameters())
    with torch.no_grad():
        f = semantic(cond[:, :3])
        assert not torch.allclose(den(r_t, torch.tensor([5, 5]), cond, f), out)
        assert not torch.allclose(den(r_t, t, cond, [torch.zeros_like(x) for x in f]), out)
    frozen = SemanticEncoder(build_resnet([16, 32, 64], [1, 1, 1], 8, None), trainable=False).train()
    assert not frozen.resnet.training and not any(p.requires_grad for p in frozen.resnet.parameters())


def test_resnet_loads_pretrained_from_a_folder_or_a_safetensors_file(tmp_path):
    from safetensors.torch import save_file
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(5)
    full = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                    layer_type="bottleneck", downsample_in_first_stage=False))
    full.save_pretrained(tmp_path / "resnet")
    loaded = build_resnet([16, 32, 64], [1, 1, 1], 8, str(tmp_path / "resnet"))
    assert len(loaded.encoder.stages) == 3  # stage 4 dropped
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), k
    save_file({"resnet." + k: v.contiguous() for k, v in full.state_dict().items()}, str(tmp_path / "r.safetensors"))
    from_file = build_resnet([16, 32, 64], [1, 1, 1], 8, str(tmp_path / "r.safetensors"))
    assert all(torch.equal(v, full.state_dict()[k]) for k, v in from_file.state_dict().items())
    with pytest.raises(ValueError, match=r"model.resnet_pretrained.*nope.*resnet_pretrained: null"):
        build_resnet([16, 32, 64], [1, 1, 1], 8, str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match=r"model.resnet_pretrained.*not the recipe"):
        build_resnet([16, 32, 96], [1, 1, 1], 8, str(tmp_path / "resnet"))


def test_map_normalisation_modes():
    m = torch.stack([torch.full((1, 4, 4), 2.0), torch.linspace(0, 8, 16).view(1, 4, 4)])
    batch = normalize_map(m, "minmax_batch", "coc", 4.0)
    alone = normalize_map(m[:1], "minmax_batch", "coc", 4.0)
    assert not torch.allclose(batch[:1], alone)  # released: an image's map depends on its batch mates
    assert torch.allclose(normalize_map(m, "scale", "coc", 4.0)[:1], normalize_map(m[:1], "scale", "coc", 4.0))
    assert torch.allclose(normalize_map(m, "scale", "coc", 4.0), m / 4)
    assert torch.allclose(normalize_map(m, "scale", "blur", 4.0), torch.sigmoid(m))
    per_image = normalize_map(m, "minmax_image", "coc", 4.0)
    assert per_image[1].min() == 0 and per_image[1].max() == 1 and torch.isfinite(per_image).all()


def test_map_is_taken_from_the_pre_deblurred_image(map_file):
    torch.manual_seed(6)
    model = get_method("rddm").build(_cfg(map_file), ObjectiveConfig(), True).eval()
    seen = []
    model.map_estimator.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].clone(), out.clone())))
    blur = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        pre, cond = model.condition(blur)
    assert len(seen) == 2 and torch.equal(seen[0][0], blur)
    assert torch.allclose(seen[1][0], pre)  # released: the denoiser's map is the pre-deblurred image's
    assert torch.allclose(cond[:, 3:], seen[1][1] / model.map_estimator.coc_scale)
    assert torch.equal(cond[:, :3], pre)


def test_loss_reaches_the_pre_deblur_as_released(map_file):
    method = get_method("rddm")
    sharp = torch.rand(2, 3, 32, 32)
    batch = {"blur": torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), "sharp": sharp}

    def grads(objective=ObjectiveConfig(), pre_only=False, **kw):
        torch.manual_seed(7)
        model = method.build(_cfg(map_file, **kw), objective, True).train()
        torch.manual_seed(8)
        if pre_only:  # the pre-deblur's own PSNR loss alone
            pre, _ = model.condition(batch["blur"])
            (objective.pre_weight * psnr_loss(pre, batch["sharp"])).backward()
        else:
            method.loss(model, batch, objective).backward()
        pre = [p.grad for p in model.pre_deblur.parameters()]
        return [torch.zeros_like(p) if g is None else g for p, g in zip(model.pre_deblur.parameters(), pre)]

    def total(gs):
        return sum(g.abs().sum().item() for g in gs)

    assert total(grads()) > 0  # one PSNR loss on the residual; its gradient reaches the pre-deblur
    # the port's earlier routing, kept as an option: the pre-deblur learns from its own loss alone (it once got no
    # gradient at all, so `detach_pre` trained a random pre-deblur: -6.8 dB against the input in the demo)
    with_pre = ObjectiveConfig(pre_weight=1.0)
    cut = grads(with_pre, detach_pre=True)
    alone = grads(with_pre, pre_only=True, detach_pre=True)
    assert total(cut) > 0 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(cut, alone))
    assert total(grads(with_pre)) != pytest.approx(total(alone))  # without the cut the residual loss adds its own
    with pytest.raises(ValueError, match="model.detach_pre.*objective.pre_weight"):
        grads(detach_pre=True)  # nothing would train the pre-deblur


def test_q_sample_matches_diffusers_add_noise():
    r0 = torch.randn(3, 3, 8, 8)
    noise = torch.randn_like(r0)
    t = torch.tensor([0, 650, 1299])
    ref = make_scheduler().add_noise(r0, noise, t)
    assert torch.allclose(q_sample(r0, t, noise), ref, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_sampler_recovers_residual_of_an_oracle(steps):
    torch.manual_seed(2)
    true = torch.rand(2, 3, 8, 8) * 2 - 1  # residuals of [0, 1] images lie in [-1, 1] (clip_sample keeps them)
    cond = torch.rand(2, 4, 8, 8)
    seen, progress = [], []

    def oracle(r_t, t, c):
        seen.append(int(t[0]))
        assert c is cond and r_t.shape == true.shape
        return true

    gen = torch.Generator().manual_seed(0)
    out = sample_residual_ddim(oracle, cond, true.shape, steps, generator=gen, callback=lambda s: progress.append((s["i"], s["n"])))
    assert torch.allclose(out, true, atol=1e-5)
    assert seen[-1] == 0 and len(seen) == steps  # leading spacing, as released, ends at t = 0
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
        out = restore_batch(method, model, odd, RestoreContext(SamplerConfig(steps=steps), obj, torch.Generator().manual_seed(0),
                             lambda s: calls.append(s["i"])), 3)
        assert out.shape == odd.shape and out.min() >= 0 and out.max() <= 1
        assert calls == list(range(steps))
    for bad in (0, 5):
        with pytest.raises(ValueError, match="sampler.steps"):
            restore_batch(method, model, odd, RestoreContext(SamplerConfig(steps=bad), obj), 3)
    with pytest.raises(ValueError, match="RGB"):
        restore_batch(method, model, odd[:, :1], RestoreContext(SamplerConfig(), obj), 3)


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
    """deblur.json / report.json record the DDIM grid: as released, diffusers 0.25's DDIMScheduler defaults
    (leading spacing, clip_sample) on 1300 training steps."""
    from defocuskit.inference.restore import sampler_settings

    method = get_method("rddm")
    objective = method.ObjectiveConfig()
    recipe = load_recipe(RECIPES / "rddm.yaml")
    assert (recipe.sampler.timestep_spacing, recipe.sampler.clip_sample) == ("leading", True)
    two = sampler_settings(recipe.sampler, objective)
    three = sampler_settings(dataclasses.replace(recipe.sampler, steps=3), objective)
    assert two["timesteps"] == [650, 0] and three["timesteps"] == [866, 433, 0]
    trailing = sampler_settings(method.SamplerConfig(steps=2, timestep_spacing="trailing"), objective)
    assert trailing["timesteps"] == [1299, 649]
    assert "timesteps" not in sampler_settings(get_method("nafnet").SamplerConfig(), None)
    with pytest.raises(ValueError, match="timestep_spacing"):
        method.SamplerConfig(timestep_spacing="random")


def test_released_optimiser_and_objective_in_the_recipe():
    recipe = load_recipe(RECIPES / "rddm.yaml")
    o = recipe.optim
    assert (o.name, o.lr, tuple(o.betas), o.eps, o.weight_decay, o.warmup_steps, o.schedule, o.grad_clip) == (
        "adamw", 2e-4, (0.9, 0.999), 1e-6, 0.01, 200, "cosine", None)
    assert recipe.train.max_steps == 1_000_000 and recipe.train.ema_decay == 0.999
    assert (recipe.data.image_size, recipe.data.batch_size) == (320, 8)
    assert recipe.objective.pre_weight == 0 and not recipe.model.detach_pre
    assert recipe.model.resnet_pretrained == "microsoft/resnet-50" and recipe.model.map_head == "blur"


def test_model_files_of_the_earlier_layout_are_refused_clearly(tmp_path):
    from safetensors.torch import save_file

    old = {"method": "rddm", "model": {**{k: v for k, v in RDDM_TINY.items() if "dw" not in k},
                                       "pre_deform_levels": 1, "guidance_channels": 8, "map_model": MAP_TINY}}
    import json

    save_file({"x": torch.zeros(1)}, str(tmp_path / "old.safetensors"),
              metadata={"method": "rddm", "recipe": json.dumps(old), "format": MODEL_FORMAT})
    with pytest.raises(ValueError, match="earlier RDDM layout.*retrain"):
        load_model(tmp_path / "old.safetensors")


def test_pre_deblur_keeps_the_light_with_the_tiny_recipes_pre_weight(map_file):
    """With the release's one residual loss nothing ties the pre-deblur's brightness: it drifts and the residual
    denoiser has to carry the offset. The tiny recipe's PSNR loss on the pre-deblur (`pre_weight`) keeps it, and the
    pre-deblur then beats its input on pairs it did not see (docs/benchmarks.md, "RDDM's pre-deblur anchored")."""
    method = get_method("rddm")
    tiny = load_recipe(RECIPES / "rddm-tiny.yaml")
    assert tiny.objective.pre_weight > 0

    def pairs(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        sharp = torch.nn.functional.avg_pool2d(torch.rand(n, 3, 32, 32, generator=g), 3, 1, 1, count_include_pad=False)
        return torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), sharp

    def pre_deblur_error(pre_weight: float) -> tuple[float, float]:
        obj = ObjectiveConfig(pre_weight=pre_weight)
        torch.manual_seed(3)
        model = method.build(_cfg(map_file), obj, True).train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
        for step in range(40):
            torch.manual_seed(step)
            blur, sharp = pairs(step, 4)
            opt.zero_grad()
            method.loss(model, {"blur": blur, "sharp": sharp}, obj).backward()
            opt.step()
        blur, sharp = pairs(10_000, 8)  # unseen pairs
        with torch.no_grad():
            pre, _ = model.eval().condition(blur)
        return float((pre - sharp).mean().abs()), float((pre - sharp).abs().mean() / (blur - sharp).abs().mean())

    drift, released = pre_deblur_error(0.0)
    offset, anchored = pre_deblur_error(tiny.objective.pre_weight)
    assert drift > 0.01 and released > 1.0  # the release's pre-deblur: brighter or darker, worse than its input
    assert offset < 0.005 and anchored < 1.0


def test_the_cpu_recipe_trains_with_the_tiny_estimator_and_gates_its_output(tmp_path):
    """rddm-cpu (real photos on a CPU): its estimator is defocus-map-tiny's layout, so the map that recipe trains on
    the same renders (tools/loso_real.py) is the one it takes; no DCN; its model is gated by default as nafnet-cpu's."""
    tiny_map = load_recipe("defocus-map-tiny")
    estimator = _write_model(tmp_path / "map.safetensors", "defocus-map", recipe_to_dict(tiny_map)["model"])
    recipe = load_recipe("rddm-cpu", [f"model.map_checkpoint={estimator}"])
    assert recipe.model.map_model == tiny_map.model and recipe.model.map_head == "coc"
    assert recipe.inference.focus_gate == 3.0 and recipe.objective.pre_weight == 1.0
    assert "dcn" not in " ".join(recipe.model.pre_enc_dw + recipe.model.pre_dec_dw + recipe.model.enc_dw
                                 + recipe.model.dec_dw)
    method = get_method("rddm")
    torch.manual_seed(0)
    model = method.build(recipe.model, recipe.objective, True)
    sharp = torch.rand(2, 3, 48, 48)
    blur = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    method.loss(model, {"blur": blur, "sharp": sharp}, recipe.objective).backward()
    model.eval()
    out = restore_batch(method, model, torch.rand(1, 3, 30, 44), RestoreContext(recipe.sampler, recipe.objective), 3)
    assert out.shape == (1, 3, 30, 44)
    mismatched = {**recipe_to_dict(tiny_map)["model"], "width": 8}
    other = _write_model(tmp_path / "other.safetensors", "defocus-map", mismatched)
    with pytest.raises(ValueError, match="map"):
        method.build(load_recipe("rddm-cpu", [f"model.map_checkpoint={other}"]).model, recipe.objective, True)
