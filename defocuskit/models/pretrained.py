"""Pretrained weights a recipe names: a Hugging Face model id, a `save_pretrained` folder or a .safetensors file."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "nvidia/mit-b1" (one slash at most, no leading "./")


def read_pretrained(pretrained: str, model_class: Any) -> dict[str, torch.Tensor]:
    """The state dict `pretrained` names: a .safetensors file as stored; a folder or a hub id through
    `model_class.from_pretrained` (downloaded once into transformers' cache). A ValueError with a one-line cause."""
    path = Path(pretrained).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path} is not a .safetensors file")
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.is_dir() or (_HUB_ID.match(pretrained) and not pretrained.endswith(".safetensors")):
        try:  # task-model checkpoints (…ForImageClassification) load as their base model
            with quiet_hub():
                return model_class.from_pretrained(str(path) if path.is_dir() else pretrained).state_dict()
        except Exception as e:  # noqa: BLE001 (no network, unknown id, broken folder: all say the same)
            raise ValueError(f"from_pretrained failed: {type(e).__name__}: {first_sentence(str(e))}") from None
    raise ValueError(f"no such file or folder: {path}")


def first_sentence(message: str) -> str:
    """The first sentence of a library's message, on one line: transformers' offline error goes on with a link
    to its docs, which pushed the caller's own advice out of a clipped line."""
    line = next((" ".join(line.split()) for line in message.splitlines() if line.strip()), "")
    return re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].rstrip(".")


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub's warnings held back: offline it logged ten 'Retrying in Ns' lines before the one error."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
