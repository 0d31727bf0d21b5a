"""Check a port against the release's own network: the same random weights, through the importer, same outputs.

    python tools/check_release.py --method restormer --release /path/to/Restormer   # a checkout of swz30/Restormer
    python tools/check_release.py --method jdrl --release /path/to/JDRL --manifest tests/data/release-jdrl.json
    python tools/check_release.py --method ifan --release /path/to/IFAN --manifest tests/data/release-ifan.json
    python tools/check_release.py --method drbnet --release /path/to/DRBNet --manifest tests/data/release-drbnet.json

Builds the released module from the checkout (its files imported from a scratch copy, nothing of it copied into
defocuskit), fills it with random weights, saves them in the release's checkpoint container (as its training code
saves them), imports that file with defocuskit's importer (`defocuskit.inference.release.import_release`), loads
the model file and runs both networks on the same random input; prints parameter counts and the largest output
difference. `--manifest` writes the container's layout (keys -> shapes, no values) for the importer's tests.

Stand-ins, for the check only: JDRL's reblurring module calls `.cuda()` (replaced by the identity, the check runs
on the CPU); Restormer imports einops (a small `rearrange` below when einops is not installed); DRBNet.py imports
torchvision.utils, unused by the network (an empty module when torchvision is not installed). IFAN's IAC is pure
PyTorch in the release and runs as it is.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import math
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from defocuskit.inference.load import load_model
from defocuskit.inference.release import import_release
from defocuskit.io.release import checkpoint_layout
from defocuskit.methods import get_method

# (the release's module with random weights, its checkpoint container, compare(release, port) -> lines to print)
Built = tuple[nn.Module, dict[str, Any], Callable[[nn.Module, nn.Module], list[str]]]


def rearrange(t: torch.Tensor, pattern: str, **sizes: int) -> torch.Tensor:
    """einops.rearrange for patterns of named axes and parenthesised groups (what restormer_arch.py uses)."""
    left, right = (re.findall(r"\(([^)]*)\)|(\S+)", side) for side in pattern.split("->"))
    left, right = ([(g or s).split() for g, s in part] for part in (left, right))
    known = dict(sizes)
    for group, n in zip(left, t.shape):
        unknown = [a for a in group if a not in known]
        done = math.prod(known[a] for a in group if a in known)
        if unknown:
            known[unknown[0]] = n // done
    names = [a for group in left for a in group]
    out = t.reshape([known[a] for a in names]).permute([names.index(a) for group in right for a in group])
    return out.reshape([math.prod(known[a] for a in group) for group in right])


def _import_release(release: Path, scratch: Path, files: list[str], module: str) -> types.ModuleType:
    """`module` of the release, imported from copies of `files` (paths in the checkout) under `scratch`."""
    for name in files:
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(release / name, target)
        for parent in target.relative_to(scratch).parents:
            (scratch / parent / "__init__.py").touch()
    sys.path.insert(0, str(scratch))
    return importlib.import_module(module)


def random_weights(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for every tensor of `module`: He-scaled weights (activations neither vanish nor explode
    through a deep ReLU net, so a difference shows), norm scales near 1, biases near 0."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif value.dim() > 1:
            out[key] = torch.randn(value.shape, generator=g) * math.sqrt(2.0 / max(1, value[0].numel()))
        elif key.endswith("weight"):
            out[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(value.shape, generator=g)
    return out


def _jdrl(release: Path, scratch: Path) -> Built:
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]  # kpn.py's .cuda() calls
    files = ["models/model_deblur.py", "models/kpn.py", "utils/padding.py", "utils/arch_util.py"]
    deblur_mod = _import_release(release, scratch, files, "models.model_deblur")
    kpn_mod = importlib.import_module("models.kpn")
    released = nn.ModuleDict({"deblur": deblur_mod.VGG_Deblur(), "reblur": kpn_mod.Reblur_Model()}).eval()
    weights = random_weights(released)
    released.load_state_dict(weights)
    def part(prefix: str) -> dict[str, torch.Tensor]:  # saved from nn.DataParallel: "module." names
        return {f"module.{k[len(prefix):]}": v for k, v in weights.items() if k.startswith(prefix)}

    # solver.py's state (G_opt, the optimizer state, left out: the importer does not read it)
    container = {"epoch": 100, "global_step": 0, "G_state_dict": part("deblur."), "Reblur_state_dict": part("reblur.")}

    def compare(rel: nn.Module, port: nn.Module) -> list[str]:
        torch.manual_seed(1)
        blur, sharp = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)  # a multiple of 16: no padding either side
        bgr = [2, 1, 0]
        with torch.no_grad():
            a, b = rel["deblur"](blur[:, bgr]), port.deblur(blur)[0][:, bgr]  # the release reads BGR
            lines = [_line("deblurring U-Net (VGG_Deblur)", a, b)]
            a, b = rel["reblur"](sharp[:, bgr], blur[:, bgr]), port.reblur(sharp, blur)[0][:, bgr]
            lines.append(_line("reblurring module, whole image", a, b))
            inner = (..., slice(7, -7), slice(7, -7))  # the release pads with zeros, the port replicates edges
            lines.append(_line("reblurring module, 7 px from the border", a[inner], b[inner]))
        return lines

    return released, container, compare


def _restormer(release: Path, scratch: Path) -> Built:
    try:
        importlib.import_module("einops")
    except ImportError:
        sys.modules["einops"] = types.SimpleNamespace(rearrange=rearrange)  # type: ignore[assignment]
    arch = _import_release(release, scratch, ["basicsr/models/archs/restormer_arch.py"],
                           "basicsr.models.archs.restormer_arch")
    option = (release / "Defocus_Deblurring/Options/DefocusDeblur_Single_8bit_Restormer.yml").read_text()
    assert "dim: 48" in option and "num_blocks: [4,6,6,8]" in option and "LayerNorm_type: WithBias" in option
    released = arch.Restormer(inp_channels=3, out_channels=3, dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4,
                              heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
                              dual_pixel_task=False).eval()  # the option file's network_g
    weights = random_weights(released)
    released.load_state_dict(weights)

    def compare(rel: nn.Module, port: nn.Module) -> list[str]:
        torch.manual_seed(1)
        blur = torch.rand(2, 3, 32, 48)  # a multiple of 8
        with torch.no_grad():
            return [_line("Restormer", rel(blur), port(blur))]

    return released, {"params": weights}, compare  # basicsr save_network: {'params': state dict}


def _ifan(release: Path, scratch: Path) -> Built:
    files = ["models/archs/IFAN.py", "models/archs/RBN.py", "models/IAC.py", "models/nn_common.py", "models/utils.py"]
    arch = _import_release(release, scratch, files, "models.archs.IFAN")
    rbn = importlib.import_module("models.archs.RBN")
    option = (release / "configs/config_IFAN.py").read_text()
    values = {"ch": 32, "res_num": 2, "Fs": 3, "N": 17, "RBFs": 3, "RBF_num": 17, "wiF": 1.5, "wiRF": 1.0}
    for key, value in values.items():
        assert re.search(rf"config\.{key} = {value}\b", option), key
    config = types.SimpleNamespace(device="cpu", ks=3, **values)  # configs/config_IFAN.py, on the CPU
    net = arch.Network(config)
    released = nn.ModuleDict({"Network": net, "reblurNet": rbn.Network(config, net.kernel_dim)}).eval()
    weights = random_weights(released)
    released.load_state_dict(weights)
    # He-scaled filters (std ~ 70) make 17 IAC iterations overflow: the two filter heads' last convs are scaled so
    # that their outputs have std 0.3 on the check's input (a 3x3 separable kernel then keeps features bounded)
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for head in ("Network.F.3.", "reblurNet.RBF.3."):
            filters = net(x, x, x, is_train=True)["Filter"]
            out = filters if head.startswith("Network") else released["reblurNet"].RBF(filters)
            for key in (f"{head}weight", f"{head}bias"):
                weights[key] = weights[key] * (0.3 / float(out.std()))
            released.load_state_dict(weights)
    # ckpt_manager.py saves the trainer's DeblurNet (Network + reblurNet) as wrapped by DataParallel: "module."
    container = {f"module.{k}": v for k, v in weights.items()}

    def compare(rel: nn.Module, port: nn.Module) -> list[str]:
        torch.manual_seed(1)
        blur, sharp = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)  # a multiple of 8 (refine_val)
        with torch.no_grad():
            lines = [_line("IFAN, inference (clipped)", rel["Network"](blur)["result"], port(blur).clamp(0, 1))]
            # the training path (dual-pixel views: the blurred image as both; only the DME loss reads them)
            outs = rel["Network"](blur, blur, blur, is_train=True)
            pred, filters = port.deblur_with_filters(blur)
            lines.append(_line("IFAN, unclipped output", outs["result"], pred))
            lines.append(_line("IAC filters (filter predictor)", outs["Filter"], filters))
            lines.append(_line("reblurring network (RBN)", rel["reblurNet"](sharp, outs["Filter"])["SB"],
                               port.reblur(sharp, filters)))
            # float32 rounding, amplified over 17 IAC iterations, is all that differs: in float64 it vanishes
            a = copy.deepcopy(rel["Network"]).double()(blur.double(), blur.double(), blur.double(), is_train=True)
            lines.append(_line("IFAN, unclipped output in float64", a["result"],
                               copy.deepcopy(port).double()(blur.double())))
        return lines

    return released, container, compare


def _drbnet(release: Path, scratch: Path) -> Built:
    stubbed = False
    try:
        importlib.import_module("torchvision")
    except ImportError:  # DRBNet.py imports torchvision.utils (for saving images), unused by the network
        stub = types.ModuleType("torchvision")
        stub.utils = types.ModuleType("torchvision.utils")  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": stub, "torchvision.utils": stub.utils})  # type: ignore[attr-defined]
        stubbed = True
    try:
        arch = _import_release(release, scratch, ["models/DRBNet.py"], "models.DRBNet")
    finally:  # the stub (no __spec__) only for that import: diffusers, imported by defocuskit, probes torchvision
        if stubbed:
            for name in ("torchvision", "torchvision.utils"):
                sys.modules.pop(name, None)
    released = arch.DRBNet_single().eval()  # run.py --net_mode single
    weights = random_weights(released)
    released.load_state_dict(weights)
    # He-scaled per-pixel kernels (49 taps) amplify at every scale until the output saturates the clip: each
    # scale's kernel head (coarse to fine) is scaled so that its taps have std 0.02 on the check's input
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for level in (3, 2, 1, 0):
        head = getattr(released, f"upconv{level}_kernel")
        seen: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda module, args, out: seen.append(out))
        with torch.no_grad():
            released(x)
        hook.remove()
        for key in (f"upconv{level}_kernel.2.weight", f"upconv{level}_kernel.2.bias"):
            weights[key] = weights[key] * (0.02 / float(seen[0].std()))
        released.load_state_dict(weights)

    def compare(rel: nn.Module, port: nn.Module) -> list[str]:
        torch.manual_seed(1)
        blur = torch.rand(2, 3, 32, 48)  # a multiple of 16 (crop_image)
        with torch.no_grad():
            out = rel(blur * 2 - 1)  # run.py: images in [-1, 1]
            estimates = port(blur * 2 - 1)
            lines = [_line("DRBNet, output (clipped to [-1, 1])", out, estimates[-1].clamp(-1, 1))]
            a = copy.deepcopy(rel).double()(blur.double() * 2 - 1)
            lines.append(_line("DRBNet, output in float64", a, copy.deepcopy(port).double()(blur.double() * 2 - 1)[-1]
                               .clamp(-1, 1)))
        return lines

    return released, weights, compare  # run.py: network.load_state_dict(torch.load(ckpt_path)): a plain state dict


def _line(what: str, a: torch.Tensor, b: torch.Tensor) -> str:
    return (f"{what}: max |difference| {(a - b).abs().max():.2e} (outputs: mean |x| {a.abs().mean():.3f}, "
            f"std {a.std():.3f})")


BUILDERS = {"drbnet": _drbnet, "ifan": _ifan, "jdrl": _jdrl, "restormer": _restormer}


def _dump(layout: Any) -> str:
    """JSON with one line per tensor ({"shape": [...], "dtype": ...})."""
    compact: list[str] = []

    def mark(x: Any) -> Any:
        if isinstance(x, dict) and set(x) == {"shape", "dtype"}:
            compact.append(json.dumps(x))
            return f"@{len(compact) - 1}@"
        if isinstance(x, dict):
            return {k: mark(v) for k, v in x.items()}
        return [mark(v) for v in x] if isinstance(x, list) else x

    return re.sub(r'"@(\d+)@"', lambda m: compact[int(m[1])], json.dumps(mark(layout), indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, choices=sorted(BUILDERS))
    parser.add_argument("--release", type=Path, required=True, help="checkout of the released code")
    parser.add_argument("--manifest", type=Path, help="write the checkpoint container's layout here (JSON)")
    args = parser.parse_args()
    method = get_method(args.method)
    with tempfile.TemporaryDirectory() as scratch:
        released, container, compare = BUILDERS[args.method](args.release.resolve(), Path(scratch) / "release")
        checkpoint, model_file = Path(scratch) / f"{args.method}-release.pth", Path(scratch) / "imported.safetensors"
        torch.save(container, checkpoint)
        imported = import_release(args.method, checkpoint, model_file)
        _, _, port = load_model(model_file)
        count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
        print(f"{args.method}: parameters: release {count(released):,}, port {count(port):,} "
              f"({imported.tensors} tensors imported; kept as built: {list(imported.kept) or 'none'})")
        for line in compare(released, port):
            print(line)
        if args.manifest:
            assert method.release is not None
            layout = {"method": args.method, "code": method.release.code, "generated_by": "tools/check_release.py",
                      "checkpoint": checkpoint_layout(container)}
            args.manifest.parent.mkdir(parents=True, exist_ok=True)
            args.manifest.write_text(_dump(layout) + "\n")
            print(f"manifest: {args.manifest}")


if __name__ == "__main__":
    main()
