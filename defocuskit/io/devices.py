"""`--device` names: `auto` picks the best device present; an explicit device is checked before any work starts."""

from __future__ import annotations

import re

import torch

_CUDA = re.compile(r"cuda(?::(\d+))?")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ['cuda:0', 'cuda:1', 'cpu']."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(name: str = "auto", option: str = "--device") -> str:
    """The torch device string for a `--device` value: auto = cuda if available, else mps, else cpu.

    cuda, cuda:N and mps are checked: one that this machine or PyTorch build lacks raises a one-line
    ValueError naming it (as `option` spells it: "--device" on the command line, "device=" in the Python API) and
    what this machine has.
    """
    def spelled(value: str) -> str:  # --device cuda:1, or device='cuda:1'
        return f"{option} {value}" if option.startswith("--") else f"{option}{value!r}"

    given = spelled(name)
    text = str(name).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if text == "cpu":
        return "cpu"
    here = f"this machine has {', '.join(available_devices())}"
    cuda = _CUDA.fullmatch(text)
    if cuda:
        if torch.version.cuda is None:
            raise ValueError(f"{given}: this PyTorch build has no CUDA (torch {torch.__version__}); "
                             f"use {spelled('cpu')} or auto")
        if not torch.cuda.is_available():
            raise ValueError(f"{given}: no CUDA device is visible (torch {torch.__version__}, CUDA "
                             f"{torch.version.cuda}; check the driver and CUDA_VISIBLE_DEVICES); {here}")
        index = cuda.group(1)
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ValueError(f"{given}: no such CUDA device; {here}")
        return text
    if text == "mps":
        if not _mps_available():
            raise ValueError(f"{given}: MPS (Apple GPU) is not available; {here}")
        return "mps"
    raise ValueError(f"{given}: not a device name; use auto, cpu, cuda, cuda:N or mps")
