"""Check defocuskit's RDDM pre-deblur and denoiser against the released networks of eldestin/DiffDeblur.

    python tools/check_rddm_release.py --release /path/to/DiffDeblur   # a checkout of the released code

Builds the released `NAFNetModified` (pre-deblur) and `NAFNetFusionModifiedcat` (denoiser) with
the released YAML's settings, and defocuskit's `PreDeblur` / `ResidualDenoiser` from
recipes/rddm.yaml; compares parameter counts, copies random weights across by name and compares
outputs. The release's DCNv4 CUDA extension and torchvision are replaced by stand-ins for the
duration of the check (same layers as OpenGVLab/DCNv4's module; the operator is defocuskit's
`dcnv4_core`), so the check runs on a CPU; it needs `einops` (the released files import it).
Nothing of the release is copied into defocuskit: its files are imported from the checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch
from torch import nn

from defocuskit.methods.recipes import load_recipe
from defocuskit.models.deform import dcnv4_core
from defocuskit.models.rddm import PreDeblur, ResidualDenoiser


class StandInDCNv4(nn.Module):
    """OpenGVLab DCNv4's layers on (N, L, C) tokens, forward through defocuskit's operator."""

    def __init__(self, channels: int = 64, kernel_size: int = 3, group: int = 4, dw_kernel_size: int | None = None,
                 output_bias: bool = True, **_: object) -> None:
        super().__init__()
        self.group, self.k = group, kernel_size
        k2 = group * kernel_size * kernel_size
        self.offset_mask_dw = nn.Conv2d(channels, channels, dw_kernel_size, 1, (dw_kernel_size - 1) // 2, groups=channels)
        self.offset_mask = nn.Linear(channels, int(math.ceil(k2 * 3 / 8) * 8))
        self.value_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels, bias=output_bias)

    def forward(self, tokens: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        n, length, c = tokens.shape
        h, w = shape
        x = self.value_proj(tokens).reshape(n, h, w, c).permute(0, 3, 1, 2)
        om = self.offset_mask_dw(tokens.view(n, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        om = self.offset_mask(om).permute(0, 3, 1, 2)
        return self.output_proj(dcnv4_core(x, om, self.k, self.group).permute(0, 2, 3, 1).reshape(n, length, c))


def _released_modules(release: Path, scratch: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The released Predelur_network and DenoisingNetwork modules, imported with the stand-ins in place."""
    pkg = scratch / "released_rddm"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("model_utils.py", "Predelur_network.py", "DenoisingNetwork.py"):
        shutil.copy(release / "models" / "DenoisingNetwork" / name, pkg / name)
    dcn = types.ModuleType("DCNv4")
    dcn.modules = types.SimpleNamespace(DCNv4=StandInDCNv4)  # type: ignore[attr-defined]
    tv = types.ModuleType("torchvision")
    tv.models, tv.transforms = types.SimpleNamespace(), types.SimpleNamespace()  # type: ignore[attr-defined]
    sys.modules.update({"DCNv4": dcn, "torchvision": tv})
    sys.path.insert(0, str(scratch))
    return importlib.import_module("released_rddm.Predelur_network"), importlib.import_module("released_rddm.DenoisingNetwork")


def _port_name(name: str) -> str:
    for old, new in (("mlp_guided", "guide"), ("mlp_fusion", "fusion"), ("middle_blks", "middle"),
                     ("conv2.dcnconv.dcn_conv.", "conv2.0."), ("conv2.norm.", "conv2.1."), ("conv2.dcn_conv.", "conv2.")):
        name = name.replace(old, new)
    return name


def _share_random_weights(released: nn.Module, port: nn.Module) -> None:
    own = port.state_dict()
    names = {k: _port_name(k) for k in released.state_dict()}
    missing = sorted(set(own) - set(names.values()))
    unknown = sorted(k for k, v in names.items() if v not in own)
    if missing or unknown:
        raise SystemExit(f"layouts differ: port-only {missing[:5]}, release-only {unknown[:5]}")
    torch.manual_seed(0)
    new = {v: torch.randn_like(own[v]) * 0.1 for v in names.values()}  # no zero init hides a difference
    port.load_state_dict(new)
    released.load_state_dict({k: new[v].reshape(released.state_dict()[k].shape) for k, v in names.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True, help="checkout of eldestin/DiffDeblur")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/rddm.yaml"))
    args = parser.parse_args()
    m = load_recipe(args.recipe).model
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
        pre_mod, den_mod = _released_modules(args.release, Path(scratch))
        rel_pre = pre_mod.NAFNetModified(img_channel=4, out_channel=3, width=32, num_heads=[1, 2, 4, 8],
                                         enc_blk_nums=[1, 1, 1, 6], dec_blk_nums=[1, 1, 1, 1], middle_blk_num=1,
                                         global_residual=False)
        rel_den = den_mod.NAFNetFusionModifiedcat(img_channel=7, width=64, enc_blk_nums=[1, 1, 1, 14], middle_blk_num=1,
                                                  dec_blk_nums=[1, 1, 1, 1], Finetune=False, res_50=True, dual=False)
    pre = PreDeblur(3, m.pre_width, m.pre_enc_blocks, m.pre_middle_blocks, m.pre_dec_blocks, m.pre_enc_dw, m.pre_dec_dw,
                    m.pre_scale, global_residual=False)  # the release's layout
    den = ResidualDenoiser(3, m.width, m.enc_blocks, m.middle_blocks, m.dec_blocks, 64 + 256 + 512 + 1024, m.enc_dw, m.dec_dw)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    print(f"pre-deblur parameters: release {count(rel_pre):,}, port {count(pre):,}")
    print(f"denoiser parameters:   release {count(rel_den):,}, port {count(den):,}")
    _share_random_weights(rel_pre, pre.net)
    _share_random_weights(rel_den, den)
    torch.manual_seed(1)
    x, dmap = torch.rand(2, 3, 32, 48), torch.rand(2, 1, 32, 48)  # a multiple of 16: no padding on either side
    feats = [torch.randn(2, 64, 8, 12), torch.randn(2, 256, 8, 12), torch.randn(2, 512, 4, 6), torch.randn(2, 1024, 2, 3)]
    cond, r_t, t = torch.rand(2, 4, 32, 48), torch.randn(2, 3, 32, 48), torch.tensor([650, 3])
    with torch.no_grad():
        a, b = rel_pre(torch.cat([x, dmap], 1)), pre(x, dmap)
        print(f"pre-deblur outputs: max |difference| {(a - b).abs().max():.2e} (mean |output| {a.abs().mean():.2e})")
        a, b = rel_den(torch.cat([cond, r_t], 1), t, feats), den(r_t, t, cond, feats)
        print(f"denoiser outputs:   max |difference| {(a - b).abs().max():.2e} (mean |output| {a.abs().mean():.2e})")


if __name__ == "__main__":
    main()
