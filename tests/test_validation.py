"""Validation during training: the record's scalars for trackers, images handed to trackers, the best so far."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from defocuskit.train.validation import best_so_far, log_images, tracker_values


def test_tracker_values_flatten_the_record_by_f_number_and_drop_what_is_not_a_finite_number():
    record = {"step": 10, "val_n": 4, "val_psnr": 25.5, "val_psnr_gain": 0.25, "val_lpips": None,
              "val_ssim": float("nan"), "val_by_f_number": {"1.8": {"n": 2, "psnr": 24.0, "psnr_gain": 0.5}}}
    assert tracker_values(record) == {"val/n": 4.0, "val/psnr": 25.5, "val/psnr_gain": 0.25,
                                      "val/f1.8/psnr": 24.0, "val/f1.8/psnr_gain": 0.5}


def test_images_go_to_each_tracker_in_its_own_form():
    class Tracker:
        def __init__(self, name: str) -> None:
            self.name, self.calls = name, []

        def log_images(self, values, step=None, **kwargs):
            self.calls.append((values, step, kwargs))

    class NoImages:
        name = "csv"

    board, other = Tracker("tensorboard"), Tracker("wandb")
    accelerator = type("A", (), {"trackers": [board, NoImages(), other]})()
    grid = np.zeros((8, 12, 3), np.uint8)
    log_images(accelerator, "val/crops", grid, 7)
    (values, step, kwargs), = board.calls
    assert values["val/crops"].shape == (1, 8, 12, 3) and step == 7 and kwargs == {"dataformats": "NHWC"}
    (values, step, kwargs), = other.calls
    assert values["val/crops"][0] is grid and step == 7


def test_best_so_far_reads_the_rows_up_to_the_resumed_step(tmp_path: Path):
    rows = [{"step": 5, "loss": 1.0}, {"step": 5, "val_psnr": 20.0}, {"step": 10, "val_psnr": 22.0},
            {"step": 15, "val_psnr": 30.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    assert best_so_far(tmp_path, 10) == 22.0
    assert best_so_far(tmp_path, 4) == -math.inf
    assert best_so_far(tmp_path / "missing", 10) == -math.inf


def test_a_fresh_run_removes_only_the_grids_and_best_file_an_earlier_run_wrote(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from defocuskit.io.modelfile import MODEL_FORMAT
    from defocuskit.train.checkpoints import clean_run_folder

    rows = [{"step": 5, "loss": 1.0}, {"step": 5, "val_psnr": 20.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val").mkdir()
    ours, theirs = tmp_path / "val" / "step-0000005.png", tmp_path / "val" / "step-0000007.png"
    ours.write_bytes(b"grid")
    theirs.write_bytes(b"a file of the user's that no validation row names")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "best.safetensors"),  # as train.keep_best writes it here
              metadata={"format": MODEL_FORMAT, "method": "nafnet", "recipe": "{}", "best_step": "5",
                        "run_folder": str(tmp_path)})
    clean_run_folder(tmp_path, fresh=True)
    assert not ours.exists() and theirs.exists() and not (tmp_path / "best.safetensors").exists()
    assert not (tmp_path / "metrics.jsonl").exists()
    (tmp_path / "best.safetensors").write_bytes(b"the user's own file")  # no run metadata: kept
    clean_run_folder(tmp_path, fresh=True)
    assert (tmp_path / "best.safetensors").read_bytes() == b"the user's own file"


def test_two_processes_validate_with_the_main_processes_batchnorm_statistics(tmp_path: Path):
    """DnCNN's BatchNorm running statistics differ between processes (each updates its own): pair 1, scored on
    process 1, must be scored with the weights the main process exports, as a one-process eval of the model does."""
    import subprocess

    from test_train import ENV, REPO, launch_two, write_shards
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    shards = write_shards(tmp_path / "shards", n_shards=2, per_shard=4, paired=True, seed=5)
    out = tmp_path / "run"
    proc = subprocess.run([*launch_two(), "train", "dncnn-tiny", f"data.train={shards}", f"output_dir={out}",
                           "train.max_steps=3", f"data.val={shards}", "train.val_limit=2"],
                          cwd=REPO, env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val_psnr" in x][-1]
    result = CliRunner().invoke(app, ["eval", "--shards", str(tmp_path / "shards"), "--split", "train", "--limit", "2",
                                      "--checkpoint", str(out / "model.safetensors"), "--report",
                                      str(tmp_path / "rep")])  # one torch thread: conftest
    assert result.exit_code == 0, result.output
    row, = [r for r in json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]
            if r["f_number"] is None and r.get("source") is None and r["method"] != "input"]
    assert (val["step"], val["val_n"], val["val_psnr"]) == (3, 2, row["psnr"])
