"""BatchNorm's running statistics under `accelerate launch` (2 CPU processes): what is exported and checkpointed is
the mean of every process's statistics, not the main process's estimate from its own share of the data, the same
on every process, and a resumed run continues them to the bit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import webdataset as wds
from safetensors.torch import load_file
from torch import nn

from defocuskit.io.images import encode_png
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "dncnn-tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1",
       "DEFOCUSKIT_LOG_KEYS": "1"}
LEVELS = (51, 204)  # shard r (read by process r): every blurred image this constant gray, dark / bright
STEPS = 4


def constant_shards(folder: Path) -> str:
    """Two shards of 32 px constant pairs, one a process: every batch of a process has the same statistics."""
    folder.mkdir(parents=True)
    for s, level in enumerate(LEVELS):
        with wds.TarWriter(str(folder / f"train-{s:06d}.tar")) as w:
            for i in range(4):
                blur, sharp = np.full((32, 32, 3), level, np.uint8), np.full((32, 32, 3), level + 20, np.uint8)
                w.write({"__key__": f"s{s}-{i}", "blur.png": encode_png(blur), "sharp.png": encode_png(sharp),
                         "json": json.dumps({"f_number": 2.8}).encode()})
    return str(folder / "train-*.tar")


def launch(out: Path, shards: str) -> None:
    """`accelerate launch` of 2 CPU processes training the tiny DnCNN with a negligible lr (the weights stay put,
    so each process's batch statistics are the same at every step), a checkpoint every 2 steps."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "defocuskit", "train", str(TINY),
           f"data.train={shards}", f"output_dir={out}", f"train.max_steps={STEPS}", "train.checkpoint_every=2",
           "train.keep_checkpoints=2", "optim.lr=1e-12", "data.augment=false"]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def replayed(tensors: dict[str, torch.Tensor], level: int, steps: int) -> dict[str, torch.Tensor]:
    """The buffers one process ends with after `steps` training forwards on its constant batches (2 images of
    `level`), with the weights of `tensors`, from fresh statistics."""
    recipe = load_recipe(TINY)
    net = get_method("dncnn").build(recipe.model, recipe.objective, True)
    net.load_state_dict(tensors)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.full((recipe.data.batch_size, 3, 32, 32), level / 255.0))
    return {k: v for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}


def assert_all_processes_statistics(tensors: dict[str, torch.Tensor], steps: int) -> None:
    ranks = [replayed(tensors, level, steps) for level in LEVELS]
    first = "body.3.running_mean"  # the first BatchNorm's input: the two shares' statistics really differ there
    assert (ranks[0][first] - ranks[1][first]).abs().max() > 0.05
    for k in ranks[0]:
        if k.endswith("num_batches_tracked"):
            assert int(tensors[k]) == steps, k
            continue
        mean = (ranks[0][k] + ranks[1][k]) / 2
        torch.testing.assert_close(tensors[k], mean, rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("bn")
    shards = constant_shards(tmp / "shards")
    launch(tmp / "run", shards)
    return tmp / "run", shards


def test_exported_and_checkpointed_statistics_are_every_processs(run: tuple[Path, str]) -> None:
    out, _ = run
    assert_all_processes_statistics(load_file(str(out / "model.safetensors")), STEPS)
    step2 = out / "checkpoints" / "step-0000002"
    assert_all_processes_statistics(load_file(str(step2 / "model.safetensors")), 2)
    ema = load_file(str(step2 / "ema.safetensors"))  # the EMA's copies, checkpointed by the main process
    assert_all_processes_statistics({k.removeprefix("buffers/"): v for k, v in ema.items() if k.startswith("buffers/")}
                                    | load_file(str(step2 / "model.safetensors")), 2)
    sums = [json.loads((out / f"weights-rank{r}.json").read_text()) for r in (0, 1)]
    assert sums[0] == sums[1]  # every process holds the same weights and statistics (and EMA)


def test_a_resumed_two_process_run_gives_the_same_statistics_to_the_bit(run: tuple[Path, str], tmp_path: Path) -> None:
    out, shards = run
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(out / "checkpoints" / "step-0000002", resumed / "checkpoints" / "step-0000002")
    shutil.copy(out / "recipe.yaml", resumed / "recipe.yaml")
    launch(resumed, shards)
    a, b = load_file(str(out / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_statistics_are_averaged_in_place_and_nothing_is_gathered_without_them() -> None:
    from defocuskit.train.running_stats import average_running_stats, running_stats

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.InstanceNorm2d(4), nn.BatchNorm2d(4, affine=False))
    stats = running_stats(net)
    assert [s.data_ptr() for s in stats] == [b.data_ptr() for k, b in net.named_buffers() if "running" in k]
    for i, s in enumerate(stats):
        s.fill_(float(i))
    other = [torch.full_like(s, 10.0 + i) for i, s in enumerate(stats)]  # the second process's
    gathered = []

    def gather(t: torch.Tensor) -> torch.Tensor:
        gathered.append(t)
        return torch.cat([t, torch.cat([o.reshape(-1) for o in other])])

    average_running_stats(SimpleNamespace(num_processes=2, gather=gather), stats)
    assert len(gathered) == 1 and all(torch.equal(s, torch.full_like(s, i + 5.0)) for i, s in enumerate(stats))
    assert net[1].num_batches_tracked == 0  # counted alike on every process: left as it is
    average_running_stats(SimpleNamespace(num_processes=2, gather=gather), running_stats(nn.Conv2d(3, 4, 3)))
    average_running_stats(SimpleNamespace(num_processes=1, gather=gather), stats)
    assert len(gathered) == 1
    ffdnet = get_method("ffdnet")
    assert running_stats(ffdnet.build(ffdnet.ModelConfig(depth=4, features=8), ffdnet.ObjectiveConfig(), True))
