"""The loop's own training state in a checkpoint folder: safetensors and JSON, never pickle.

Accelerate's `register_for_checkpointing` pickles registered objects (`custom_checkpoint_*.pkl`) and
unpickles them with torch.load and weights_only off: a file planted in a run folder would run code on
resume. Instead the loop registers save/load hooks (`Accelerator.register_save_state_pre_hook` and
`register_load_state_pre_hook`) that write and read, beside Accelerate's files:

    loop_state.json            step, LR schedulers (one per optimizer phase), EMA counters, data position,
                               the mixed precision the steps computed in
    ema.safetensors            the EMA's float32 shadow weights and buffers
    rng-rank{R}.safetensors    the torch / numpy / python RNG states of process R

The weights Accelerate writes are safetensors (`model.safetensors`); the optimizer state
(`optimizer.bin`) and its own RNG file (`random_states_R.pkl`) are read by Accelerate with
`torch.load(weights_only=True)`, the restricted unpickler that builds tensors and plain containers only
and runs no code (a planted payload makes the resume fail, it is not executed). A checkpoint folder
holding `custom_checkpoint_*.pkl` files is refused before anything in it is read.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from defocuskit.io.atomic import atomic_write
from defocuskit.train.ema import EMA

LOOP_STATE = "loop_state.json"
EMA_FILE = "ema.safetensors"
RNG_FILE = "rng-rank{rank}.safetensors"
FORMAT = "defocuskit-loop-state-1"


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be resumed from; the message names the file and why."""


class StepCounter:
    """The number of optimizer steps taken, and the losses of the steps since the last metrics row (saved in
    checkpoints, so the first row after a resume averages the same steps as the uninterrupted run's)."""

    def __init__(self) -> None:
        self.step = 0
        self.window: list[list[float]] = []


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def save_rng(path: Path) -> None:
    """The torch (CPU and CUDA), numpy and python RNG states of this process as safetensors."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(np.asarray(keys, np.int64)),
               "python": torch.tensor(internal, dtype=torch.int64)}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    meta = {"numpy": json.dumps([name, int(pos), int(has_gauss), float(gauss)]),
            "python": json.dumps([version, gauss_next])}
    save_file(tensors, str(path), metadata=meta)


def load_rng(path: Path) -> None:
    """Restore what `save_rng` wrote."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        name, pos, has_gauss, gauss = json.loads(meta["numpy"])
        version, gauss_next = json.loads(meta["python"])
        torch.set_rng_state(f.get_tensor("torch"))
        np.random.set_state((name, f.get_tensor("numpy_keys").numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate((version, tuple(int(v) for v in f.get_tensor("python").tolist()), gauss_next))
        if torch.cuda.is_available():
            states = [f.get_tensor(k) for k in sorted(f.keys()) if k.startswith("cuda")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


class LoopState:
    """Save/load hooks for the schedulers (by phase), EMA, step counter, data position and RNG of the loop."""

    def __init__(self, accelerator: Any, schedulers: dict[str, Any], ema: EMA, counter: StepCounter, position: Any):
        self.accelerator, self.schedulers, self.ema, self.counter = accelerator, schedulers, ema, counter
        self.position = position  # batch -> JSON-able data position (ShardStream.position)
        self.saved_data: dict[str, Any] | None = None  # the data position of the loaded checkpoint
        self.init: dict[str, str] | None = None  # train.init_from provenance (resume.recorded_init)

    def register(self) -> None:
        """Install the hooks on the accelerator."""
        self.accelerator.register_save_state_pre_hook(self.save_hook)
        self.accelerator.register_load_state_pre_hook(self.load_hook)

    def save_hook(self, models: list, weights: list, output_dir: str) -> None:
        """Write loop_state.json and ema.safetensors (main process) and this process's RNG file."""
        out = Path(output_dir)
        acc = self.accelerator
        save_rng(out / RNG_FILE.format(rank=acc.process_index))
        if not acc.is_main_process:
            return
        tensors = {f"shadow/{k}": v.detach().cpu().contiguous() for k, v in self.ema.shadow.items()}
        tensors |= {f"buffers/{k}": v.detach().cpu().contiguous().clone() for k, v in self.ema.buffers.items()}
        save_file(tensors, str(out / EMA_FILE))
        atomic_write(out / LOOP_STATE, json.dumps({
            "format": FORMAT, "step": self.counter.step,
            "schedulers": {k: _scheduler_state(v) for k, v in self.schedulers.items()},
            "ema": {"decay": self.ema.decay, "num_updates": self.ema.num_updates},
            "data": self.position(self.counter.step),
            "window": self.counter.window,
            "mixed_precision": acc.mixed_precision,  # what train.mixed_precision `auto` resolved to (resume.py)
            **({"init": self.init} if self.init else {}),
        }, indent=1))

    def load_hook(self, models: list, input_dir: str) -> None:
        """Read what `save_hook` wrote; refuse folders with pickled custom state or without loop_state.json."""
        folder = Path(input_dir)
        pickled = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
        if pickled:
            raise CheckpointError(
                f"{folder}: holds pickled state ({', '.join(pickled)}), which defocuskit never unpickles (it could "
                "run code); this checkpoint was written by an older defocuskit or altered. Resume from another "
                "checkpoint, or start over with --no-resume"
            )
        state = self._read_state(folder / LOOP_STATE)
        try:
            with safe_open(str(folder / EMA_FILE), framework="pt") as f:
                ema = {"shadow": {}, "buffers": {}}
                for key in f.keys():
                    part, _, name = key.partition("/")
                    ema.setdefault(part, {})[name] = f.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{folder / EMA_FILE}: not a readable safetensors file ({e})") from None
        self.ema.load_state_dict({**ema, "num_updates": state["ema"]["num_updates"]})
        if set(state["schedulers"]) != set(self.schedulers):
            raise CheckpointError(f"{folder / LOOP_STATE}: schedulers {sorted(state['schedulers'])}, but this method "
                                  f"trains {sorted(self.schedulers)}")
        for phase, scheduler in self.schedulers.items():
            scheduler.load_state_dict({**state["schedulers"][phase], "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
        self.counter.step = int(state["step"])
        self.counter.window = [list(map(float, row)) for row in state.get("window", [])]
        self.saved_data = state.get("data")
        rng = folder / RNG_FILE.format(rank=self.accelerator.process_index)
        if rng.is_file():
            try:
                load_rng(rng)
            except (SafetensorError, OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"{rng}: not a readable RNG state ({e})") from None

    @staticmethod
    def _read_state(path: Path) -> dict[str, Any]:
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; the checkpoint was written by an older defocuskit (which "
                                  "pickled its state) or is incomplete. Start over with --no-resume") from None
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not readable JSON ({e})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a defocuskit loop state (format {FORMAT} expected)")
        missing = [k for k in ("step", "schedulers", "ema") if k not in state]
        if missing:
            raise CheckpointError(f"{path}: missing keys {missing}")
        return state
