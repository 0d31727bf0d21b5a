"""The defocus-map estimators (SegFormer and the dilated CNN) and their method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.inference.load import load_model
from defocuskit.inference.restore import restore_image
from defocuskit.io.images import to_float
from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.defocus_map import ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.loop import train

TINY = ModelConfig(
    hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
    decoder_hidden_size=16, drop_path_rate=0.0,
)


def test_forward_backward_any_size():
    torch.manual_seed(0)
    model = get_method("defocus-map").build(TINY, ObjectiveConfig(), True)
    x = torch.rand(2, 3, 40, 56)
    coc = model(x)
    assert coc.shape == (2, 1, 40, 56)
    assert coc.min() >= 0
    coc.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_paper_config_is_mit_b0():
    model = get_method("defocus-map").build(ModelConfig(), ObjectiveConfig(), True)
    cfg = model.segformer.config
    assert cfg.hidden_sizes == [32, 64, 160, 256] and cfg.depths == [2, 2, 2, 2] and cfg.num_labels == 1
    n = sum(p.numel() for p in model.parameters())
    assert 3.5e6 < n < 3.9e6  # SegFormer-B0: 3.7 M with a one-channel head


def test_method_learns_coc_and_restores_map():
    method = get_method("defocus-map")
    assert method.data == "map" and method.output == "defocus_map"
    torch.manual_seed(1)
    model = method.build(TINY, ObjectiveConfig(), True)
    blur = torch.rand(2, 3, 32, 32)
    xx = torch.linspace(0, 6, 32).view(1, 1, 1, 32).expand(2, 1, 32, 32)
    batch = {"blur": blur, "coc": xx.clone()}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    obj = ObjectiveConfig()
    first = method.loss(model, batch, obj).item()
    for _ in range(30):
        opt.zero_grad()
        method.loss(model, batch, obj).backward()
        opt.step()
    last = method.loss(model, batch, obj).item()
    assert last < 0.7 * first
    model.eval()
    out = method.restore(model, blur, RestoreContext(SamplerConfig(), obj))
    assert out.shape == (2, 1, 32, 32)
    charb = method.loss(model, batch, ObjectiveConfig(loss="charbonnier"))
    assert charb.item() > 0
    with pytest.raises(ValueError, match="coc"):
        method.loss(model, {"blur": blur}, obj)
    # a batch of kind "map" with has_coc flags: only the flagged samples count
    flagged = dict(batch, has_coc=torch.tensor([True, False]), coc=torch.stack([xx[0], torch.full_like(xx[0], 99.0)]))
    first_only = method.loss(model, {"blur": blur[:1], "coc": xx[:1]}, obj)
    torch.testing.assert_close(method.loss(model, flagged, obj), first_only)
    with pytest.raises(ValueError, match="objective.loss"):
        method.build(TINY, ObjectiveConfig(loss="l2"), True)


def test_quantile_loss_reads_less_blur_below_the_median():
    method = get_method("defocus-map")
    torch.manual_seed(2)
    model = method.build(ModelConfig(arch="dilated", width=8, dilations=[1, 2]), ObjectiveConfig(), True)
    blur = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        pred = model(blur)
    over, under = {"blur": blur, "coc": pred - 1.0}, {"blur": blur, "coc": pred + 1.0}  # the estimate 1 px off
    l1 = method.loss(model, over, ObjectiveConfig())
    torch.testing.assert_close(method.loss(model, over, ObjectiveConfig(loss="quantile")), l1)  # 0.5: L1
    q = ObjectiveConfig(loss="quantile", quantile=0.3)
    torch.testing.assert_close(method.loss(model, over, q), 1.4 * l1)  # an overestimate costs 2 * 0.7
    torch.testing.assert_close(method.loss(model, under, q), 0.6 * l1)  # an underestimate 2 * 0.3
    with pytest.raises(ValueError, match="objective.quantile"):
        ObjectiveConfig(loss="quantile", quantile=1.0)


DILATED = ModelConfig(arch="dilated", width=8, dilations=[1, 2, 4])


def test_dilated_arch_keeps_the_estimator_interface():
    method = get_method("defocus-map")
    torch.manual_seed(0)
    model = method.build(DILATED, ObjectiveConfig(), True)
    assert model.multiple == 1 and not model.has_blur_head
    x = torch.rand(2, 3, 29, 37)
    coc = model(x)
    assert coc.shape == (2, 1, 29, 37) and coc.min() >= 0
    assert model(x[:, :1]).shape == (2, 1, 29, 37)  # a grey image is read as RGB
    assert set(model.maps(x)) == {"coc"}
    with pytest.raises(ValueError, match="blur head"):
        model.blur_logit(x)
    headed = method.build(ModelConfig(arch="dilated", width=8, dilations=[1, 2], blur_head=True),
                          ObjectiveConfig(blur_weight=1.0), True)
    maps = headed.maps(x)
    assert maps["coc"].shape == maps["blur_logit"].shape == (2, 1, 29, 37)
    torch.testing.assert_close(headed.blur_logit(x), maps["blur_logit"])
    # only band-pass energies reach the network: a brightness offset changes nothing (to float rounding of the log)
    torch.testing.assert_close(model(x * 0.5), model(x * 0.5 + 0.3), rtol=0, atol=1e-3)
    assert model.downsample == 4 and model.features == "bands" and model.residual
    # the former layout (full resolution, the image minus its 7x7 mean, a plain stack) is still there
    former = method.build(ModelConfig(arch="dilated", width=8, dilations=[1, 2], features="contrast", downsample=1,
                                      residual=False), ObjectiveConfig(), True)
    assert former(x).shape == (2, 1, 29, 37) and "body.0.weight" in former.state_dict()
    torch.testing.assert_close(former(x * 0.5), former(x * 0.5 + 0.3), rtol=0, atol=1e-6)


def test_dilated_arch_refuses_what_it_cannot_use():
    method = get_method("defocus-map")
    with pytest.raises(ValueError, match="model.arch"):
        method.build(ModelConfig(arch="unet"), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="model.pretrained"):
        method.build(ModelConfig(arch="dilated", pretrained="nvidia/mit-b0"), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="dilations"):
        method.build(ModelConfig(arch="dilated", dilations=[1, 0]), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="model.features"):
        method.build(ModelConfig(arch="dilated", features="edges"), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="model.downsample"):
        method.build(ModelConfig(arch="dilated", downsample=0), ObjectiveConfig(), True)


# ------------------------------------------------------------------------------------------- a test of learning
# The demo's estimator (recipes/defocus-map-tiny.yaml) trained for LEARN_STEPS steps on the built-in set
# (LEARN_SIZE px, f/1.4 and f/2.8 only, for time) must follow the CoC of photographs it never saw: the per-image
# correlation with coc.png on the held-out test split (the 8 chelsea pairs), not a loss going down. The network's
# learning is judged at the 30th percentile (objective.quantile=0.3); the shipped 5th percentile reads 0 px over
# much of the small blurs by design (docs/benchmarks.md, "A conservative map"), which costs correlation, and is
# judged by what it is for: it learns, and it reads less blur than the 0.3 estimator on the unseen photographs.
# Measured at 0.3 (docs/benchmarks.md, "The defocus map redesigned (issue 20)"; 2-core CPU, one thread), seeds 0, 1, 2:
# untrained +0.09, +0.16, -0.12; after 100 steps +0.63, +0.63, +0.60, with 7 of the 8 images at +0.57 or more
# and one (chelsea_v2 at f/2.8, the flattest) at +0.19, +0.26, +0.03; at 0.05 (seed 0) +0.37. On an idle machine
# each training takes 11 s (training and scoring) after a 4 s ingest; 30-40 s under load.
# The former layout (the image minus its 7x7 mean at full resolution, L1) reached +0.44 in the same steps at 4x
# the time (three images under +0.3, one negative), the tiny SegFormer -0.03.
LEARN_SIZE = 128
LEARN_F_NUMBERS = (1.4, 2.8)
LEARN_STEPS = 100


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return 0.0 if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def learn_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("map-learning") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=LEARN_SIZE,
                                                             synthetic_f_numbers=LEARN_F_NUMBERS), progress=False)
    return out


def _held_out_correlations(method, recipe, model, shards: Path) -> tuple[list[float], float]:
    """Per-image correlation of the estimate (as inference runs it: tiles of the training size) with coc.png, and
    the mean estimate (pixels) over the held-out images."""
    out, means = [], []
    for s in iter_samples(shards, "test"):
        if s["blur"] is not None and s["coc"] is not None:
            coc = restore_image(method, recipe, model, to_float(s["blur"]), progress=False)[:, :, 0]
            out.append(_correlation(coc, s["coc"]))
            means.append(float(coc.mean()))
    return out, float(np.mean(means))


def _learn(shards: Path, folder: Path, *overrides: str) -> tuple[list[float], list[float], float]:
    """(untrained, trained) held-out correlations and the trained mean estimate of defocus-map-tiny."""
    recipe = load_recipe("defocus-map-tiny", [f"data.train={shards}/train-*.tar", f"output_dir={folder}",
                                              f"train.max_steps={LEARN_STEPS}", "train.log_every=1000",
                                              "train.checkpoint_every=100000", *overrides])
    method = get_method("defocus-map")
    torch.manual_seed(recipe.seed)  # the loop's initial weights
    untrained = method.build(recipe.model, recipe.objective, False).eval()
    before, _ = _held_out_correlations(method, recipe, untrained, shards)
    after, mean = _held_out_correlations(*load_model(train(recipe, resume=False)), shards)
    return before, after, mean


def test_the_tiny_estimator_learns_the_coc_of_unseen_photographs(learn_shards: Path, tmp_path: Path) -> None:
    train_scenes = {s["meta"]["scene"].split("_v")[0] for s in iter_samples(learn_shards, "train")}
    test_scenes = {s["meta"]["scene"].split("_v")[0] for s in iter_samples(learn_shards, "test")}
    assert test_scenes and not test_scenes & train_scenes  # unseen photographs
    before, after, median_ish = _learn(learn_shards, tmp_path / "q0.3", "objective.quantile=0.3")
    assert len(after) == 4 * len(LEARN_F_NUMBERS), after  # the 4 chelsea scenes at each f-number
    assert np.mean(after) >= 0.5 and np.mean(after) >= np.mean(before) + 0.3, (before, after)
    assert sum(r >= 0.4 for r in after) >= len(after) - 1, after  # nearly every held-out image, not only on average
    before, after, low = _learn(learn_shards, tmp_path / "default")  # the shipped quantile (0.05)
    assert np.mean(after) >= np.mean(before) + 0.2, (before, after)  # it learns the CoC's ordering too
    assert low < 0.8 * median_ish, (low, median_ish)  # and reads less blur than the 30th percentile
