"""The SegFormer defocus-map estimator and its method."""

from __future__ import annotations

import pytest
import torch

from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.defocus_map import ModelConfig, ObjectiveConfig, SamplerConfig

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
