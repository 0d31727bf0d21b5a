"""The hidd Method: recipes, build, loss (fitting a tiny model), channel-by-channel restore."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from defocuskit.methods import get_method
from defocuskit.methods.hidd import METHOD, ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.models.ncsnpp import NCSNpp
from defocuskit.train.recipe import load_recipe




RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TINY_MODEL = ModelConfig(image_size=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,))


class ZeroScore(nn.Module):
    """A one-channel 'score network' that knows nothing: only the consistency steps act."""

    channels = 1
    multiple = 4

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x, sigma):
        self.seen.append(tuple(x.shape))
        return torch.zeros_like(x)


def test_method_table_and_fields():
    assert get_method("hidd") is METHOD
    assert METHOD.name == "hidd" and METHOD.data == "sharp" and METHOD.output == "image"
    s = SamplerConfig()
    assert (s.steps, s.snr, s.corrector_chains, s.consistency) == (1000, 0.021, 3, (0.08, 0.15))
    o = ObjectiveConfig()
    assert (o.sigma_min, o.sigma_max) == (0.01, 300.0)


@pytest.mark.parametrize("name, channels", [("hidd", 1), ("hidd-rgb", 3), ("hidd-tiny", 1)])
def test_recipes_resolve(name, channels):
    path = RECIPES / f"{name}.yaml"
    assert f"accelerate launch -m defocuskit train recipes/{name}.yaml" in path.read_text()
    r = load_recipe(path)
    assert r.method == "hidd"
    assert r.data.channels == r.model.channels == channels
    assert isinstance(r.model, ModelConfig) and isinstance(r.sampler, SamplerConfig)
    if name == "hidd":
        assert (r.data.image_size, r.optim.lr, r.optim.warmup_steps, r.train.ema_decay) == (256, 2e-4, 5000, 0.999)
        assert r.optim.grad_clip == 1.0 and r.sampler.steps == 1000 and r.model.ch_mult == (1, 1, 2, 2, 2, 2, 2)


def test_tiny_recipe_builds_and_overrides():
    r = load_recipe(RECIPES / "hidd-tiny.yaml", ["sampler.steps=3", "model.nf=16"])
    net = METHOD.build(r.model, r.objective, True)
    assert isinstance(net, NCSNpp) and net.channels == 1
    assert r.sampler.steps == 3 and r.train.max_steps <= 50 and r.data.image_size == 32


def test_build_rejects_bad_sigma_range():
    with pytest.raises(ValueError, match="sigma_min"):
        METHOD.build(TINY_MODEL, ObjectiveConfig(sigma_min=1.0, sigma_max=0.5), True)


def test_loss_needs_sharp_images():
    net = METHOD.build(TINY_MODEL, ObjectiveConfig(), True)
    with pytest.raises(KeyError, match="sharp"):
        METHOD.loss(net, {"blur": torch.rand(2, 1, 32, 32)}, ObjectiveConfig())


def test_dsm_loss_decreases_when_fitting_a_tiny_model():
    torch.manual_seed(0)
    net = METHOD.build(dataclasses.replace(TINY_MODEL, attn_resolutions=()), ObjectiveConfig(), True)
    objective = ObjectiveConfig(sigma_max=50.0, reduce_mean=True)
    # a tiny fixed dataset: four smooth 16x16 images
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    data = torch.stack([0.5 + 0.4 * torch.sin(6.28 * (f * xx + yy)) for f in (0.5, 1.0, 1.5, 2.0)])[:, None]

    def evaluate() -> float:
        rng = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            value = sum(METHOD.loss(net, {"sharp": data}, objective).item() for _ in range(4)) / 4
        torch.set_rng_state(rng)
        return value

    before = evaluate()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(50):
        opt.zero_grad()
        METHOD.loss(net, {"sharp": data}, objective).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    after = evaluate()
    print(f"dsm loss before {before:.4f}, after 50 Adam steps {after:.4f}")
    assert after < 0.7 * before


def test_restore_runs_colour_channel_by_channel():
    model = ZeroScore()
    blur = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # no prior, no rescaling: 200 consistency steps bring every channel back to its own input
    cfg = SamplerConfig(steps=200, corrector=False, normalize_each_step=False)
    out = METHOD.restore(model, blur, cfg, ObjectiveConfig(), generator=torch.Generator().manual_seed(1))
    assert out.shape == blur.shape
    assert set(model.seen) == {(6, 1, 16, 16)}  # 2 images x 3 channels, one channel each
    torch.testing.assert_close(out, blur, atol=1e-4, rtol=0)


def test_restore_pads_sizes_that_are_not_a_multiple_and_crops_back():
    model = ZeroScore()
    blur = torch.rand(1, 1, 18, 21)
    cfg = SamplerConfig(steps=200, corrector=False, normalize_each_step=False)
    out = METHOD.restore(model, blur, cfg, ObjectiveConfig())
    assert model.seen[0][-2:] == (20, 24)
    assert out.shape == blur.shape
    torch.testing.assert_close(out, blur, atol=1e-4, rtol=0)


def test_restore_with_tiny_ncsnpp_and_step_override():
    torch.manual_seed(0)
    net = METHOD.build(TINY_MODEL, ObjectiveConfig(), False).eval()
    cfg = dataclasses.replace(SamplerConfig(), steps=3)
    calls = []
    blur = torch.rand(1, 3, 16, 16)
    out = METHOD.restore(net, blur, cfg, ObjectiveConfig(), generator=torch.Generator().manual_seed(0),
                         callback=lambda i, n: calls.append((i, n)))
    assert out.shape == blur.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert calls == [(0, 3), (1, 3), (2, 3)]


def test_restore_rejects_mismatched_channels():
    net = METHOD.build(dataclasses.replace(TINY_MODEL, channels=3), ObjectiveConfig(), False)
    with pytest.raises(ValueError, match="3-channel model"):
        METHOD.restore(net, torch.rand(1, 1, 32, 32), SamplerConfig(steps=1), ObjectiveConfig())
