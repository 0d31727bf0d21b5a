"""The model card of save_pretrained / push_to_hub: the Hub's front matter (license from the recipe, datasets from
the shard manifests, a model-index from a `defocuskit eval` report), the inference the model really runs, and no
local path anywhere in it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import defocuskit
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _shards(folder: Path) -> Path:
    """A shard folder's manifest: DPDD and one's own RAW captures in train, DPDD in test."""
    folder.mkdir(parents=True)
    table = [{"split": "train", "source": "dpdd", "f_number": "2.8", "samples": 4},
             {"split": "train", "source": "raw", "f_number": "8", "samples": 2},
             {"split": "test", "source": "dpdd", "f_number": "2.8", "samples": 2}]
    (folder / "manifest.json").write_text(json.dumps({"counts": {"table": table, "by_source": {"dpdd": 6, "raw": 2}}}))
    return folder


def _export(path: Path, recipe_name: str, overrides: list[str]) -> Path:
    recipe = load_recipe(recipe_name, overrides)
    torch.manual_seed(0)
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return path


def _report(path: Path, model_file: Path, shards: Path) -> Path:
    from defocuskit.eval.report import aggregate

    images = [{"method": "mine", "source": "dpdd", "f_number": f, "psnr": 30.0 + gain, "psnr_input": 30.0,
               "ssim": ssim, "ssim_input": 0.7, "mae": 0.02, "mae_input": 0.03, "lpips": None, "lpips_input": None}
              for f, gain, ssim in ((2.8, 2.0, 0.9), (2.8, 1.0, 0.8), (8.0, 0.5, 0.75))]
    coc_model = str(shards.parent / "coc.safetensors")
    protocol = {"split": "test", "shards": str(shards), "psnr": "PSNR per image", "ssim": "SSIM 7x7",
                "grouping": "f_number rounded to 0.1",
                "methods": {"mine": {"kind": "checkpoint", "path": str(model_file), "method": "nafnet", "sampler": {},
                                     "nfe": 1, "seed": 0, "inference": "whole image",
                                     "coc": {"source": "map", "model": coc_model,
                                             "description": f"defocus-map model {coc_model}"}}}}
    path.write_text(json.dumps({"protocol": protocol, "rows": aggregate(images, ["mine"], by_aperture=True),
                                "images": images}))
    return path


def _front(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_card_front_matter_license_datasets_model_index_and_no_local_path(tmp_path):
    from huggingface_hub import ModelCard

    shards = _shards(tmp_path / "data" / "dpdd-shards")
    model_file = _export(tmp_path / "runs" / "model.safetensors", "nafnet-tiny",
                         [f"data.train={shards}", f"output_dir={tmp_path / 'runs'}", "license=apache-2.0"])
    report = _report(tmp_path / "report.json", model_file, shards)
    folder = defocuskit.load(model_file, device="cpu").save_pretrained(tmp_path / "hub", report=report)
    card = (folder / "README.md").read_text()

    data = ModelCard(card).data
    assert data.license == "apache-2.0" and data.library_name == "defocuskit"
    assert data.datasets == ["DPDD", "dpdd-shards"]  # a public source by its title, one's own photos by the folder
    results = data.eval_results
    assert {(r.task_type, r.task_name, r.dataset_name, r.dataset_type, r.dataset_split) for r in results} == {
        ("image-to-image", "Defocus deblurring", "DPDD", "dpdd", "test")}
    metrics = {r.metric_name: (r.metric_type, r.metric_value) for r in results}
    assert metrics["PSNR"] == ("psnr", 31.17) and metrics["SSIM"] == ("ssim", 0.8167)  # the pooled row, rounded
    assert metrics["PSNR (f/2.8)"] == ("psnr", 31.5) and metrics["PSNR (f/8)"] == ("psnr", 30.5)
    assert metrics["SSIM (f/8)"] == ("ssim", 0.75) and "LPIPS" not in metrics  # no LPIPS in the report
    index = _front(card)["model-index"][0]
    assert index["results"][0]["task"] == {"type": "image-to-image", "name": "Defocus deblurring"}
    assert index["results"][0]["metrics"][0] == {"type": "psnr", "value": 31.17, "name": "PSNR"}

    assert "/tmp" not in card and str(tmp_path) not in card and str(shards) not in card
    assert "`data.train`: `dpdd-shards`" in card and "coc.safetensors" in card  # base names stand in for paths
    assert "| f/2.8 | 2 | 31.50 | 30.00 | +1.50 |" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["license"] == "apache-2.0" and config["datasets"] == ["DPDD", "dpdd-shards"]
    assert config["recipe"]["data"]["train"] == str(shards)  # recipe.yaml and config.json keep the recipe as run

    again = defocuskit.load(folder, device="cpu").save_pretrained(tmp_path / "again")  # the Hub copy: no manifest
    assert ModelCard((again / "README.md").read_text()).data.datasets == ["DPDD", "dpdd-shards"]


def test_card_license_is_other_unless_given_and_no_model_index_without_a_report(tmp_path):
    model_file = _export(tmp_path / "m.safetensors", "nafnet-tiny", ["data.train=shards/train-*.tar"])
    model = defocuskit.load(model_file, device="cpu")
    card = (model.save_pretrained(tmp_path / "a") / "README.md").read_text()
    front = _front(card)
    assert front["license"] == "other" and "model-index" not in front and "Not stated" in card
    assert front["datasets"] == ["shards"]  # no manifest to read: the shard folder's name
    card = (model.save_pretrained(tmp_path / "b", license="cc-by-nc-4.0") / "README.md").read_text()
    assert _front(card)["license"] == "cc-by-nc-4.0"


@pytest.mark.parametrize(("recipe", "overrides", "says", "per"), [
    ("nafnet-tiny", [], "Inference: the whole image in one pass, reflect-padded to a multiple of 8 px", "per pass"),
    ("hidd-tiny", [],
     "Inference: overlapping tiles of 32x32 px, the training size", "per tile"),
])
def test_card_says_how_inference_really_runs(recipe, overrides, says, per, tmp_path):
    model_file = _export(tmp_path / "m.safetensors", recipe, overrides)
    folder = defocuskit.load(model_file, device="cpu").save_pretrained(tmp_path / "hub")
    card = (folder / "README.md").read_text()
    assert says in card and per in card and "tiled at" not in card
    mode = json.loads((folder / "config.json").read_text())["inference"]["mode"]
    assert mode == ("whole" if recipe.startswith("nafnet") else "tiles")


def test_card_of_a_fine_tuned_model_names_what_it_was_fine_tuned_from(tmp_path):
    recipe = load_recipe("nafnet-tiny")
    net = get_method("nafnet").build(recipe.model, recipe.objective, False)
    base = tmp_path / "private" / "base-model.safetensors"
    save_model(tmp_path / "m.safetensors", net.state_dict(), "nafnet", recipe_to_dict(recipe),
               extra={"init_from": str(base), "init_from_sha256": "ab" * 32})
    folder = defocuskit.load(tmp_path / "m.safetensors", device="cpu").save_pretrained(tmp_path / "hub")
    card = (folder / "README.md").read_text()
    assert "trained with defocuskit" in card
    assert f"Fine-tuned from `base-model.safetensors` (sha256 `{'ab' * 32}`)" in card
    assert str(tmp_path) not in card
    plain = _export(tmp_path / "plain.safetensors", "nafnet-tiny", [])
    folder = defocuskit.load(plain, device="cpu").save_pretrained(tmp_path / "hub2")
    assert "Fine-tuned" not in (folder / "README.md").read_text()


def test_card_says_when_the_model_gates_its_output_by_default(tmp_path):
    """A recipe with inference.focus_gate (nafnet-cpu's): the card tells how to get the raw output; without, nothing."""
    gated = _export(tmp_path / "g.safetensors", "nafnet-tiny", ["inference.focus_gate=3"])
    card = (defocuskit.load(gated, device="cpu").save_pretrained(tmp_path / "hub") / "README.md").read_text()
    assert "gates the output by default (`inference.focus_gate: 3`)" in card and "focus_gate=0" in card
    plain = _export(tmp_path / "p.safetensors", "nafnet-tiny", [])
    card = (defocuskit.load(plain, device="cpu").save_pretrained(tmp_path / "hub2") / "README.md").read_text()
    assert "gates the output" not in card


def test_card_says_how_a_map_model_is_bounded_by_the_f_number(tmp_path):
    """A defocus-map model with inference.coc_bound (resolved from `auto` by training): the card says how to bound its
    map; a file whose bound was never resolved says nothing of one."""
    bounded = _export(tmp_path / "b.safetensors", "defocus-map-tiny", ["inference.coc_bound=0.05"])
    card = (defocuskit.load(bounded, device="cpu").save_pretrained(tmp_path / "hub") / "README.md").read_text()
    assert "`inference.coc_bound: 0.05`" in card and "model.coc_map(image, f_number=N)" in card
    unresolved = _export(tmp_path / "u.safetensors", "defocus-map-tiny", [])
    card = (defocuskit.load(unresolved, device="cpu").save_pretrained(tmp_path / "hub2") / "README.md").read_text()
    assert "bounded by the f-number" not in card


def test_card_says_how_the_report_scored_beyond_the_default_protocol(tmp_path):
    """A report of `eval --detail-band`, `--align` or `--protocol dpdd8` holds scores that are not the plain PSNR of
    the images as produced (the detail band alone gave +7.8 dB on real VABD crops); the card and the Hub's
    model-index presented them as "PSNR", and an `--ensemble` run's as the model's own. They say so now."""
    from test_eval import _write_shards, export_identity_nafnet

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    rng = np.random.default_rng(0)
    pairs = [{"key": f"k{i}", "sharp": (sharp := rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
              "blur": np.clip(sharp.astype(np.int16) + rng.integers(-20, 20, sharp.shape), 0, 255).astype(np.uint8),
              "coc": None, "meta": {"source": "x", "f_number": 2.8}} for i in range(2)]
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    model_file = export_identity_nafnet(tmp_path / "runs" / "naf" / "model.safetensors")
    model = defocuskit.load(model_file, device="cpu")
    config = EvalConfig(report_dir=tmp_path / "scored", progress=False, detail_band=4.0, align="ecc",
                        protocol="dpdd8", ensembles=["naf:4"])
    evaluate(shards, [model_file], ["input"], config)
    card = (model.save_pretrained(tmp_path / "hub", report=tmp_path / "scored") / "README.md").read_text()
    terms = "protocol dpdd8; aligned to the reference (ecc); detail band 4 px"
    assert f"Scores: {terms}, not the default protocol's" in card and "; self-ensemble of 4 (eval --ensemble)" in card
    names = {m["name"] for m in _front(card)["model-index"][0]["results"][0]["metrics"]}
    assert names == {f"PSNR ({terms})", f"SSIM ({terms})", f"PSNR (f/2.8; {terms})", f"SSIM (f/2.8; {terms})"}

    evaluate(shards, [model_file], ["input"], EvalConfig(report_dir=tmp_path / "plain", progress=False))
    card = (model.save_pretrained(tmp_path / "hub2", report=tmp_path / "plain") / "README.md").read_text()
    assert "Scores:" not in card and "self-ensemble" not in card  # the default protocol: nothing to add
    assert {m["name"] for m in _front(card)["model-index"][0]["results"][0]["metrics"]} == {
        "PSNR", "SSIM", "PSNR (f/2.8)", "SSIM (f/2.8)"}


def _gated_run(tmp_path: Path, gates: list[str]) -> tuple[Path, str]:
    """(model file of a recipe gated by default, its card from an eval report run with `gates`)."""
    from test_eval import _write_shards

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    rng = np.random.default_rng(0)
    pairs = [{"key": f"k{i}", "sharp": (sharp := rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)),
              "blur": np.clip(sharp.astype(np.int16) + rng.integers(-20, 20, sharp.shape), 0, 255).astype(np.uint8),
              "coc": None, "meta": {"source": "x", "f_number": 2.8}} for i in range(2)]
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    model_file = _export(tmp_path / "gated" / "model.safetensors", "nafnet-tiny", ["inference.focus_gate=3"])
    evaluate(shards, [model_file], [], EvalConfig(report_dir=tmp_path / "scored", progress=False, focus_gates=gates,
                                                 limit=1))
    model = defocuskit.load(model_file, device="cpu")
    return model_file, (model.save_pretrained(tmp_path / "hub", report=tmp_path / "scored") / "README.md").read_text()


def test_card_says_the_report_ran_the_model_ungated_where_it_did(tmp_path):
    """A model whose recipe gates by default, scored with `eval --focus-gate LABEL:0`: the card said "Its recipe gates
    the output by default" and nothing of the gate beside the scores, which read as gated; it says they are not."""
    _, card = _gated_run(tmp_path, ["gated:0"])
    settings = next(line for line in card.splitlines() if line.startswith("Settings of that run"))
    assert ("no focus gate: the model's raw output (its recipe's default gate, `inference.focus_gate: 3`, turned off "
            "by eval --focus-gate 0)") in settings and "focus gate 3 px" not in settings


def test_card_says_the_gate_and_its_low_pass_and_the_part_of_the_split_scored(tmp_path):
    """Gated by its recipe: the gate's size and the low-pass it keeps; `eval --limit 1` scored one pair of two, which
    the card presented as the split."""
    _, card = _gated_run(tmp_path, [])
    assert "; focus gate 3 px (its recipe's; the change's low-pass of 16 px kept)" in card
    assert "split `test` (its first 1 pair alone: eval --limit 1; checkpoint `gated`)" in card


def test_a_report_of_another_file_at_the_models_path_is_refused(tmp_path):
    """A model trained again at the path a report scored: its card showed the earlier model's scores as its own."""
    model_file, _ = _gated_run(tmp_path, [])
    _export(model_file, "nafnet-tiny", ["inference.focus_gate=3", "model.width=4"])  # retrained, same path
    with pytest.raises(ValueError, match=r"checkpoint 'gated' is not this model: the report scored a file of SHA-256"):
        defocuskit.load(model_file, device="cpu").save_pretrained(tmp_path / "hub2", report=tmp_path / "scored")
    assert not (tmp_path / "hub2").exists()


def test_card_gives_the_steps_the_model_file_records_not_the_recipes_max_steps(tmp_path):
    """A run stopped by train.max_minutes at step 7 of 20: the card said "20 steps" (the recipe's train.max_steps)."""
    recipe = load_recipe("nafnet-tiny", [])
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    save_model(tmp_path / "m.safetensors", net.state_dict(), recipe.method, recipe_to_dict(recipe),
               extra={"steps": "7"})
    card = (defocuskit.load(tmp_path / "m.safetensors", device="cpu").save_pretrained(tmp_path / "hub")
            / "README.md").read_text()
    assert "32 px crops, 7 steps (the recipe's `train.max_steps`: 20)." in card
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["train_steps"] == 7
    unrecorded = _export(tmp_path / "u.safetensors", "nafnet-tiny", [])  # an older export: no steps recorded
    card = (defocuskit.load(unrecorded, device="cpu").save_pretrained(tmp_path / "hub2") / "README.md").read_text()
    assert "up to 20 steps (the recipe's `train.max_steps`; the model file does not record the steps trained)" in card


def test_card_names_the_datasets_the_model_file_records_not_what_the_folder_holds_now(tmp_path):
    """The card named the training data from the shard folders' manifests when it was made: a folder moved, deleted
    or ingested anew since (or a relative data.train read from another working folder) named other data. An export
    records the names (`datasets` metadata); the card takes them from the file."""
    recipe = load_recipe("nafnet-tiny", [f"data.train={tmp_path / 'gone' / 'dpdd-shards'}"])
    net = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    save_model(tmp_path / "m.safetensors", net.state_dict(), recipe.method, recipe_to_dict(recipe),
               extra={"datasets": json.dumps(["DPDD", "my-photos"])})  # as train's export records them
    folder = defocuskit.load(tmp_path / "m.safetensors", device="cpu").save_pretrained(tmp_path / "hub")
    assert _front((folder / "README.md").read_text())["datasets"] == ["DPDD", "my-photos"]
    assert "DPDD, my-photos (`data.train`: `dpdd-shards`)" in (folder / "README.md").read_text()


def test_model_index_names_an_ssim_of_another_window(tmp_path):
    """`eval --ssim gaussian11` (Wang et al.'s 11x11 Gaussian window) reads higher than the default 7x7 uniform one;
    the model-index named both "SSIM". The other window is named now; PSNR's names are unchanged."""
    from test_eval import _write_shards, export_identity_nafnet

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    blur = np.clip(sharp.astype(np.int16) + rng.integers(-20, 20, sharp.shape), 0, 255).astype(np.uint8)
    shards = _write_shards(tmp_path / "shards", "test", [{"key": "k", "sharp": sharp, "blur": blur, "coc": None,
                                                          "meta": {"source": "x", "f_number": 2.8}}])
    model_file = export_identity_nafnet(tmp_path / "runs" / "naf" / "model.safetensors")
    evaluate(shards, [model_file], [], EvalConfig(report_dir=tmp_path / "scored", progress=False,
                                                  ssim_variant="gaussian11"))
    card = (defocuskit.load(model_file, device="cpu").save_pretrained(tmp_path / "hub", report=tmp_path / "scored")
            / "README.md").read_text()
    assert {m["name"] for m in _front(card)["model-index"][0]["results"][0]["metrics"]} == {
        "PSNR", "SSIM (gaussian11 window: eval --ssim gaussian11)", "PSNR (f/2.8)",
        "SSIM (f/2.8; gaussian11 window: eval --ssim gaussian11)"}
