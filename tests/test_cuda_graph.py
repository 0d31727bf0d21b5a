"""diffusion.cuda_graph: the score network's calls replayed from CUDA graphs on a GPU, the model itself elsewhere;
HIDD's samplers call the network through it. The GPU half runs where a GPU is visible (docs/benchmarks.md has its
measured speed-up and equality on an H200)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from defocuskit.diffusion import cuda_graph
from defocuskit.diffusion.cuda_graph import GraphedScore, graphed
from defocuskit.inference.restore import resolve_sampler, restore_image
from defocuskit.methods import get_method
from defocuskit.methods import hidd as hidd_method
from defocuskit.methods.recipes import resolve_recipe


def tiny_prior() -> tuple:
    recipe = resolve_recipe({"method": "hidd", "data": {"image_size": 32, "channels": 1},
                             "model": {"channels": 1, "image_size": 32, "nf": 8, "ch_mult": [1, 2],
                                       "num_res_blocks": 1, "attn_resolutions": [16]}})
    torch.manual_seed(0)
    return recipe, get_method("hidd").build(recipe.model, recipe.objective, False).eval()


def test_on_a_cpu_it_is_the_model_itself() -> None:
    _, model = tiny_prior()
    x, sigma = torch.rand(2, 1, 32, 32), torch.full((2,), 3.0)
    score = graphed(model)
    with torch.no_grad():
        assert torch.equal(score(x, sigma), model(x, sigma))
    assert score.graphs == 0 and score.failed is None


def test_hidd_samplers_call_the_network_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, model = tiny_prior()
    calls = []

    def counting(net):
        wrapped = GraphedScore(net)

        def call(x, sigma):
            calls.append(tuple(x.shape))
            return wrapped(x, sigma)
        return call

    monkeypatch.setattr(hidd_method, "graphed", counting)
    image = np.random.default_rng(0).random((32, 32, 1), dtype=np.float32)
    for name, steps in (("released", 3), ("fast", 4)):
        calls.clear()
        cfg = resolve_sampler(recipe, steps, name=name, sets=["sampler.consistency=identity"])
        restore_image(get_method("hidd"), recipe, model, image, progress=False, sampler_cfg=cfg)
        assert sum(shape[0] for shape in calls) == cfg.resolved().nfe(), name  # every evaluation (chains batched)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_replays_equal_the_eager_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = tiny_prior()
    model = model.cuda()
    score = GraphedScore(model)
    with torch.no_grad():
        for batch, calls in ((1, cuda_graph.WARM_UP_CALLS + 2), (3, cuda_graph.WARM_UP_CALLS + 1)):
            for _ in range(calls):  # the warm-up calls, the capture, then replays
                x, sigma = torch.rand(batch, 1, 32, 32, device="cuda"), torch.rand(batch, device="cuda") * 10
                assert torch.equal(score(x, sigma), model(x, sigma))
        assert score.graphs == 2 and score.failed is None
    x, sigma = torch.rand(1, 1, 32, 32, device="cuda"), torch.ones(1, device="cuda")
    score(x, sigma)  # gradients on: eager, nothing captured
    assert score.graphs == 2
    monkeypatch.setenv(cuda_graph.ENV, "0")
    off = GraphedScore(model)
    with torch.no_grad():
        off(x, sigma)
    assert off.graphs == 0
