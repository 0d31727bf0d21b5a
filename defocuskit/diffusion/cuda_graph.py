"""A score network replayed from CUDA graphs: a sampler's thousands of calls of one small network at one shape are
bound by kernel launches, not arithmetic, on a GPU (docs/benchmarks.md, "Where inference time goes on a GPU").

`graphed(model)` returns a callable with the samplers' signature, model(x, sigma) -> score. On a CUDA device, with
gradients off, the first WARM_UP_CALLS calls of each new (shape, dtype, autocast) of its inputs run eagerly on a
side stream (they warm cuDNN and the allocator up and return their results); the next is captured into a
torch.cuda.CUDAGraph with static input and output buffers, and every call from then on copies its inputs in,
replays the graph and returns a copy of the output (the same kernels on the same values: the same result as the
eager call). Anywhere else (CPU, gradients on, DEFOCUSKIT_CUDA_GRAPHS=0) it is the model itself; a capture that
fails falls back to the eager model for good, with one warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

ENV = "DEFOCUSKIT_CUDA_GRAPHS"  # "0": never capture
WARM_UP_CALLS = 3  # eager calls on a side stream before the capture (cuDNN picks its kernels, the allocator settles)


@dataclass
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    x: torch.Tensor
    sigma: torch.Tensor
    out: torch.Tensor


class GraphedScore:
    """model(x, sigma) through CUDA graphs, one per input signature (at most `max_graphs`, then eager)."""

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], max_graphs: int = 4) -> None:
        self.model, self.max_graphs = model, max_graphs
        self._graphs: dict[tuple, _Captured] = {}
        self._calls: dict[tuple, int] = {}  # eager calls so far per input signature, before its capture
        self._side: Any = None  # the side stream of the warm-up calls
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not self._capturable(x, sigma):
            return self.model(x, sigma)
        key = (tuple(x.shape), x.dtype, tuple(sigma.shape), sigma.dtype, x.device,
               torch.is_autocast_enabled(x.device.type))
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                return self.model(x, sigma)
            self._calls[key] = self._calls.get(key, 0) + 1
            if self._calls[key] <= WARM_UP_CALLS:  # the sampler's own first calls are the warm-up
                return self._side_call(x, sigma)
            try:
                entry = self._graphs[key] = self._capture(x, sigma)
            except RuntimeError as exc:  # an operator that cannot be captured: eager from now on
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                warnings.warn(f"CUDA graph capture failed, the score network runs eagerly: {self.failed}",
                              RuntimeWarning, stacklevel=2)
                self._graphs.clear()
                return self.model(x, sigma)
        entry.x.copy_(x)
        entry.sigma.copy_(sigma)
        entry.graph.replay()
        return entry.out.clone()

    @property
    def graphs(self) -> int:
        """How many input signatures have been captured."""
        return len(self._graphs)

    def _capturable(self, x: torch.Tensor, sigma: torch.Tensor) -> bool:
        return (self.failed is None and x.device.type == "cuda" and torch.is_tensor(sigma)
                and sigma.device == x.device and not torch.is_grad_enabled()
                and os.environ.get(ENV, "1") != "0")

    def _side_call(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One eager call on a side stream (the warm-up before a capture), ordered with the current stream."""
        main = torch.cuda.current_stream(x.device)
        if self._side is None:
            self._side = torch.cuda.Stream(device=x.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            out = self.model(x, sigma)
        main.wait_stream(self._side)
        out.record_stream(main)
        return out

    def _capture(self, x: torch.Tensor, sigma: torch.Tensor) -> _Captured:
        static_x, static_sigma = x.clone(), sigma.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(x.device), torch.cuda.graph(graph):  # on the inputs' GPU (cuda:LOCAL_RANK in eval)
            out = self.model(static_x, static_sigma)
        return _Captured(graph, static_x, static_sigma, out)


def graphed(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                     torch.Tensor]:
    """The score network as the samplers call it, replayed from CUDA graphs where it can be (see the module)."""
    return GraphedScore(model)
