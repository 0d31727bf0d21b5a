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


def _val_shards(folder: Path, gray: int | None = None, coc_png: bool = True) -> Path:
    """A shard folder's test split without manifest: 3 pairs of 40x48 (f/2.8, f/2.8, f/8) with coc.png (unless not
    `coc_png`); pair `gray` (if given) in one channel, as a hand-written shard may hold it."""
    import webdataset as wds

    from defocuskit.io.images import encode_png

    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    with wds.TarWriter(str(folder / "test-000000.tar")) as w:
        for i, f_number in enumerate((2.8, 2.8, 8.0)):
            sharp = np.kron(rng.random((11, 13, 3)), np.ones((4, 4, 1)))[:40, :48]
            blur = 0.5 * sharp + 0.25
            coc = np.kron(rng.random((5, 6)) * 6, np.ones((8, 8)))
            if i == gray:
                sharp, blur = sharp.mean(2), blur.mean(2)
            sample = {"__key__": f"v{i}", "sharp.png": encode_png(np.round(sharp * 255).astype(np.uint8)),
                      "blur.png": encode_png(np.round(blur * 255).astype(np.uint8)),
                      "coc.png": encode_png(np.round(coc * 256).astype(np.uint16)),
                      "json": json.dumps({"f_number": f_number}).encode()}
            w.write(sample if coc_png else {k: v for k, v in sample.items() if k != "coc.png"})
    return folder


class _OneProcess:
    """What a Validator asks of Accelerate's accelerator, for one CPU process."""
    device, num_processes, process_index, local_process_index, is_main_process = "cpu", 1, 0, 0, True


def _validate(recipe_name: str, shards: Path, tmp_path: Path, *overrides: str):
    """(the validation record of a random network of `recipe_name`, that network exported as a model file)."""
    import torch

    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.eval.validation import make_validator
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import load_recipe_source

    recipe, _ = load_recipe_source(recipe_name, [f"data.val={shards}", f"output_dir={tmp_path / 'run'}", *overrides])
    method = get_method(recipe.method)
    torch.manual_seed(1)
    state = method.build(recipe.model, recipe.objective, False).state_dict()
    record, _grid = make_validator(recipe)(state, 7, _OneProcess())
    save_model(tmp_path / "model.safetensors", state, method.name, recipe_to_dict(recipe))
    return record, tmp_path / "model.safetensors"


def _eval_rows(shards: Path, model: Path, tmp_path: Path, **options) -> dict:
    """eval's rows of `model` by f-number ("all" for the pooled row), with eval's defaults but `options`."""
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    report = evaluate(shards, [model], [], EvalConfig(report_dir=tmp_path / "report", progress=False, **options))
    return {"all" if r["f_number"] is None else f"{r['f_number']:g}": r for r in report["rows"]}


def _assert_same_scores(record: dict, rows: dict) -> None:
    assert (record["val_n"], record["val_psnr"], record["val_ssim"], record["val_mae"]) == \
        (rows["all"]["n"], rows["all"]["psnr"], rows["all"]["ssim"], rows["all"]["mae"])
    assert record["val_psnr_input"] == rows["all"]["psnr_input"]
    assert {f: (s["n"], s["psnr"], s["mae"]) for f, s in record["val_by_f_number"].items()} == \
        {f: (r["n"], r["psnr"], r["mae"]) for f, r in rows.items() if f != "all"}


def test_validation_scores_with_the_recipes_own_focus_gate_as_eval_does(tmp_path: Path):
    """nafnet-cpu (and jdrl-, rddm-, hidd-cpu) gate their change by default (inference.focus_gate): eval of the
    exported model gates it by the edge CoC map; validation scored the ungated output (-1.3 dB off on a real run)."""
    shards = _val_shards(tmp_path / "shards")
    record, model = _validate("nafnet-tiny", shards, tmp_path, "inference.focus_gate=3")
    _assert_same_scores(record, _eval_rows(shards, model, tmp_path))
    assert record["val_protocol"]["focus_gate"]["full_px"] == 3 and record["val_protocol"]["coc"] == "edge"


def test_sampler_validation_is_evals_default_seed_and_records_its_settings(tmp_path: Path):
    """A recipe's seed (hidd-cpu's 42) seeded validation's sampler noise: eval of the exported model (--seed 0 by
    default) scored other numbers; the record now says the sampler settings, NFE and seed it ran with."""
    shards = _val_shards(tmp_path / "shards")
    record, model = _validate("hidd-tiny", shards, tmp_path, "seed=7", "sampler.steps=2")
    _assert_same_scores(record, _eval_rows(shards, model, tmp_path, coc="oracle"))
    protocol = record["val_protocol"]
    assert (protocol["seed"], protocol["sampler"]["steps"], protocol["nfe"], protocol["coc"]) == (0, 2, 2, "oracle")


def test_a_validation_pair_left_unscored_is_counted_and_said(tmp_path: Path):
    """A pair eval skips (here a gray one, which no scoring takes) was dropped from validation without a word."""
    shards = _val_shards(tmp_path / "shards", gray=1)
    record, _ = _validate("nafnet-tiny", shards, tmp_path)
    assert record["val_n"] == 2 and record["val_skipped"] == 1
    assert record["val_skipped_first"].startswith("v1: blurred input: expected (H, W, C)")


def test_validation_shards_that_are_training_shards_are_said(tmp_path: Path):
    """data.val as a pattern naming the training shards scored training samples without a word."""
    from defocuskit.eval.validation import make_validator
    from defocuskit.methods.recipes import load_recipe_source

    shards = _val_shards(tmp_path / "shards")
    (shards / "test-000000.tar").rename(shards / "train-000000.tar")
    pattern = str(shards / "train-*.tar")
    recipe, _ = load_recipe_source("nafnet-tiny", [f"data.train={shards}", f"data.val={pattern}"])
    note, = make_validator(recipe).notes
    assert "1 of its 1 shard(s)" in note and "scores samples the model trains on" in note
    other = _val_shards(tmp_path / "other")
    recipe, _ = load_recipe_source("nafnet-tiny", [f"data.train={shards}", f"data.val={other}"])
    assert make_validator(recipe).notes == []


def test_a_sampler_that_needs_a_coc_map_is_refused_shards_without_coc_png_before_training(tmp_path: Path):
    """hidd-tiny's sampler reads the shards' coc.png: validation shards without it trained the whole run, then
    stopped at its first validation (no pair scored), or scored the pairs that had one without a word."""
    import webdataset as wds

    from defocuskit.eval.validation import make_validator
    from defocuskit.methods.recipes import load_recipe_source

    shards = _val_shards(tmp_path / "shards")
    with wds.TarWriter(str(shards / "test-000001.tar")) as w:  # a second shard: one pair without coc.png
        w.write({"__key__": "plain", "sharp.png": encode(np.zeros((8, 8, 3), np.uint8)),
                 "blur.png": encode(np.zeros((8, 8, 3), np.uint8)), "json": b'{"f_number": 4}'})
    recipe, _ = load_recipe_source("hidd-tiny", [f"data.val={shards}"])
    try:
        make_validator(recipe)
    except ValueError as exc:
        assert "pair plain of" in str(exc) and "test-000001.tar" in str(exc) and "coc.png" in str(exc)
    else:
        raise AssertionError("validation shards without coc.png were accepted for a sampler that needs them")
    recipe, _ = load_recipe_source("hidd-tiny", [f"data.val={shards}", "train.val_limit=3"])
    assert make_validator(recipe) is not None  # the first 3 pairs, the ones scored, have coc.png


def encode(image: np.ndarray) -> bytes:
    from defocuskit.io.images import encode_png

    return encode_png(image)


def test_an_ffdnet_trained_without_its_level_map_validates_on_pairs_without_coc_png(tmp_path: Path):
    """ffdnet's model.level_map=none (the documented ablation, which needs no --coc at deblur or eval time) was
    refused real validation pairs before training: "the 'ffdnet' sampler needs a CoC map" (its sampler.level_map
    null was not read as the exported file reads it, from model.level_map)."""
    shards = _val_shards(tmp_path / "shards", coc_png=False)
    record, model = _validate("ffdnet-tiny", shards, tmp_path, "model.level_map=none")
    _assert_same_scores(record, _eval_rows(shards, model, tmp_path))
    assert record["val_n"] == 3 and record["val_protocol"]["coc"] is None
