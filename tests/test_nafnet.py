"""NAFNet blocks, the U-Net (any size in, same size out), PSNR loss and the nafnet method."""

from __future__ import annotations

import math

import pytest
import torch

from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.nafnet import ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.methods.recipes import resolve_recipe
from defocuskit.models.deform import DCNv4
from defocuskit.models.nafnet import NAFBlock, NAFNet, psnr_loss
from defocuskit.train.checks import check_recipe


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_block_starts_as_identity_and_learns():
    torch.manual_seed(0)
    block = NAFBlock(8)
    x = torch.randn(2, 8, 9, 7)
    assert torch.equal(block(x), x)  # beta = gamma = 0 at init
    with torch.no_grad():
        block.beta.fill_(1.0)
    y = block(x)
    y.square().mean().backward()
    assert not torch.allclose(y, x)
    assert block.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("size", [(32, 32), (29, 45), (7, 5)])
def test_unet_keeps_any_size(size):
    torch.manual_seed(1)
    net = NAFNet(3, 3, 8, [1, 1, 1], 1, [1, 1, 1])
    x = torch.rand(2, 3, *size, requires_grad=True)
    y = net(x)
    assert y.shape == x.shape
    y.mean().backward()
    assert x.grad.abs().sum() > 0 and net.intro.weight.grad.abs().sum() > 0


def test_global_residual_and_deformable_levels():
    torch.manual_seed(2)
    net = NAFNet(4, 3, 8, [1, 1], 1, [1, 1], enc_dw=["dcn_norm", "conv"], dec_dw=["conv", "dcn"])
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.zero_()
    x = torch.rand(1, 4, 20, 24)
    assert torch.allclose(net(x), x[:, :3])  # zero ending conv: the output is the input
    deform = [m for m in net.modules() if isinstance(m, DCNv4)]
    assert len(deform) == 2  # outer encoder and decoder level only
    assert isinstance(net.encoders[0][0].conv2[0], DCNv4)  # "dcn_norm": DCNv4 then layer norm
    assert isinstance(net.decoders[1][0].conv2, DCNv4)
    assert not isinstance(net.encoders[1][0].conv2, DCNv4)
    with pytest.raises(ValueError, match="spatial layer 'dcnv9'"):
        NAFNet(4, 3, 8, [1, 1], 1, [1, 1], enc_dw=["dcnv9", "conv"])
    with pytest.raises(ValueError, match="one entry per level"):
        NAFNet(4, 3, 8, [1, 1], 1, [1, 1], enc_dw=["conv"])
    with pytest.raises(ValueError, match="global residual"):
        NAFNet(1, 3, 8, [1], 1, [1])


def test_paper_size_parameter_count():
    # NAFNet paper (Chen et al. 2022), GoPro NAFNet-width32: 17.11 M parameters
    net = NAFNet(3, 3, 32, [1, 1, 1, 28], 1, [1, 1, 1, 1])
    assert round(_count(net) / 1e6, 2) == 17.11


def test_psnr_loss_is_minus_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)
    assert math.isclose(psnr_loss(b, a).item(), -20.0, abs_tol=1e-4)


def test_method_trains_and_restores():
    method = get_method("nafnet")
    assert method.data == "paired" and method.output == "image"
    cfg = ModelConfig(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])
    torch.manual_seed(3)
    model = method.build(cfg, ObjectiveConfig(), True)
    sharp = torch.rand(2, 3, 32, 32)
    blur = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    batch = {"blur": blur, "sharp": sharp}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = method.loss(model, batch, ObjectiveConfig()).item()
    for _ in range(30):
        opt.zero_grad()
        method.loss(model, batch, ObjectiveConfig()).backward()
        opt.step()
    last = method.loss(model, batch, ObjectiveConfig()).item()
    assert last < first - 1.0  # at least 1 dB better
    out = method.restore(model, blur, RestoreContext(SamplerConfig(), ObjectiveConfig()))
    assert out.shape == blur.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="channels"):  # the loss sees data.channels images: checked once, before
        check_recipe(resolve_recipe({"method": "nafnet", "data": {"channels": 1}}), method)
    with pytest.raises(ValueError, match="objective.loss"):
        method.build(cfg, ObjectiveConfig(loss="ssim"), True)


def test_target_lowpass_counts_the_detail_not_the_light():
    method = get_method("nafnet")
    identity = torch.nn.Identity()  # a "model" that returns the shot as it is
    gen = torch.Generator().manual_seed(0)
    sharp = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64, generator=gen), 3, 1, 1, count_include_pad=False)
    ramp = torch.linspace(0.0, 1.0, 64).view(1, 1, 1, 64)
    lifted = sharp + 0.1 + 0.05 * ramp  # the same detail under other light (a veil, an exposure): no blur at all
    blurred = torch.nn.functional.avg_pool2d(sharp, 7, 1, 3, count_include_pad=False)
    for cfg_plain, cfg_detail in ((ObjectiveConfig(), ObjectiveConfig(target_lowpass=8.0)),
                                  (ObjectiveConfig(loss="l1"), ObjectiveConfig(loss="l1", target_lowpass=8.0))):
        light = [method.loss(identity, {"blur": lifted, "sharp": sharp}, c).item() for c in (cfg_plain, cfg_detail)]
        blur = [method.loss(identity, {"blur": blurred, "sharp": sharp}, c).item() for c in (cfg_plain, cfg_detail)]
        if cfg_plain.loss == "psnr":
            assert light[0] > -22 and light[1] < -40  # the light no longer counts ...
            assert abs(blur[1] - blur[0]) < 1.0 and blur[1] > -30  # ... the blur still does
        else:
            assert light[0] > 0.1 and light[1] < 0.01 and blur[1] > 0.5 * blur[0] > 0.005
    cfg = ModelConfig(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])
    with pytest.raises(ValueError, match="target_lowpass"):
        method.build(cfg, ObjectiveConfig(target_lowpass=-1.0), True)


def test_a_model_trained_on_detail_targets_does_not_learn_the_pairs_light():
    """Pairs whose shots are darker than their sharp references (0.7x) and blurred: trained on the plain target the
    model brightens an unseen shot, trained with target_lowpass it keeps the shot's light and still sharpens it."""
    method = get_method("nafnet")
    cfg = ModelConfig(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])

    def pairs(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        sharp = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 32, 32, generator=g), 3, 1, 1, count_include_pad=False)
        return {"blur": 0.7 * torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), "sharp": sharp}

    train, unseen = pairs(1), pairs(2)
    means = {}
    for lowpass in (0.0, 6.0):
        torch.manual_seed(0)
        objective = ObjectiveConfig(target_lowpass=lowpass)
        model = method.build(cfg, objective, True)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(60):
            opt.zero_grad()
            method.loss(model, train, objective).backward()
            opt.step()
        with torch.no_grad():
            out = model(unseen["blur"])
        means[lowpass] = (out.mean() / unseen["blur"].mean()).item()
        detail = out - torch.nn.functional.avg_pool2d(out, 5, 1, 2, count_include_pad=False)
        shot = unseen["blur"] - torch.nn.functional.avg_pool2d(unseen["blur"], 5, 1, 2, count_include_pad=False)
        assert detail.std() > 1.1 * shot.std()  # both sharpen the unseen shots
    assert means[0.0] > 1.2 and abs(means[6.0] - 1.0) < 0.05, means
