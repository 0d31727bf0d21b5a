"""IFAN's port (issue 23): the IAC against a direct per-pixel reference of the released IAC.py (models/IAC.py, the
first kernel twice; and the paper's separable form), the network's shapes and sizes, the reblurring loss."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from defocuskit.inference.load import load_model
from defocuskit.inference.release import import_release
from defocuskit.io.release import ReleaseError, random_checkpoint
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.models.filter_layers import iac, iac_channels, separable_filter


def reference_separable(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor, k: int) -> torch.Tensor:
    """Pixel by pixel: out[c, y, x] = sum_i sum_j v[c, i](y, x) h[c, j](y', x) ... written as the two passes of
    models/IAC.py SAC, each a window of k taps along one axis of the replicate-padded map."""
    b, c, h, w = x.shape
    pad = (k - 1) // 2
    v, hz = first.reshape(b, c, k, h, w), second.reshape(b, c, k, h, w)
    rows = torch.zeros_like(x)
    for y in range(h):
        for i in range(k):
            rows[:, :, y] += x[:, :, min(max(y + i - pad, 0), h - 1)] * v[:, :, i, y]
    out = torch.zeros_like(x)
    for xx in range(w):
        for j in range(k):
            out[..., xx] += rows[..., min(max(xx + j - pad, 0), w - 1)] * hz[:, :, j, :, xx]
    return out


def test_the_separable_filter_is_the_released_two_pass_filter():
    g = torch.Generator().manual_seed(0)
    x, first, second = torch.rand(2, 3, 6, 7, generator=g), torch.randn(2, 9, 6, 7, generator=g), \
        torch.randn(2, 9, 6, 7, generator=g)
    torch.testing.assert_close(separable_filter(x, first, second, 3), reference_separable(x, first, second, 3))
    delta = torch.zeros(1, 3 * 5, 4, 4)
    delta[:, 2::5] = 1.0  # the centre tap of every channel: the identity
    x = torch.rand(1, 3, 4, 4, generator=g)
    torch.testing.assert_close(separable_filter(x, delta, delta, 5), x)


def test_iac_iterates_kernels_biases_and_activations_as_released():
    g = torch.Generator().manual_seed(1)
    n, c, k = 2, 3, 3
    x = torch.randn(1, c, 5, 6, generator=g)
    filters = 0.5 * torch.randn(1, iac_channels(n, c, k), 5, 6, generator=g)
    span = 2 * c * k
    expected = x
    for i in range(n):  # IAC.py: F1 used in both passes (second_kernel=False); bias; LeakyReLU except after the last
        first = filters[:, i * span: i * span + c * k]
        expected = reference_separable(expected, first, first, k) + filters[:, n * span + i * c: n * span + (i + 1) * c]
        if i < n - 1:
            expected = F.leaky_relu(expected, 0.1)
    torch.testing.assert_close(iac(x, filters, n, k, act_last=False), expected)
    torch.testing.assert_close(iac(x, filters, n, k, act_last=True), F.leaky_relu(expected, 0.1))
    fixed = iac(x, filters, n, k, second_kernel=True)  # the paper's separable kernels differ from the release's
    assert not torch.allclose(fixed, F.leaky_relu(expected, 0.1))


def test_ifan_shapes_sizes_and_a_training_step():
    method = get_method("ifan")
    recipe = load_recipe("ifan-tiny")
    torch.manual_seed(0)
    net = method.build(recipe.model, recipe.objective, True)
    blur, sharp = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)
    pred, filters = net.deblur_with_filters(blur)
    assert pred.shape == blur.shape and filters.shape == (2, net.filter_channels, 4, 5)
    assert net.disparity(blur).shape == (2, 1, 4, 5)  # the DME's map at 1/8 resolution
    assert net.reblur(sharp, filters).shape == (2, 3, 4, 5)
    value = method.loss(net, {"blur": blur, "sharp": sharp}, recipe.objective)
    value.backward()
    assert net.reblur.body[0][0].weight.grad.abs().sum() > 0  # the reblurring loss trains the RBN
    assert net.filter_predictor[3].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 3, 30, 32))
    no_rbn = load_recipe("ifan-tiny", ["model.reblur=false"])
    with pytest.raises(ValueError, match="reblur_weight > 0 needs the reblurring network"):
        method.build(no_rbn.model, no_rbn.objective, True)
    assert load_recipe("ifan").model.second_kernel and not load_recipe(
        "ifan", list(method.release.overrides)).model.second_kernel  # imports build the released IAC


def test_an_ifan_of_table_4_is_imported_by_the_call_its_refusal_advises(tmp_path: Path) -> None:
    """IFAN_8.pytorch (configs/config_IFAN_8.py: N 8 and RBF_num 8; IFAN_26: RBF_num 9): the plain import refuses it
    in one line naming the overrides that build it, and the advised call with exactly those imports it."""
    layout = json.loads((Path(__file__).parent / "data" / "release-ifan.json").read_text())["checkpoint"]
    filters = 8 * 128 * 7  # N x ch4 x (2 Fs + 1)
    for key, axis, size in (("module.Network.F.3.weight", 0, filters), ("module.Network.F.3.bias", 0, filters),
                            ("module.reblurNet.RBF.0.0.weight", 1, filters), ("module.reblurNet.RBF.3.weight", 0, 168),
                            ("module.reblurNet.RBF.3.bias", 0, 168)):  # RBF_num x 3 x (2 RBFs + 1)
        layout[key]["shape"][axis] = size
    pth, out = tmp_path / "IFAN_8.pytorch", tmp_path / "ifan8.safetensors"
    torch.save(random_checkpoint(layout, torch.Generator().manual_seed(0)), pth)
    with pytest.raises(ReleaseError) as caught:
        import_release("ifan", pth, out)
    message = str(caught.value)
    assert "\n" not in message and "N = 8 IAC iterations" in message, message
    advised = re.search(r"overrides=\[(.*)\]\)$", message)
    assert advised, message
    overrides = [o.strip().strip("'") for o in advised[1].split(",")]
    assert overrides == ["model.iterations=8", "model.reblur_iterations=8"], message
    import_release("ifan", pth, out, overrides=overrides)
    _, recipe, net = load_model(out)
    assert (recipe.model.iterations, recipe.model.reblur_iterations, net.iterations) == (8, 8, 8)
    assert not recipe.model.second_kernel  # still the release's IAC
