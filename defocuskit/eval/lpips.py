"""LPIPS (AlexNet variant) in plain PyTorch, from user-supplied weight files; nothing is downloaded.

Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric": unit-normalised
AlexNet activations at five ReLUs, squared differences weighted by learned 1x1 "lin" layers, spatially averaged
and summed. Accepted files (.safetensors, or .pth/.pt read with weights_only=True), merged in order:
  - a full `lpips.LPIPS(net="alex")` state dict (net.sliceK.I.*, linK.model.1.weight), or
  - torchvision AlexNet weights (features.I.*) plus the lpips package's `alex.pth` (linK.model.1.weight), or
  - an LPIPSAlex state dict (features.I.*, lin.K.weight).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

ENV_VAR = "DEFOCUSKIT_LPIPS_WEIGHTS"
_CONV = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1), 10: (256, 256, 3, 1, 1)}
_TAPS = (1, 4, 7, 9, 11)  # ReLU outputs compared (end of lpips' slice1..slice5)
MIN_SIDE = 31  # the smallest side AlexNet's stride-4 convolution and two 3x3/2 poolings leave a feature of


class LPIPSAlex(nn.Module):
    """LPIPS-alex distance between images in [0, 1], shape (B, 3, H, W) -> (B,)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(12):
            if i in _CONV:
                cin, cout, k, s, p = _CONV[i]
                layers.append(nn.Conv2d(cin, cout, k, s, p))
            elif i in (2, 5):
                layers.append(nn.MaxPool2d(3, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.lin = nn.ModuleList(nn.Conv2d(_CONV[i][1], 1, 1, bias=False) for i in sorted(_CONV))
        # Input scaling of the LPIPS paper's code (ImageNet-like statistics in [-1, 1] units).
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats = []
        for img in (x, y):
            h = ((img * 2.0 - 1.0) - self.shift) / self.scale
            taps = []
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in _TAPS:
                    taps.append(h / (torch.sqrt((h * h).sum(dim=1, keepdim=True)) + 1e-10))
            feats.append(taps)
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for lin, fx, fy in zip(self.lin, *feats):
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))  # Zhang et al. 2018, eq. (1)
        return total


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own errors: a header too large, a file cut short
            raise ValueError(f"{path}: not a readable safetensors file ({str(exc).strip().splitlines()[0]})") from None
    from defocuskit.io.release import read_checkpoint

    state = read_checkpoint(path)  # weights only; one line naming the file, never torch's advice to unpickle
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    return state


def _rename(key: str) -> str | None:
    """Map the lpips / torchvision key layouts onto LPIPSAlex's names; None for keys not used."""
    parts = key.split(".")
    if parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
        return f"features.{parts[2]}.{parts[3]}"
    if parts[0] in ("features", "lin") and len(parts) == 3:  # torchvision AlexNet, or LPIPSAlex's own names
        return key
    if parts[0].startswith("lin") and parts[0][3:].isdigit() and parts[-1] == "weight":
        return f"lin.{parts[0][3:]}.weight"
    return None


def load_lpips(paths: list[Path] | None = None, device: str = "cpu") -> LPIPSAlex:
    """Build LPIPS-alex from weight files (default: the os.pathsep-separated list in $DEFOCUSKIT_LPIPS_WEIGHTS)."""
    if not paths:
        env = os.environ.get(ENV_VAR, "")
        paths = [Path(p) for p in env.split(os.pathsep) if p]
    if not paths:
        raise FileNotFoundError(f"no LPIPS weights given (--lpips-weights or ${ENV_VAR})")
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        for key, value in _read(Path(path)).items():
            name = _rename(key)
            if name is not None:
                state[name] = value.float()
    model = LPIPSAlex()
    expected = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(f"LPIPS weights {[str(p) for p in paths]} lack {len(missing)} tensors, e.g. {missing[:3]}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"LPIPS weights {[str(p) for p in paths]} do not fit AlexNet: {e}") from None
    return model.eval().to(device)


def lpips_distance(model: LPIPSAlex, x: np.ndarray, y: np.ndarray) -> float:
    """LPIPS between two float (H, W, 3) images in [0, 1]."""
    if x.shape != y.shape or x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"LPIPS needs two (H, W, 3) images of one size, got {x.shape} and {y.shape}")
    if min(x.shape[:2]) < MIN_SIDE:
        raise ValueError(f"LPIPS-alex needs images of at least {MIN_SIDE} px a side (AlexNet's two poolings), got "
                         f"{x.shape[1]}x{x.shape[0]}; score these without --lpips-weights")
    device = model.shift.device
    tx = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None].to(device)
    ty = torch.from_numpy(np.ascontiguousarray(y, np.float32)).permute(2, 0, 1)[None].to(device)
    return float(model(tx, ty)[0])
