"""The defocus-map estimators (SegFormer and the dilated CNN) and their method."""

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
    # only the image's local contrast reaches the network: a brightness offset changes nothing
    torch.testing.assert_close(model(x * 0.5), model(x * 0.5 + 0.3), rtol=0, atol=1e-6)


def test_dilated_arch_refuses_what_it_cannot_use():
    method = get_method("defocus-map")
    with pytest.raises(ValueError, match="model.arch"):
        method.build(ModelConfig(arch="unet"), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="model.pretrained"):
        method.build(ModelConfig(arch="dilated", pretrained="nvidia/mit-b0"), ObjectiveConfig(), True)
    with pytest.raises(ValueError, match="dilations"):
        method.build(ModelConfig(arch="dilated", dilations=[1, 0]), ObjectiveConfig(), True)
