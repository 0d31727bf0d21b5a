"""An optimizer step the fp16 GradScaler skips (inf/NaN gradients) moves neither its LR schedule nor the EMA, and
counts toward train.max_steps (as diffusers' and transformers' loops count it); simulated on the CPU as Accelerate
records it (`AcceleratedOptimizer.step_was_skipped`), since fp16 needs a GPU."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file
from test_lr_schedule import loop_state, same, tensors, train
from test_train import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=1, per_shard=8, paired=True)


def skipping(monkeypatch, calls: set[int]) -> None:
    """The prepared optimizers' step skips its calls numbered in `calls` (1, 2, ... in this process) as the fp16
    GradScaler skips one with inf/NaN gradients: no update, `step_was_skipped` True (what Accelerate sets)."""
    from accelerate.optimizer import AcceleratedOptimizer

    step, count = AcceleratedOptimizer.step, [0]

    def maybe_step(self, closure=None):
        count[0] += 1
        self._is_overflow = count[0] in calls
        return None if self._is_overflow else step(self, closure)

    monkeypatch.setattr(AcceleratedOptimizer, "step", maybe_step)


def test_a_skipped_step_moves_neither_the_schedule_nor_the_ema_and_resumes_exactly(monkeypatch, shards, tmp_path):
    """Step 2's optimizer step skipped: its weights, LR factor and EMA stay those of step 1, the step counts (3 steps
    trained, rows 1-3), and a run stopped at step 2 resumes to the same weights (the schedule rebuilt from the
    optimizer steps taken, not the loop's step). Before, the schedule and the EMA moved on a skipped step."""
    run = ("nafnet-tiny", shards)
    decay = ("optim.schedule=cosine", "optim.warmup_steps=0", "train.max_steps=3")  # factors 1, 0.75, 0.25
    skipping(monkeypatch, {2})
    full = tmp_path / "full"
    train(*run, full, *decay)
    assert same(tensors(full, 1, "model.safetensors"), tensors(full, 2, "model.safetensors"))  # skipped indeed
    assert same(tensors(full, 1, "ema.safetensors"), tensors(full, 2, "ema.safetensors"))
    assert not same(tensors(full, 2, "ema.safetensors"), tensors(full, 3, "ema.safetensors"))
    states = [loop_state(full, s) for s in (1, 2, 3)]
    assert [(s["step"], s["schedulers"]["main"]["last_epoch"], s["ema"]["num_updates"]) for s in states] == \
        [(1, 1, 1), (2, 1, 1), (3, 2, 2)]
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 0.75e-3, 0.75e-3])  # the lr each step used

    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-0000003")
    skipping(monkeypatch, set())  # the resumed process trains step 3 only
    train(*run, part, *decay)
    assert same(load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors")))
    position = [{k: s["schedulers"]["main"][k] for k in ("last_epoch", "_last_lr")} for s in (loop_state(part, 3),
                                                                                             states[2])]
    assert position[0] == position[1]


def test_a_phase_whose_step_is_skipped_keeps_its_schedule_while_the_other_steps(monkeypatch, shards, tmp_path):
    """CycleGAN's generator step skipped at step 2 (the 3rd optimizer call: generators, then discriminators): its
    schedule stays, the discriminators' goes on, and the EMA updates (their weights moved)."""
    skipping(monkeypatch, {3})
    out = tmp_path / "gan"
    train("cyclegan-tiny", shards, out, "train.max_steps=2")
    state = loop_state(out, 2)
    assert {k: v["last_epoch"] for k, v in state["schedulers"].items()} == {"generator": 1, "discriminator": 2}
    assert state["ema"]["num_updates"] == 2 and state["step"] == 2
