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
