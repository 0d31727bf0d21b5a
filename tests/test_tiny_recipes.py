"""The tiny defocus-map, RDDM and NAFNet recipes train through `accelerate launch` (2 CPU processes) on ingested
synthetic shards, their loss falls, and `defocuskit deblur` runs every exported model on an odd-sized image."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestOptions
from defocuskit.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ACCELERATE_USE_CPU": "1"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=64,
                                                             synthetic_f_numbers=(1.4, 4.0)), progress=False)
    return out


def accelerate_train(recipe: str, out: Path, *overrides: str) -> list[float]:
    """`accelerate launch` with 2 CPU processes; returns the logged loss curve."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "defocuskit", "train",
           str(REPO / "recipes" / recipe), f"output_dir={out}", "train.log_every=1", "train.checkpoint_every=1000",
           *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model.safetensors").is_file()
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def falls(losses: list[float], k: int = 8) -> bool:
    return float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))


def deblur(model: Path, image: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "defocuskit", "deblur", str(image), "--checkpoint", str(model),
                           "--out", str(out)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def test_tiny_recipes_train_under_accelerate_and_deblur(shards: Path, tmp_path: Path) -> None:
    data = f"data.train={shards}"
    steps = "train.max_steps=40"
    runs = tmp_path / "runs"
    curves = {
        "defocus-map": accelerate_train("defocus-map-tiny.yaml", runs / "map", data, steps),
        "nafnet": accelerate_train("nafnet-tiny.yaml", runs / "nafnet", data, steps),
    }
    curves["rddm"] = accelerate_train("rddm-tiny.yaml", runs / "rddm", data, steps,
                                      f"model.map_checkpoint={runs / 'map' / 'model.safetensors'}")
    for name, losses in curves.items():
        assert len(losses) == 40 and all(np.isfinite(losses)), name
        assert falls(losses), f"{name}: loss did not fall: {losses[:8]} ... {losses[-8:]}"

    rng = np.random.default_rng(0)
    image = tmp_path / "odd.png"  # 70 x 53: not a multiple of the 32 px tile
    write_image(image, (rng.random((53, 70, 3)) * 65535).astype(np.uint16))
    for name, folder in (("map", "map"), ("nafnet", "nafnet"), ("rddm", "rddm")):
        proc = deblur(runs / folder / "model.safetensors", image, tmp_path / f"out-{name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        written = Path(proc.stdout.strip().splitlines()[-1])
        result = read_image(written)
        assert result.shape == (53, 70, 3) and result.dtype == np.uint16, name
    assert (tmp_path / "out-map" / "odd_coc.png").is_file()
    provenance = json.loads((tmp_path / "out-rddm" / "deblur.json").read_text())["images"][0]
    assert provenance["timesteps"] == [650, 0] and provenance["nfe"] == 2  # 2 DDIM steps on the released (leading) grid


def test_new_methods_train_under_accelerate_deblur_odd_sizes_and_appear_in_eval(shards: Path, tmp_path: Path) -> None:
    """JDRL and the HIDD paper's CNN baselines: 2 CPU processes, odd-sized 16-bit deblur, eval --by-aperture.
    (CycleGAN's two-process run is in tests/test_cyclegan.py.)"""
    runs = tmp_path / "runs"
    names = ("jdrl", "dncnn", "ffdnet")
    for name in names:
        losses = accelerate_train(f"{name}-tiny.yaml", runs / name, f"data.train={shards}", "train.max_steps=6")
        assert len(losses) == 6 and all(np.isfinite(losses)), name

    rng = np.random.default_rng(1)
    image = tmp_path / "odd.png"
    write_image(image, (rng.random((53, 70, 3)) * 65535).astype(np.uint16))
    for name in names:
        extra = ["--coc", "fnumber", "--f-number", "2.8"] if name == "ffdnet" else []  # FFDNet's level map
        proc = subprocess.run([sys.executable, "-m", "defocuskit", "deblur", str(image), "--checkpoint",
                               str(runs / name / "model.safetensors"), "--out", str(tmp_path / f"out-{name}"), *extra],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = read_image(Path(proc.stdout.strip().splitlines()[-1]))
        assert result.shape == (53, 70, 3) and result.dtype == np.uint16, name

    proc = subprocess.run([sys.executable, "-m", "defocuskit", "eval", "--shards", str(shards), "--by-aperture",
                           "--limit", "2", "--coc", "fnumber", "--report", str(tmp_path / "report"),
                           *[a for n in names for a in ("--checkpoint", str(runs / n / "model.safetensors"))]],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    assert set(names) <= {r["method"] for r in rows}
    assert any(r["f_number"] is not None for r in rows if r["method"] == "jdrl")
