"""Exponential moving average of a network's parameters (the weights that get exported)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EMA:
    """Shadow copies (float32) of a model's parameters and its buffers; checkpointable by Accelerate.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates n
    (TensorFlow's ExponentialMovingAverage with num_updates), so short runs export useful weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: p.detach().float().clone() for k, p in model.named_parameters()}
        self.buffers = {k: b.detach().clone() for k, b in model.named_buffers()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * param; buffers copied."""
        d = self.current_decay()
        for k, p in model.named_parameters():
            self.shadow[k].lerp_(p.detach().float(), 1.0 - d)
        for k, b in model.named_buffers():
            self.buffers[k].copy_(b.detach())
        self.num_updates += 1

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """`model.state_dict()` with every parameter (tied ones included) replaced by its average."""
        by_id = {id(p): self.shadow[k] for k, p in model.named_parameters()}
        out = {}
        for k, v in model.state_dict(keep_vars=True).items():
            avg = by_id.get(id(v))
            out[k] = (avg.to(v.dtype) if avg is not None else v).detach()
        for k, b in self.buffers.items():
            if k in out:
                out[k] = b
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow, "buffers": self.buffers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the network (differing parameters: {sorted(missing)[:5]})")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
        for k, v in state.get("buffers", {}).items():
            if k in self.buffers:
                self.buffers[k].copy_(v)
        self.num_updates = int(state["num_updates"])
