"""The training loop: the real CLI on the tiny HIDD recipe (one process, resume, kill, NaN, 2 CPU processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from safetensors.torch import load_file
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import OptimConfig
from defocuskit.io.images import encode_png
from defocuskit.io.modelfile import read_model_file
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.augment import crop_and_augment
from defocuskit.train.checkpoints import list_checkpoints
from defocuskit.train.checks import parameter_counts
from defocuskit.train.data import make_loader
from defocuskit.train.optim import lr_factor
from defocuskit.train.stream import ShardStream

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "hidd-tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_shards(folder: Path, n_shards: int, per_shard: int, paired: bool = False, seed: int = 0) -> str:
    """Tiny shards: smooth random images (some smaller than the 32 px crop); blur = 255 - sharp when paired."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"train-{s:06d}.tar")) as w:
            for i in range(per_shard):
                h, wd = (40, 48) if i % 4 else (20, 24)
                base = rng.random((h // 4 + 1, wd // 4 + 1, 3))
                sharp = np.kron(base, np.ones((4, 4, 1)))[:h, :wd]
                sharp = (np.clip(sharp + 0.1 * rng.random((h, wd, 3)), 0, 1) * 255).astype(np.uint8)
                sample = {"__key__": f"s{s}-{i:03d}", "sharp.png": encode_png(sharp),
                          "json": json.dumps({"f_number": 2.8}).encode()}
                if paired:
                    sample["blur.png"] = encode_png(255 - sharp)
                w.write(sample)
    return str(folder / "train-*.tar")


def cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", TINY, *args], cwd=REPO, env=env or ENV,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


STEPS, EVERY = 30, 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=2, per_shard=8)


@pytest.fixture(scope="module")
def run_a(shards, tmp_path_factory) -> Path:
    """The uninterrupted reference run (short-form override `max_steps=` as users type it)."""
    out = tmp_path_factory.mktemp("runs") / "a"
    cli(f"data.train={shards}", f"output_dir={out}", f"max_steps={STEPS}", f"checkpoint_every={EVERY}",
        "train.log_every=1", "train.keep_checkpoints=2")
    return out


def test_loss_falls_and_model_exported(run_a, shards):
    curve = losses(run_a)
    assert sorted(curve) == list(range(1, STEPS + 1))
    first = np.mean([curve[s] for s in range(1, 6)])
    last = np.mean([curve[s] for s in range(STEPS - 4, STEPS + 1)])
    assert last < 0.95 * first, (first, last)
    tensors, meta = read_model_file(run_a / "model.safetensors")
    assert meta["method"] == "hidd" and meta["recipe"]["train"]["max_steps"] == STEPS
    assert meta["steps"] == str(STEPS)  # the steps the weights are from (a model card says them, not max_steps)
    assert json.loads(meta["datasets"]) == [Path(shards).parent.name]  # no manifest: the shard folder's name
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert (run_a / "recipe.yaml").read_text().count("max_steps: 30") == 1
    assert [s for s, _ in list_checkpoints(run_a)] == [STEPS - EVERY, STEPS]  # keep_checkpoints=2


def test_resume_after_stop_and_kill_continues_the_curve(run_a, shards, tmp_path):
    out = tmp_path / "b"
    common = [f"data.train={shards}", f"output_dir={out}", f"train.checkpoint_every={EVERY}", "train.log_every=1"]
    env = {**ENV, "DEFOCUSKIT_LOG_KEYS": "1"}  # each step's sample keys, the record of the data order
    cli(*common, "train.max_steps=15", env=env)
    assert [s for s, _ in list_checkpoints(out)][-1] == 15
    # resume towards 30, killed (SIGKILL) right after the step-20 checkpoint appears
    proc = subprocess.Popen([sys.executable, "-m", "defocuskit", "train", TINY, *common, f"train.max_steps={STEPS}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "step-0000020").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    step, newest = list_checkpoints(out)[-1]
    assert step >= 20
    weights = load_file(str(newest / "model.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    cli(*common, f"train.max_steps={STEPS}", env=env)  # the same command again resumes from the newest checkpoint
    a, b = losses(run_a), losses(out)
    assert sorted(b) == list(range(1, STEPS + 1))
    # the key log holds every step once: before, the killed run's lines were still buffered and lost with it
    logged = [json.loads(x)["step"] for x in (out / "seen-keys-rank0.jsonl").read_text().splitlines()]
    assert logged == list(range(1, STEPS + 1)), logged
    for s in range(1, STEPS + 1):
        assert abs(a[s] - b[s]) <= 1e-5 * max(1.0, abs(a[s])), (s, a[s], b[s])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run_a, shards, tmp_path):
    out = tmp_path / "nan"
    shutil.copytree(run_a / "checkpoints", out / "checkpoints")
    proc = cli(f"data.train={shards}", f"output_dir={out}", "optim.lr=1e30", "optim.grad_clip=null",
               "train.max_steps=40", f"train.checkpoint_every={EVERY}", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "not finite" in proc.stderr and "step 3" in proc.stderr and "Traceback" not in proc.stderr
    step, newest = list_checkpoints(out)[-1]
    assert step == STEPS
    assert all(torch.isfinite(t).all() for t in load_file(str(newest / "model.safetensors")).values())
    assert not (out / "model.safetensors").exists()


def launch_two() -> list[str]:
    """`accelerate launch` of two CPU processes on a free port, up to `-m defocuskit` (set ACCELERATE_USE_CPU=1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "defocuskit"]


def test_two_cpu_processes_disjoint_data_identical_weights(tmp_path):
    shards = write_shards(tmp_path / "shards", n_shards=2, per_shard=6, seed=3)
    val = write_shards(tmp_path / "val", n_shards=1, per_shard=5, paired=True, seed=4)
    out = tmp_path / "ddp"
    cmd = [*launch_two(), "train", TINY,
           f"data.train={shards}", f"output_dir={out}", "train.max_steps=6", "train.checkpoint_every=3",
           "train.log_every=1", f"data.val={val}", "train.eval_every=3", "train.val_limit=4", "sampler.steps=2",
           "sampler.consistency=identity"]
    env = {**ENV, "ACCELERATE_USE_CPU": "1", "DEFOCUSKIT_LOG_KEYS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = []
    for rank in (0, 1):
        lines = [json.loads(x) for x in (out / f"seen-keys-rank{rank}.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == list(range(1, 7))
        seen.append({k for x in lines for k in x["keys"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    sums = [json.loads((out / f"weights-rank{r}.json").read_text()) for r in (0, 1)]
    assert sums[0] == sums[1] and sums[0]["step"] == 6
    assert (out / "checkpoints" / "step-0000006" / "random_states_1.pkl").is_file()
    # validation split like eval's (pair j on process j % 2) and gathered: 4 pairs scored at steps 3 and 6
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["val_n"]) for r in rows if "val_psnr" in r] == [(3, 4), (6, 4)]
    # each row says the batch it trained on: data.batch_size is per process
    batch = load_recipe(TINY).data.batch_size
    assert {(r["processes"], r["samples_per_step"]) for r in rows if "loss" in r} == {(2, 2 * batch)}
    assert list(rows[-1]["val_by_f_number"]) == ["2.8"] and (out / "val" / "step-0000006.png").is_file()


# ------------------------------------------------------------------------- errors before any work (in-process)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.max_stepz=3", "train.max_stepz"),
        ("optim.lr=fast", "optim.lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.channels=3", "model.channels"),
        ("data.train=/nonexistent/train-*.tar", "/nonexistent/train-*.tar"),
        ("train.eval_every=5", "data.val"),
        ("data.val=/nonexistent/val", "data.val"),
        ("output_dir=", "output_dir: empty; give the run folder"),  # trained into the working folder before
    ],
)
def test_bad_recipe_or_data_is_exit_2_before_work(override, needle, shards, tmp_path):
    from defocuskit.config.typed import layered_overrides

    out = tmp_path / "run"
    args = ["train", TINY, *layered_overrides([f"data.train={shards}", f"output_dir={out}"], [override])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output and "given twice" not in result.output
    assert not out.exists()


def test_paired_method_on_sharp_only_shards(shards, tmp_path):
    out = tmp_path / "run"
    args = ["train", str(REPO / "recipes" / "nafnet-tiny.yaml"), f"data.train={shards}", f"output_dir={out}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "blur.png" in result.output and shards in result.output, result.output
    assert not out.exists()


def test_checkpoint_of_incompatible_recipe(run_a, shards):
    result = CliRunner().invoke(app, ["train", TINY, f"data.train={shards}", f"output_dir={run_a}", "model.nf=16"])
    assert result.exit_code == 2 and "model" in result.output and "checkpoint" in result.output, result.output


def test_dry_run_prints_resolved_recipe_and_parameters(shards, tmp_path):
    result = CliRunner().invoke(app, ["train", TINY, "--dry-run", "max_steps=7", f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code == 0, result.output
    assert "max_steps: 7" in result.output and "total" in result.output
    assert not (tmp_path / "x").exists()


def test_dry_run_under_accelerate_launch_prints_from_the_main_process_only(monkeypatch, tmp_path):
    """Every process of `accelerate launch ... train --dry-run` printed the recipe: `> recipe.yaml` held it twice."""
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(app, ["train", TINY, "--dry-run", f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code == 0 and result.output == "", result.output
    result = CliRunner().invoke(app, ["train", TINY, "--dry-run", "optim.lr=nan", f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code == 2 and "optim.lr" in result.output  # still checked on every process



@pytest.mark.parametrize("override, said", [
    ("optim.lr=nan", "optim.lr and optim.grad_clip must be positive (got nan"),
    ("optim.lr=inf", "optim.lr and optim.grad_clip must be positive (got inf"),
    ("optim.grad_clip=nan", "optim.lr and optim.grad_clip must be positive (got 0.001, nan)"),
    ("train.ema_decay=2", "train.ema_decay: in [0, 1), got 2.0"),
    ("train.max_minutes=nan", "train.max_minutes: a positive number of minutes (null: none), got nan"),
    ("train.max_minutes=-1", "train.max_minutes: a positive number of minutes (null: none), got -1.0"),
    ("optim.eps=nan", "optim.eps: a small positive number"),
    ("optim.betas=[0.9,1.5]", "optim.betas: two numbers in [0, 1), got 1.5"),
    ("data.image_size=1000000", "data.batch_size x data.image_size^2 = 2 x 1000000^2"),
    ("data.batch_size=100000000", "above the limit of 200 MP"),
    ("train.grad_accum=1000000000", "train.grad_accum: 1 to 4096 micro-batches an optimizer step, got 1000000000"),
    ("train.log_with=tensorbord", "train.log_with: 'tensorbord' is no Accelerate tracker (known: aim,"),
    pytest.param("train.log_with=tensorboard", "train.log_with: tensorboard is not installed (pip install tensorboard)",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("tensorboard") is not None,
                                          reason="tensorboard is installed here")),
])
def test_dry_run_refuses_numbers_the_run_cannot_use(tmp_path, override, said):
    """A NaN, infinite or out-of-range optimizer, EMA or time-budget value (the run failed at its first step, or, for
    train.max_minutes=-1, trained one step and exited 0) and a batch of terabytes are one line naming the key."""
    result = CliRunner().invoke(app, ["train", "nafnet-tiny", "--dry-run", override, f"output_dir={tmp_path / 'x'}"])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "x").exists()

# --------------------------------------------------------------------------------------- data and schedule


def test_paired_crops_align_and_small_pairs_are_padded(tmp_path):
    spec = write_shards(tmp_path, n_shards=1, per_shard=8, paired=True)
    recipe = load_recipe(str(REPO / "recipes" / "nafnet-tiny.yaml"),
                         [f"data.train={spec}", "data.batch_size=8", "data.augment=true", "data.shuffle_buffer=0"])
    batch = next(iter(make_loader(recipe, get_method("nafnet"), 0, 1)))
    assert batch["sharp"].shape == batch["blur"].shape == (8, 3, 32, 32)
    assert len(set(batch["key"])) == 8  # the 20x24 samples are padded, not dropped
    torch.testing.assert_close(batch["blur"], 1.0 - batch["sharp"])  # same crop and transform for both
    assert batch["f_number"].dtype == torch.float32


def test_crop_pads_by_reflection():
    img = np.arange(4 * 5, dtype=np.uint8).reshape(4, 5)
    out = crop_and_augment({"a": img}, 6, False, np.random.default_rng(0))["a"]
    assert out.shape == (6, 6) and set(np.unique(out)) <= set(np.unique(img))


def test_stream_resumes_exactly_and_splits_samples_when_few_shards(tmp_path):
    spec = write_shards(tmp_path, n_shards=1, per_shard=8)
    recipe = load_recipe(TINY, [f"data.train={spec}", "data.num_workers=0", "data.augment=true"])
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    full = ShardStream(urls, recipe.data, "sharp", 0, 0, 1)
    bs = recipe.data.batch_size
    it = iter(torch.utils.data.DataLoader(full, batch_size=bs))
    first = [next(it) for _ in range(5)]
    resumed = next(iter(torch.utils.data.DataLoader(ShardStream(urls, recipe.data, "sharp", 0, 0, 1, 3), batch_size=bs)))
    assert resumed["key"] == first[3]["key"]
    torch.testing.assert_close(resumed["sharp"], first[3]["sharp"])
    # one shard, two processes: each keeps alternate samples, so their streams are disjoint within a pass
    recipe.data.resampled = False
    recipe.data.shuffle_buffer = 0
    keys = [[s["key"] for _, s in zip(range(4), ShardStream(urls, recipe.data, "sharp", 0, r, 2))] for r in (0, 1)]
    assert not set(keys[0]) & set(keys[1]) and len(set(keys[0] + keys[1])) == 8


@pytest.mark.parametrize("how", ["removed", "rewritten"])
def test_a_shard_removed_or_rewritten_while_training_is_named(how, tmp_path):
    """An ingest re-planning data.train while a run reads it: the next read of a shard that is gone, or is no
    longer the one indexed, stops the run with a ShardError naming it (was a bare "No such file")."""
    from defocuskit.data.reader import ShardError

    write_shards(tmp_path / "d", n_shards=2, per_shard=4)
    recipe = load_recipe(TINY, [f"data.train={tmp_path / 'd'}", "data.num_workers=0", "data.shuffle_buffer=0",
                                "data.resampled=false"])
    urls = [str(p) for p in sorted((tmp_path / "d").glob("*.tar"))]
    stream = iter(ShardStream(urls, recipe.data, "sharp", 0, 0, 1))
    first = next(stream)["key"]  # s0-000 or s1-000: the epoch's first shard
    other = urls[1] if first.startswith("s0-") else urls[0]
    if how == "removed":
        os.remove(other)
    else:  # a new plan written under the same name: a tar of other samples
        write_shards(tmp_path / "new", n_shards=2, per_shard=3, seed=5)
        os.replace(tmp_path / "new" / Path(other).name, other)
    with pytest.raises(ShardError) as caught:
        for _ in range(8):
            next(stream)
    assert str(caught.value) == (f"{other}: {how} while this run was reading it (a `defocuskit ingest` writing "
                                 f"{tmp_path / 'd'}?); the checkpoints are kept: run the same command again once "
                                 "the shards are final")


def test_lr_schedule_and_parameter_counts():
    f = lr_factor(OptimConfig(warmup_steps=4, schedule="cosine"), max_steps=14)
    assert [round(f(s), 3) for s in (0, 3, 4, 9, 14)] == [0.25, 1.0, 1.0, 0.5, 0.0]
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    assert parameter_counts(net) == {"total": 13, "0": 9, "1": 4}


def test_a_second_run_of_one_output_dir_stops_at_once_naming_the_first(run_a, shards):
    script = ("import sys, time; from defocuskit.io import locks\n"
              "with locks.hold(sys.argv[1], 'train', 'busy'):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(run_a / ".train.lock")], stdout=subprocess.PIPE,
                              text=True, env=ENV)
    before = sorted(p.name for p in (run_a / "checkpoints").iterdir())
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["train", TINY, f"data.train={shards}", f"output_dir={run_a}",
                                          f"max_steps={STEPS + 5}", f"checkpoint_every={EVERY}"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1 and "another training run is using it" in result.output, result.output
    assert f"pid {holder.pid} " in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (run_a / "checkpoints").iterdir()) == before


def test_metrics_rows_after_a_resume_are_the_uninterrupted_runs_when_log_every_does_not_divide(shards, tmp_path):
    common = [f"data.train={shards}", "train.checkpoint_every=5", "train.log_every=3"]
    cli(*common, f"output_dir={tmp_path / 'whole'}", "train.max_steps=10")
    cli(*common, f"output_dir={tmp_path / 'split'}", "train.max_steps=5")
    cli(*common, f"output_dir={tmp_path / 'split'}", "train.max_steps=10")  # resumes at step 5, mid-window

    def rows(run: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    whole, split = rows(tmp_path / "whole"), rows(tmp_path / "split")
    # the 5-step run logs its last step (5); the resumed run then logs 6 (the window 4..6, as the whole run), 9, 10
    assert [s for s, _ in whole] == [3, 6, 9, 10] and [s for s, _ in split] == [3, 5, 6, 9, 10]
    by_step = dict(split)
    for step, loss in whole:
        assert abs(by_step[step] - loss) <= 1e-6 * max(1.0, abs(loss)), (step, loss, by_step[step])


def test_mixed_precision_comes_from_accelerate_unless_the_recipe_sets_it(shards, tmp_path):
    env = {**ENV, "ACCELERATE_MIXED_PRECISION": "bf16"}  # what `accelerate launch --mixed_precision bf16` sets
    proc = cli(f"data.train={shards}", f"output_dir={tmp_path / 'auto'}", "train.max_steps=4", "train.log_every=1",
               env=env)
    assert "mixed precision: bf16 (from Accelerate" in proc.stdout + proc.stderr
    assert all(np.isfinite(list(losses(tmp_path / "auto").values())))  # bf16 autocast trains on a CPU
    proc = cli(f"data.train={shards}", f"output_dir={tmp_path / 'fp32'}", "train.max_steps=2",
               "train.mixed_precision=no", env=env)
    assert "mixed precision: no (the recipe's train.mixed_precision)" in proc.stdout + proc.stderr


def test_fine_tuning_starts_from_a_model_file_or_folder_and_records_it(run_a, shards, tmp_path):
    import defocuskit
    from defocuskit.io.hub import file_sha256

    start, _ = read_model_file(run_a / "model.safetensors")
    folder = defocuskit.load(run_a / "model.safetensors", device="cpu").save_pretrained(tmp_path / "published")
    for source in (run_a / "model.safetensors", folder):
        out = tmp_path / f"ft-{Path(source).name}"
        proc = cli(f"data.train={shards}", f"output_dir={out}", "train.max_steps=1", "optim.lr=1e-12",
                   "train.ema_decay=0.5", f"train.init_from={source}")
        assert f"weights from {source}" in proc.stdout + proc.stderr
        tensors, meta = read_model_file(out / "model.safetensors")
        for key, value in start.items():  # a step at a negligible learning rate: the starting weights come back
            if value.is_floating_point():
                torch.testing.assert_close(tensors[key], value, atol=1e-6, rtol=0)
        assert meta["init_from"] == str(source)
        assert meta["init_from_sha256"] == file_sha256(run_a / "model.safetensors")
    bad = cli(f"data.train={shards}", f"output_dir={tmp_path / 'bad'}", "train.max_steps=1", "model.nf=16",
              f"train.init_from={run_a / 'model.safetensors'}", check=False)
    assert bad.returncode == 1 and "train.init_from" in bad.stderr and "in this recipe's network" in bad.stderr
    assert not (tmp_path / "bad").exists()  # the run had made it for its lock: a failed init_from writes nothing
    other = cli(f"data.train={shards}", f"output_dir={tmp_path / 'other'}", "train.max_steps=1",
                f"train.init_from={tmp_path / 'nothing.safetensors'}", check=False)
    assert other.returncode == 1 and "train.init_from: model not found" in other.stderr


def test_dry_run_checks_the_weights_init_from_names(run_a, tmp_path):
    """`--dry-run` checks `train.init_from` as the run would before any work: a missing file, a model of another
    method or weights that do not fit the recipe's network are one line (exit 1), and a fitting one passes."""
    good = run_a / "model.safetensors"
    runner = CliRunner()
    ok = runner.invoke(app, ["train", TINY, f"output_dir={tmp_path / 'ok'}", f"train.init_from={good}", "--dry-run"])
    assert ok.exit_code == 0 and "# hidd: parameters" in ok.output, ok.output
    assert not (tmp_path / "ok").exists()  # a dry run writes nothing
    cases = [(TINY, [f"train.init_from={good}", "model.nf=16"], f"train.init_from {good}: tensor"),
             (TINY, [f"train.init_from={tmp_path / 'nothing.safetensors'}"], "train.init_from: model not found"),
             ("nafnet-tiny", [f"train.init_from={good}"],
              f"train.init_from {good}: a 'hidd' model, but this recipe trains 'nafnet'")]
    for recipe, extra, said in cases:
        result = runner.invoke(app, ["train", recipe, f"output_dir={tmp_path / 'bad'}", *extra, "--dry-run"])
        assert result.exit_code == 1 and said in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("override", "said"), [
    ("model.width=0", "groups must be a positive integer"),
    ("model.width=100000000", "GiB, more than this machine's"),
])
def test_a_model_section_that_builds_no_network_is_one_line(override, said, tmp_path):
    """A negative or zero width was a torch traceback; 10^8 asked for 80 PB in one: RecipeError naming the section."""
    result = CliRunner().invoke(app, ["train", "nafnet-tiny", override, f"output_dir={tmp_path / 'run'}", "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    begins = "error: model: this section" if "100000000" in override else \
        f"error: {override.replace('=', ': ')} is no positive size; the model section"  # the key that is wrong
    assert result.output.startswith(f"{begins} does not build a nafnet network (") and said in result.output, \
        result.output
    assert not (tmp_path / "run").exists()
