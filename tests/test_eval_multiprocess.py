"""Eval in several processes: `accelerate launch -m defocuskit eval` (2 CPU processes) writes the report of a
one-process run byte for byte; the split, the per-sample seeds, the merge and the progress bar's total."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples, shard_urls
from defocuskit.data.sample import IngestOptions
from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.evaluate import evaluate, evaluate_samples
from defocuskit.eval.processes import ProcessGroup, count_pairs, sample_seed, shard_share, share_of
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import resolve_recipe
from tests.test_focus_gate import save_random_nafnet

REPO = Path(__file__).resolve().parents[1]
# one thread per process in both runs: accelerate gives each of its processes one; torch's CPU reductions
# (NAFNet's global pooling) may round the last bit differently with another thread count
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic shards (test split: 8 pairs, then 4 sharp-only references), a tiny random NAFNet and a tiny HIDD
    prior with a 2-step noisy sampler."""
    root = tmp_path_factory.mktemp("mp")
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(root / "shards"), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0, 5.6)), progress=False)
    save_random_nafnet(root / "naf" / "model.safetensors")
    hidd = resolve_recipe({"method": "hidd", "data": {"image_size": 32, "channels": 1},
                           "model": {"channels": 1, "image_size": 32, "nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
                                     "attn_resolutions": [16]}, "sampler": {"name": "fast", "steps": 2}})
    torch.manual_seed(0)
    prior = get_method("hidd").build(hidd.model, hidd.objective, False)
    save_model(root / "hidd" / "model.safetensors", prior.state_dict(), "hidd", recipe_to_dict(hidd))
    return root


def _eval_command(setup: Path, out: Path) -> list[str]:
    return ["-m", "defocuskit", "eval", "--shards", str(setup / "shards"), "--checkpoint",
            str(setup / "naf" / "model.safetensors"), "--checkpoint", str(setup / "hidd" / "model.safetensors"),
            "--baseline", "input", "--report", str(out / "report"), "--save-images", str(out / "images"),
            "--figure"]


def _launch_two(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`accelerate launch` of `python -m ...` in 2 processes on one machine, on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                           *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_write_the_report_of_one_byte_for_byte(setup: Path, tmp_path: Path) -> None:
    fnumber = ["--baseline", "wiener", "--coc", "fnumber", "--sensor-width", "30"]  # each process counts its samples
    one = subprocess.run([sys.executable, *_eval_command(setup, tmp_path / "one"), *fnumber], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]
    two = _launch_two([*_eval_command(setup, tmp_path / "two")[1:], *fnumber], ENV)
    assert two.returncode == 0, two.stderr[-4000:]
    for name in ("report.json", "report.csv", "figure.png"):  # figure.png: per f-number, the first pair's crops
        assert (tmp_path / "one" / "report" / name).read_bytes() == (tmp_path / "two" / "report" / name).read_bytes()
    for rank in (0, 1):  # connected: each process scores half the pairs
        assert f"eval: process {rank} of 2 on cpu scores 4 of 8 pairs" in two.stderr, two.stderr[-3000:]
    assert two.stdout.count("report: ") == 1  # the main process alone reports
    report = json.loads((tmp_path / "one" / "report" / "report.json").read_text())
    totals = {r["method"]: r["n"] for r in report["rows"] if r["f_number"] is None}
    assert totals == {"input": 8, "naf": 8, "hidd": 8, "wiener": 8}  # 4 pairs on each process
    camera = report["protocol"]["coc"]["camera"]  # the 8 samples' own 23.5 mm, replaced on both processes
    assert camera["samples"] == 8 and camera["given_over_metadata"]["sensor_width_mm"] == 8
    assert camera["used_default"] == {"sensor_width_mm": 0, "focal_length_mm": 0, "focus_distance_m": 0}
    methods = report["protocol"]["methods"]
    assert sum(methods["naf"]["ran"].values()) == 8 and all(k.startswith("whole ") for k in methods["naf"]["ran"])
    assert methods["hidd"]["ran"] == {"tiles 32x32 overlap 8": 8}
    assert "4 sharp-only sample(s) (no blur.png) were not scored" in report["notes"]  # counted once, by process 0
    # each process wrote its own samples' outputs: together, the same files with the same pixels
    saved = {p.relative_to(tmp_path / "one" / "images"): p.read_bytes() for p in (tmp_path / "one" / "images").rglob("*.png")}
    assert len(saved) == 32
    assert saved == {p.relative_to(tmp_path / "two" / "images"): p.read_bytes()
                     for p in (tmp_path / "two" / "images").rglob("*.png")}


def test_shares_cover_the_pairs_once_in_shard_order(setup: Path) -> None:
    urls = shard_urls(setup / "shards", "test")
    everything = [(i, s["key"], s["blur"] is not None) for i, s in enumerate(iter_samples(setup / "shards", "test"))]
    pairs = [(i, k) for i, k, paired in everything if paired]
    assert count_pairs(urls) == len(pairs) == 8
    for limit in (None, 5):
        wanted = pairs[:limit]
        got = []
        for rank in range(3):
            share = list(shard_share(urls, ProcessGroup(rank, 3), limit))
            mine = [(s["index"], s["key"]) for s in share if s["blur"] is not None]
            assert mine == wanted[rank::3] and len(mine) == share_of(len(wanted), rank, 3)
            assert all(s["blur"] is not None for s in share) or rank == 0  # references: process 0 only
            got += mine
        assert sorted(got) == wanted


def test_noise_is_seeded_by_the_sample_not_by_its_place(setup: Path) -> None:
    from defocuskit.eval.runners import _checkpoint_runner

    assert sample_seed(0, "a/f2") == sample_seed(0, "a/f2") != sample_seed(0, "a/f2_8") != sample_seed(1, "a/f2")
    run, _ = _checkpoint_runner(setup / "hidd" / "model.safetensors", steps=None, sampler=None, sets=[], device="cpu",
                                seed=0, coc=None, tiling=TilingOptions(tile=None, overlap=None, batch=4))
    first, second = [s for s in iter_samples(setup / "shards", "test") if s["blur"] is not None][:2]
    both = evaluate_samples([first, second], {"hidd": run}, progress=False)
    alone = evaluate_samples([second], {"hidd": run}, progress=False)
    assert both["images"][1] == alone["images"][0]  # the same output after another sample or alone
    renamed = dict(second, key="other/name")  # the same pixels under another key: other noise
    blur = second["blur"].astype(np.float32) / (65535.0 if second["blur"].dtype == np.uint16 else 255.0)
    assert not np.array_equal(run(blur, second), run(blur, renamed))
    assert run.ran == {"tiles 32x32 overlap 8": 5}  # how the network ran, per image it restored


def test_parts_merge_into_the_one_process_result_and_a_failure_stops_every_process(setup: Path) -> None:
    from defocuskit.inference.coc_source import CocError

    urls = shard_urls(setup / "shards", "test")
    runners = {"input": lambda blur, sample: blur, "half": lambda blur, sample: blur * 0.5}
    single = evaluate_samples(shard_share(urls, ProcessGroup()), runners, progress=False)
    parts: list[dict] = []
    evaluate_samples(shard_share(urls, ProcessGroup(0, 2)), runners, progress=False,
                     gather=lambda obj: parts.append(obj) or [obj])  # process 0, stopped at its gather
    merged = evaluate_samples(shard_share(urls, ProcessGroup(1, 2)), runners, progress=False,
                              gather=lambda obj: [parts[0], obj])  # process 1 receives both parts
    assert merged == single and len(single["images"]) == 16
    assert [im["key"] for im in merged["images"]] == [im["key"] for im in single["images"]]

    def broken(blur, sample):
        raise CocError("--coc oracle: no coc.png")

    sent: list[dict] = []
    with pytest.raises(CocError):  # the failing process sends its error before it raises
        evaluate_samples(shard_share(urls, ProcessGroup(0, 2)), {"m": broken}, progress=False,
                         gather=lambda obj: sent.append(obj) or [obj])
    assert sent == [{"error": "CocError: --coc oracle: no coc.png"}]
    with pytest.raises(EvalError, match="another eval process failed: CocError: --coc oracle"):
        evaluate_samples(shard_share(urls, ProcessGroup(1, 2)), runners, progress=False,
                         gather=lambda obj: [sent[0], obj])


def test_eval_bar_has_a_total_an_eta_and_the_images_inner_progress(setup: Path, tmp_path: Path, monkeypatch) -> None:
    from rich.console import Console
    from rich.progress import Progress

    import defocuskit.eval.evaluate as evaluate_module
    from defocuskit.eval.eta import TimeLeftColumn

    bars: list[Progress] = []
    added: list[tuple[str, float | None]] = []
    make = evaluate_module.progress_bar

    def recording(enabled: bool, console: Console):
        bar = make(enabled, Console(file=io.StringIO()))
        add = bar.add_task
        bar.add_task = lambda description, **kw: added.append((description, kw.get("total"))) or add(description, **kw)
        bars.append(bar)
        return bar

    monkeypatch.setattr(evaluate_module, "progress_bar", recording)
    evaluate(setup / "shards", [setup / "naf" / "model.safetensors"], ["input"],
             EvalConfig(limit=5, report_dir=tmp_path / "report", progress=True), console=Console(file=io.StringIO()))
    assert any(isinstance(c, TimeLeftColumn) for c in bars[0].columns)  # the time left from each method's cost
    assert added[0] == ("scoring", 10)  # 5 pairs x 2 methods
    inner = [d for d, _ in added[1:]]
    assert len(inner) == 10 and inner[1::2] == ["  steps"] * 5 and all(d.startswith("  whole ") for d in inner[::2])
    evaluate(setup / "shards", [], ["input"], EvalConfig(report_dir=tmp_path / "all", progress=True)
             , console=Console(file=io.StringIO()))
    assert added[-1] == ("scoring", 8)  # every pair of the split, counted from the tar headers


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_launcher_takes_its_workers_with_it_and_nothing_is_written_after(setup: Path, tmp_path: Path) -> None:
    import signal
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    report = tmp_path / "report"
    proc = subprocess.Popen([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                             "-m", "defocuskit", "eval", "--shards", str(setup / "shards"), "--checkpoint",
                             str(setup / "hidd" / "model.safetensors"), "--steps", "400", "--report", str(report)],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        started = set()
        deadline = time.time() + 180
        while len(started) < 2 and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            started |= {rank for rank in (0, 1) if f"eval: process {rank} of 2" in line}
        assert started == {0, 1}, "the two workers did not start"
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived the killed launcher"
        time.sleep(1)
        assert not (report / "report.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers or _children(proc.pid):  # a failed check leaves no orphan behind
            if _alive(w):
                os.kill(w, signal.SIGKILL)


SLOW_CHECK = """import os, sys, time
from defocuskit.eval import saved
check = saved.SavedImages.check
def slow(self, *args, **kwargs):  # the main process's check of --save-images, as on a loaded machine
    time.sleep(float(os.environ["SLOW_CHECK_S"]))
    return check(self, *args, **kwargs)
saved.SavedImages.check = slow
sys.argv = ["defocuskit", *sys.argv[1:]]
from defocuskit.cli.app import main
main()
"""


def test_no_process_writes_before_the_main_one_has_checked_the_folders(setup: Path, tmp_path: Path) -> None:
    script = tmp_path / "slow_check.py"
    script.write_text(SLOW_CHECK)
    env = {**ENV, "SLOW_CHECK_S": "4"}
    # fresh folders: the other process waits for the check instead of saving its images under it (which the check
    # then took for files of the user's, and refused)
    ok = _launch_two([str(script), *_eval_command(setup, tmp_path / "fresh")[2:]], env)
    assert ok.returncode == 0, ok.stderr[-4000:]
    assert len(list((tmp_path / "fresh" / "images").rglob("*.png"))) == 24
    # the user's files where the outputs would go: the check refuses them, and no process writes over them meanwhile
    one = subprocess.run([sys.executable, *_eval_command(setup, tmp_path / "one")], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]
    mine = {p.relative_to(tmp_path / "one" / "images") for p in (tmp_path / "one" / "images").rglob("*.png")}
    for rel in mine:
        (tmp_path / "users" / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "users" / "images" / rel).write_bytes(b"mine")
    refused = _launch_two([str(script), *_eval_command(setup, tmp_path / "users")[2:]], env)
    assert refused.returncode != 0 and "exists and was not written by an earlier evaluation" in refused.stderr
    assert "the main process stopped before scoring" in refused.stderr  # the other process stops with its verdict
    assert all((tmp_path / "users" / "images" / rel).read_bytes() == b"mine" for rel in mine)
    assert not (tmp_path / "users" / "report" / "report.json").exists()
