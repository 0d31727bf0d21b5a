"""The hidd Method: recipes, sampler configs, build, loss (fitting a tiny model), channel-by-channel restore."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from defocuskit.config.recipe import DataConfig, Recipe
from defocuskit.inference.restore import restore_batch, restore_image
from defocuskit.inference.tiling import TilingOptions
from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.hidd import METHOD, ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.methods.recipes import load_recipe, resolve_recipe
from defocuskit.models.ncsnpp import NCSNpp

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
    assert (s.name, s.steps, s.snr, s.corrector_chains, s.weights, s.consistency) == (
        "pc", None, 0.021, 3, (0.08, 0.15), "identity")
    assert not hasattr(s, "normalize_each_step")
    assert s.resolved().steps == 1000 and SamplerConfig(name="fast").resolved().steps == 10
    assert (s.sigma_start, s.zeta, s.dc_sigma, s.cg_steps) == (0.05, 1.0, 0.008, 10)  # issue 22; issue 8: 0.1, 0.3
    assert SamplerConfig(steps=7).resolved().steps == 7
    o = ObjectiveConfig()
    assert (o.sigma_min, o.sigma_max) == (0.01, 300.0)


@pytest.mark.parametrize("name, channels", [("hidd", 1), ("hidd-rgb", 3), ("hidd-tiny", 1), ("hidd-cpu", 3)])
def test_recipes_resolve(name, channels):
    path = RECIPES / f"{name}.yaml"
    assert f"accelerate launch -m defocuskit train recipes/{name}.yaml" in path.read_text()
    r = load_recipe(path)
    assert r.method == "hidd"
    assert r.data.channels == r.model.channels == channels
    assert isinstance(r.model, ModelConfig) and isinstance(r.sampler, SamplerConfig)
    if name == "hidd":
        assert (r.data.image_size, r.optim.lr, r.optim.warmup_steps, r.train.ema_decay) == (256, 2e-4, 5000, 0.999)
        assert r.optim.grad_clip == 1.0 and r.model.ch_mult == (1, 1, 2, 2, 2, 2, 2)
        assert r.sampler.steps is None and r.sampler.resolved().steps == 1000
    assert r.sampler.weights == (0.08, 0.15)
    if name in ("hidd-tiny", "hidd-cpu"):  # the demo's and the real-photo CPU recipe: the benchmark's best sampler (docs/benchmarks.md)
        assert (r.sampler.name, r.sampler.consistency) == ("fast", "physics") and r.sampler.needs() == {"coc"}
    else:  # the paper recipes: pc, the released steps without per-tile rescaling
        assert r.sampler.name == "pc" and r.sampler.consistency == "identity"


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
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)  # 20 steps: about 0.25x the loss (50 steps at 2e-3: 0.17x)
    for _ in range(20):
        opt.zero_grad()
        METHOD.loss(net, {"sharp": data}, objective).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    after = evaluate()
    print(f"dsm loss before {before:.4f}, after 20 Adam steps {after:.4f}")
    assert after < 0.7 * before


def test_restore_runs_colour_channel_by_channel():
    model = ZeroScore()
    blur = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # no prior, no rescaling: 200 consistency steps bring every channel back to its own input
    cfg = SamplerConfig(name="pc", steps=200, corrector=False)
    out = restore_batch(METHOD, model, blur, RestoreContext(cfg, ObjectiveConfig(), generator=torch.Generator().manual_seed(1)), channels=1)
    assert out.shape == blur.shape
    assert set(model.seen) == {(6, 1, 16, 16)}  # 2 images x 3 channels, one channel each
    torch.testing.assert_close(out, blur, atol=1e-4, rtol=0)


def test_restore_pads_sizes_that_are_not_a_multiple_and_crops_back():
    model = ZeroScore()
    blur = torch.rand(1, 1, 18, 21)
    cfg = SamplerConfig(name="pc", steps=200, corrector=False)
    out = restore_batch(METHOD, model, blur, RestoreContext(cfg, ObjectiveConfig()), channels=1)
    assert model.seen[0][-2:] == (20, 24)
    assert out.shape == blur.shape
    torch.testing.assert_close(out, blur, atol=1e-4, rtol=0)


def test_restore_with_tiny_ncsnpp_and_step_override():
    torch.manual_seed(0)
    net = METHOD.build(TINY_MODEL, ObjectiveConfig(), False).eval()
    cfg = dataclasses.replace(SamplerConfig(), steps=3)
    calls = []
    blur = torch.rand(1, 3, 16, 16)
    out = restore_batch(METHOD, net, blur, RestoreContext(cfg, ObjectiveConfig(), generator=torch.Generator().manual_seed(0),
                         callback=lambda s: calls.append((s["i"], s["n"]))), channels=1)
    assert out.shape == blur.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert calls == [(0, 3), (1, 3), (2, 3)]


def test_restore_rejects_mismatched_channels():
    net = METHOD.build(dataclasses.replace(TINY_MODEL, channels=3), ObjectiveConfig(), False)
    with pytest.raises(ValueError, match="3-channel model"):
        restore_batch(METHOD, net, torch.rand(1, 1, 32, 32), RestoreContext(SamplerConfig(steps=1), ObjectiveConfig()), channels=3)


# ----------------------------------------------------------------------------- sampler config


@pytest.mark.parametrize("kwargs, key", [
    (dict(name="ddpm"), "sampler.name"),
    (dict(consistency="lens"), "sampler.consistency"),
    (dict(name="released", consistency="physics"), "sampler.consistency"),
    (dict(blur_model="box"), "sampler.blur_model"),
    (dict(steps=0), "sampler.steps"),
    (dict(name="fast", steps=-2), "sampler.steps"),
    (dict(name="fast", steps=10**9), "sampler.steps"),  # 8 GB of noise levels: the process was killed
    (dict(sigma_start=0.0), "sampler.sigma_start"),
    (dict(sigma_start=float("inf")), "sampler.sigma_start"),  # reached the sampler, which named itself
    (dict(dc_sigma=float("inf")), "sampler.dc_sigma"),
    (dict(snr=float("inf")), "sampler.snr"),
    (dict(dc_sigma=-0.05), "sampler.dc_sigma"),
    (dict(zeta=1.5), "sampler.zeta"),
    (dict(zeta=-0.1), "sampler.zeta"),
    (dict(blur_levels=0), "sampler.blur_levels"),
    (dict(cg_steps=-1), "sampler.cg_steps"),
    (dict(corrector_chains=-1), "sampler.corrector_chains"),
    # no upper bound before: 10^9 CoC layers ran out of memory, 10^9 CG steps or chains never ended
    (dict(consistency="physics", blur_levels=10**9), r"^sampler.blur_levels: 1 to 1200 CoC layers, got 1000000000$"),
    (dict(cg_steps=1001), r"^sampler.cg_steps: 0 to 1000 conjugate-gradient steps a data step, got 1001$"),
    (dict(corrector_chains=10**9), r"^sampler.corrector_chains: 0 to 300 corrector chains, got 1000000000$"),
    (dict(weights=(0.08, 1.5)), "sampler.weights"),
    (dict(weights=(-0.1, 0.15)), "sampler.weights"),
])
def test_sampler_config_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.") if "^" not in key else key):
        SamplerConfig(**kwargs)


def test_sampler_config_accepts_every_named_sampler_and_edge_values():
    for name in ("released", "pc", "fast"):
        SamplerConfig(name=name)
    for name in ("pc", "fast"):
        SamplerConfig(name=name, consistency="physics")
    SamplerConfig(zeta=0.0, weights=(0.0, 1.0), cg_steps=0, corrector_chains=0, steps=1)
    SamplerConfig(consistency="physics", blur_levels=1200, cg_steps=1000, corrector_chains=300, steps=100_000)


def test_sampler_values_are_checked_when_a_recipe_resolves():
    with pytest.raises(ValueError, match=r"sampler\.name"):
        load_recipe(RECIPES / "hidd-tiny.yaml", ["sampler.name=ddpm"])
    with pytest.raises(ValueError, match=r"sampler\.consistency"):
        load_recipe(RECIPES / "hidd-tiny.yaml", ["sampler.name=released", "sampler.consistency=physics"])
    r = load_recipe(RECIPES / "hidd-tiny.yaml", ["sampler.name=fast", "sampler.consistency=physics"])
    assert (r.sampler.name, r.sampler.consistency) == ("fast", "physics")


@pytest.mark.parametrize("cfg, expected", [
    (SamplerConfig(), 4000),  # 1000 steps x (predictor + 3 corrector chains)
    (SamplerConfig(name="released"), 4000),
    (SamplerConfig(name="fast"), 10),
    (SamplerConfig(name="fast", steps=5, consistency="physics"), 5),
    (SamplerConfig(steps=7, corrector=False), 7),
    (SamplerConfig(name="released", steps=7, corrector=False), 7),
    (SamplerConfig(steps=7, corrector_chains=0), 14),
    (SamplerConfig(steps=7, predictor=False), 21),
])
def test_nfe_per_sample_path(cfg, expected):
    assert cfg.nfe() == expected


def test_needs_a_coc_map_only_with_physics_consistency():
    for name in ("released", "pc", "fast"):
        assert SamplerConfig(name=name).needs() == frozenset()
    for name in ("pc", "fast"):
        assert SamplerConfig(name=name, consistency="physics").needs() == {"coc"}


OLD_SAMPLER = {"steps": 10, "snr": 0.021, "predictor": True, "corrector": True, "corrector_chains": 3,
               "consistency": [0.08, 0.15], "carry_mean": True, "normalize_each_step": True}


@pytest.mark.parametrize("normalize, name", [(True, "released"), (False, "pc")])
def test_upgrade_recipe_turns_an_old_sampler_into_a_named_one(normalize, name):
    raw = {"method": "hidd", "data": {"channels": 1}, "sampler": {**OLD_SAMPLER, "normalize_each_step": normalize}}
    before = copy.deepcopy(raw)
    new = METHOD.upgrade_recipe(raw)
    assert raw == before  # the input is not changed
    assert "normalize_each_step" not in new["sampler"]
    assert (new["sampler"]["name"], tuple(new["sampler"]["weights"]), new["sampler"]["consistency"]) == (
        name, (0.08, 0.15), "identity")
    r = resolve_recipe(new)
    assert isinstance(r.sampler, SamplerConfig)
    assert (r.sampler.name, r.sampler.weights, r.sampler.consistency, r.sampler.steps) == (
        name, (0.08, 0.15), "identity", 10)
    assert r.data.channels == 1
    with pytest.raises(ValueError, match="normalize_each_step"):
        resolve_recipe(raw)  # the old keys are unknown today: the upgrade is needed


def test_upgrade_recipe_leaves_new_recipes_unchanged():
    raw = {"method": "hidd", "sampler": {"name": "fast", "weights": [0.1, 0.2], "consistency": "physics"}}
    assert METHOD.upgrade_recipe(raw) == raw
    assert METHOD.upgrade_recipe(METHOD.upgrade_recipe({"method": "hidd", "sampler": dict(OLD_SAMPLER)})) == \
        METHOD.upgrade_recipe({"method": "hidd", "sampler": dict(OLD_SAMPLER)})
    assert METHOD.upgrade_recipe({"method": "hidd"})["sampler"] == {}


def test_upgrade_recipe_keeps_40_steps_for_a_file_with_the_former_fast_sampler():
    # issue 22 changed the fast default to 10 steps; a model file of issue 8's fast settings ran 40, and still does
    former = {"name": "fast", "steps": None, "sigma_start": 0.1, "zeta": 0.3, "consistency": "physics"}
    upgraded = METHOD.upgrade_recipe({"method": "hidd", "sampler": former})
    assert upgraded["sampler"]["steps"] == 40 and former["steps"] is None
    assert resolve_recipe(upgraded).sampler.nfe() == 40
    for change in (dict(steps=12), dict(sigma_start=0.05), dict(zeta=1.0), dict(name="pc")):
        sampler = METHOD.upgrade_recipe({"method": "hidd", "sampler": {**former, **change}})["sampler"]
        assert sampler.get("steps") == change.get("steps"), change  # as written, or left to the default


# ----------------------------------------------------------------------------- why pc, not released, is the default


def colour_ramp(h: int = 70, w: int = 53) -> np.ndarray:
    """A smooth float32 (H, W, 3) colour image; no channel spans [0, 1] and no tile of it does either."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return np.stack([0.2 + 0.4 * yy, 0.35 + 0.3 * xx, 0.5 + 0.1 * np.sin(3 * (xx + yy))], axis=-1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-20)))


def test_pc_restores_a_tiled_colour_image_unchanged_with_no_prior_but_released_does_not():
    """With a zero score only the consistency steps act: pc converges to the input in every tile and channel,
    while the released loop's per-item min-max rescaling stretches each tile's channel to [0, 1] on its own."""
    image = colour_ramp()
    recipe = Recipe(method="hidd", data=DataConfig(image_size=32, channels=1), model=ModelConfig(),
                    objective=ObjectiveConfig())
    kw = dict(tiling=TilingOptions(tile=32, overlap=8, batch=4), seed=3, progress=False)  # 3 x 2 overlapping tiles

    model = ZeroScore()
    pc = restore_image(METHOD, recipe, model, image, sampler_cfg=SamplerConfig(name="pc", steps=200, corrector=False),
                       **kw)
    assert pc.shape == image.shape and pc.dtype == np.float32
    assert set(model.seen) == {(12, 1, 32, 32), (6, 1, 32, 32)}  # 6 tiles x 3 channels, batches of 4 tiles
    np.testing.assert_allclose(pc, image, atol=1e-4, rtol=0)

    released = restore_image(METHOD, recipe, ZeroScore(), image,
                             sampler_cfg=SamplerConfig(name="released", steps=200, corrector=False), **kw)
    assert released.shape == image.shape
    assert psnr(released, image) < 30.0
    assert psnr(pc, image) > 80.0


# ----------------------------------------------------------------------------- physics consistency


@pytest.mark.parametrize("name", ["fast", "pc"])
def test_physics_restore_with_a_coc_map(name):
    blur = torch.rand(2, 3, 18, 21, generator=torch.Generator().manual_seed(0))
    coc = torch.rand(2, 1, 18, 21, generator=torch.Generator().manual_seed(1)) * 4.0
    cfg = SamplerConfig(name=name, steps=4, consistency="physics", cg_steps=3, corrector=False)
    model = ZeroScore()
    out = restore_batch(METHOD, model, blur, RestoreContext(cfg, ObjectiveConfig(), torch.Generator().manual_seed(2), conditions={"coc": coc}), channels=1)
    assert out.shape == blur.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert set(model.seen) == {(6, 1, 20, 24)}  # channel by channel, padded to a multiple of 4


def test_physics_restore_with_a_zero_coc_equals_identity_restore():
    blur = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    common = dict(name="fast", steps=5, linear_light=False, cg_steps=4)
    physics = restore_batch(METHOD, ZeroScore(), blur, RestoreContext(SamplerConfig(consistency="physics", **common), ObjectiveConfig(),
                             torch.Generator().manual_seed(4), conditions={"coc": torch.zeros(1, 1, 16, 16)}), channels=1)
    identity = restore_batch(METHOD, ZeroScore(), blur, RestoreContext(SamplerConfig(consistency="identity", **common), ObjectiveConfig(),
                              torch.Generator().manual_seed(4)), channels=1)
    torch.testing.assert_close(physics, identity, atol=1e-5, rtol=0)


def test_physics_restore_gives_each_image_its_own_coc_map_for_every_channel():
    # image 0 in focus (zero CoC: the physics step is the identity one), image 1 blurred by 6 px
    blur = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    coc = torch.zeros(2, 1, 16, 16)
    coc[1] = 6.0
    common = dict(name="fast", steps=4, linear_light=False, cg_steps=4)
    physics = restore_batch(METHOD, ZeroScore(), blur, RestoreContext(SamplerConfig(consistency="physics", **common), ObjectiveConfig(),
                             torch.Generator().manual_seed(6), conditions={"coc": coc}), channels=1)
    identity = restore_batch(METHOD, ZeroScore(), blur, RestoreContext(SamplerConfig(consistency="identity", **common), ObjectiveConfig(),
                              torch.Generator().manual_seed(6)), channels=1)
    torch.testing.assert_close(physics[0], identity[0], atol=1e-5, rtol=0)
    assert (physics[1] - identity[1]).abs().amax(dim=(1, 2)).min() > 1e-2  # every channel of image 1 is deblurred


@pytest.mark.parametrize("conditions", [None, {}, {"coc": None}])
def test_physics_restore_without_a_coc_map_is_a_clear_error(conditions):
    cfg = SamplerConfig(name="fast", steps=2, consistency="physics")
    with pytest.raises(ValueError, match="--coc"):
        restore_batch(METHOD, ZeroScore(), torch.rand(1, 3, 16, 16), RestoreContext(cfg, ObjectiveConfig(), conditions=conditions), channels=1)
