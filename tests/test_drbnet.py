"""DRBNet's port (issue 23): the per-pixel filter against an unfold reference of the released FAC's layout, the
four estimates and the loss on every scale, the [-1, 1] mapping of restore."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.recipes import load_recipe
from defocuskit.models.filter_layers import fac


def test_fac_is_a_per_pixel_window_filter_shared_by_the_channels():
    g = torch.Generator().manual_seed(0)
    k = 5
    x, kernel = torch.rand(2, 3, 6, 7, generator=g), torch.randn(2, k * k, 6, 7, generator=g)
    patches = F.unfold(F.pad(x, (2, 2, 2, 2), mode="replicate"), k).reshape(2, 3, k * k, 6, 7)  # tap i * k + j
    torch.testing.assert_close(fac(x, kernel, k), (patches * kernel[:, None]).sum(2))
    shift = torch.zeros(1, k * k, 4, 4)
    shift[:, 2 * k + 3] = 1.0  # row 2 (centre), column 3: the pixel to the right
    x = torch.rand(1, 3, 4, 4, generator=g)
    torch.testing.assert_close(fac(x, shift, k)[..., :3], x[..., 1:])


def test_four_estimates_each_supervised_and_restore_maps_the_range():
    method = get_method("drbnet")
    recipe = load_recipe("drbnet-tiny")
    torch.manual_seed(0)
    net = method.build(recipe.model, recipe.objective, True)
    blur = torch.rand(2, 3, 32, 40)
    estimates = net(blur * 2 - 1)
    assert [tuple(e.shape[-2:]) for e in estimates] == [(4, 5), (8, 10), (16, 20), (32, 40)]
    batch = {"blur": blur, "sharp": torch.rand(2, 3, 32, 40)}
    coarse_only = load_recipe("drbnet-tiny", ["objective.scale_weights=[1.0, 0.0, 0.0, 0.0]"]).objective
    method.loss(net, batch, coarse_only).backward()
    assert net.drbs[0].kernel[2].weight.grad.abs().sum() > 0  # the 1/8 estimate is supervised on its own
    assert net.drbs[3].kernel[2].weight.grad is None  # ... and the finest DRB takes no part in it
    out = method.restore(net, blur, RestoreContext(None, recipe.objective))
    torch.testing.assert_close(out, (net(blur * 2 - 1)[-1].clamp(-1, 1) + 1) / 2)
    assert out.min() >= 0 and out.max() <= 1
    for bad in ("[1.0, 1.0]", "[0.0, 0.0, 0.0, 0.0]", "[1.0, -1.0, 1.0, 1.0]"):
        wrong = load_recipe("drbnet-tiny", [f"objective.scale_weights={bad}"])
        with pytest.raises(ValueError, match="scale_weights"):
            method.build(wrong.model, wrong.objective, True)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 30, 32))
