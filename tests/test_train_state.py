"""Training state without pickle (planted payloads never run) and the O(1) seekable sample stream."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_train import TINY, write_shards

from defocuskit.methods.recipes import load_recipe
from defocuskit.train import stream as stream_module
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.checks import TrainingError
from defocuskit.train.loop import train
from defocuskit.train.state import EMA_FILE, LOOP_STATE
from defocuskit.train.stream import ShardStream, _kept


def _recipe(shards: str, out: Path, steps: int, *extra: str):
    return load_recipe(TINY, [f"data.train={shards}", f"output_dir={out}", f"train.max_steps={steps}",
                              "train.checkpoint_every=2", "train.keep_checkpoints=1", *extra])


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=3, per_shard=5)


@pytest.fixture(scope="module")
def base_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "base"
    train(_recipe(shards, out, 4))
    return out


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_holds_no_pickle_of_ours(base_run):
    (_, ckpt), = list_checkpoints(base_run)
    names = {p.name for p in ckpt.iterdir()}
    assert {LOOP_STATE, EMA_FILE, "rng-rank0.safetensors", "model.safetensors"} <= names
    assert not [n for n in names if n.startswith("custom_checkpoint")]
    # the only torch-serialised files are Accelerate's own, read with weights_only=True
    assert {n for n in names if n.endswith((".bin", ".pkl"))} == {"optimizer.bin", "random_states_0.pkl"}
    state = json.loads((ckpt / LOOP_STATE).read_text())
    assert state["step"] == 4 and state["ema"]["num_updates"] == 4 and state["schedulers"]["main"]["last_epoch"] == 4
    assert state["data"]["batch"] == 4 and state["data"]["workers"][0]["delivered"] == 4 * 4


PLANT = ["model.safetensors", "optimizer.bin", "pytorch_model.bin", "random_states_0.pkl", LOOP_STATE, EMA_FILE,
         "rng-rank0.safetensors", "recipe.json", "custom_checkpoint_0.pkl", "custom_checkpoint_2.pkl", "*"]


@pytest.mark.parametrize("target", PLANT)
def test_planted_pickle_is_refused_or_ignored_never_run(target, base_run, shards, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (_, ckpt), = list_checkpoints(run)
    marker = tmp_path / "pwned"
    names = [p.name for p in ckpt.iterdir()] + ["custom_checkpoint_0.pkl"] if target == "*" else [target]
    if target == "pytorch_model.bin":  # in place of the weights: Accelerate reads it with torch.load
        (ckpt / "model.safetensors").unlink()
    for name in names:
        path = ckpt / name
        if name.endswith((".bin", ".pkl")):
            torch.save({"state": _Payload(marker)}, path)  # a torch zip file whose data.pkl calls open()
        else:
            path.write_bytes(pickle.dumps(_Payload(marker)))
    try:
        train(_recipe(shards, run, 5))
        outcome = "ran"
    except (TrainingError, ValueError) as e:
        outcome = str(e)
    assert not marker.exists(), f"unpickling {target} ran code"
    if target == "random_states_0.pkl":  # Accelerate skips RNG states it cannot load; ours are in rng-rank0
        assert outcome == "ran"
    else:
        assert outcome != "ran" and ("cannot resume" in outcome or "not a readable" in outcome), outcome
    if target.startswith("custom_checkpoint"):
        assert "pickled state" in outcome and target in outcome
    if target in ("optimizer.bin", "pytorch_model.bin"):  # the refused file is the one named
        assert f": {target} holds objects other than tensors" in outcome, outcome


# --------------------------------------------------------------------------------------- the stream


def test_kept_counts_positions():
    for stride in (1, 2, 3):
        for offset in range(stride):
            for a in range(7):
                for b in range(a, 12):
                    assert _kept(a, b, stride, offset) == sum(p % stride == offset for p in range(a, b))


def _keys(stream: ShardStream, n: int) -> list[str]:
    out = []
    for sample in stream:
        out.append(sample["key"])
        if len(out) == n:
            return out
    return out


@pytest.mark.parametrize("resampled, block, world, rank", [(True, 8, 1, 0), (False, 1, 1, 0), (False, 4, 4, 3),
                                                          (True, 1, 5, 1), (False, 16, 2, 1)])
def test_seek_equals_the_uninterrupted_stream(shards, resampled, block, world, rank):
    recipe = load_recipe(TINY, [f"data.train={shards}", "data.num_workers=0", f"data.shuffle_buffer={block}",
                                f"data.resampled={str(resampled).lower()}", "data.batch_size=3"])
    urls = sorted(str(p) for p in Path(shards).parent.glob("*.tar"))
    full = _keys(ShardStream(urls, recipe.data, "sharp", 7, rank, world), 3 * 40)
    for batch in (1, 5, 17, 39):
        resumed = _keys(ShardStream(urls, recipe.data, "sharp", 7, rank, world, start_batch=batch), 3)
        assert resumed == full[3 * batch: 3 * batch + 3], (batch, resumed)
    if not resampled and block == 1 and world == 1:  # an epoch visits each of the 15 samples once
        assert len(set(full[:15])) == 15 and full[:15] != full[15:30]


def test_resume_reads_one_block_whatever_the_step(shards, monkeypatch):
    recipe = load_recipe(TINY, [f"data.train={shards}", "data.num_workers=0", "data.shuffle_buffer=8"])
    urls = sorted(str(p) for p in Path(shards).parent.glob("*.tar"))
    read = []
    real = stream_module.read_samples

    def counting(url, entries):
        for s in real(url, entries):
            read.append(s["__key__"])
            yield s

    monkeypatch.setattr(stream_module, "read_samples", counting)
    for start in (10, 10_000, 1_000_000):
        read.clear()
        next(iter(ShardStream(urls, recipe.data, "sharp", 0, 0, 1, start_batch=start)))
        assert len(read) <= 8, (start, len(read))  # one shuffle block, not the samples before it


def test_seek_with_two_loader_workers(shards):
    """Batches come round-robin from two DataLoader workers; a stream started at batch b goes on identically."""
    recipe = load_recipe(TINY, [f"data.train={shards}", "data.num_workers=2", "data.shuffle_buffer=4",
                                "data.batch_size=2"])
    urls = sorted(str(p) for p in Path(shards).parent.glob("*.tar"))

    def batches(start: int, n: int) -> list[list[str]]:
        stream = ShardStream(urls, recipe.data, "sharp", 0, 0, 1, start_batch=start)
        loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=stream.num_workers)
        return [b["key"] for _, b in zip(range(n), loader)]

    full = batches(0, 12)
    assert batches(5, 7) == full[5:]
    assert ShardStream(urls, recipe.data, "sharp", 0, 0, 1).position(5)["workers"][1]["delivered"] == 2 * 2
