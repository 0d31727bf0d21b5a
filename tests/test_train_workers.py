"""A data-loading worker that dies during training (the out-of-memory killer, a decoder's crash) is one line naming
what happened and what to do, the checkpoints kept; before, a screen of PyTorch's internals."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from test_train import write_shards
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.data import dead_loader_worker
from defocuskit.train.stream import ShardStream

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "nafnet-tiny.yaml")


def test_a_worker_killed_mid_run_is_one_line_and_the_checkpoints_stay(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", n_shards=2, per_shard=8, paired=True)  # 2 shards: 2 workers
    real_iter = ShardStream.__iter__

    def dying(self):
        import torch.utils.data

        for n, sample in enumerate(real_iter(self)):
            if torch.utils.data.get_worker_info() is not None and n == 40:  # in a worker, well after step 2
                os.kill(os.getpid(), signal.SIGKILL)
            yield sample

    monkeypatch.setattr(ShardStream, "__iter__", dying)  # DataLoader workers are forked: they run it too
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", TINY, f"data.train={shards}", f"output_dir={out}", "data.image_size=32",
                                      "data.num_workers=2", "train.max_steps=200", "train.checkpoint_every=2"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    # PyTorch says "killed by signal: Killed" or, where its watchdog sees the death first (a loaded machine),
    # "exited unexpectedly": both are read (test_pytorchs_words_for_a_dead_worker_are_read)
    assert lines[0].startswith(("error: a data-loading worker process died (killed by signal",
                                "error: a data-loading worker process died (exited unexpectedly")), lines[0]
    assert f"the checkpoints in {out} are kept: run the same command again to resume" in lines[0]
    assert list_checkpoints(out)  # what it had done is there to resume from


@pytest.mark.parametrize("message, words", [
    ("DataLoader worker (pid 22552) is killed by signal: Segmentation fault. ", "killed by signal Segmentation fault"),
    ("DataLoader worker (pid(s) 123, 456) exited unexpectedly", "exited unexpectedly"),
    ("DataLoader worker (pid 99) exited unexpectedly with exit code 1. Details are lost", "exited with code 1"),
])
def test_pytorchs_words_for_a_dead_worker_are_read(message, words):
    assert f"process died ({words}" in dead_loader_worker(RuntimeError(message))
    assert dead_loader_worker(RuntimeError("CUDA out of memory")) is None
    assert dead_loader_worker(ValueError(message)) is None
