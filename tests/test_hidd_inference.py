"""HIDD at inference: named samplers chosen at run time, CoC sources, NFE counting, deblur.json and report.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from defocuskit.config.recipe import DataConfig, Recipe, recipe_to_dict
from defocuskit.eval.config import EvalConfig
from defocuskit.inference.files import deblur_files
from defocuskit.inference.restore import resolve_sampler, restore_image
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.images import read_image, write_image
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.hidd import ModelConfig, ObjectiveConfig, SamplerConfig
from defocuskit.methods.recipes import resolve_recipe

REPO = Path(__file__).resolve().parents[1]
VABD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train"


def export_tiny_hidd(path: Path, sampler: dict | None = None) -> Path:
    """A tiny random one-channel NCSN++ prior, exported like `defocuskit train` does."""
    raw = {"method": "hidd", "data": {"image_size": 32, "channels": 1},
           "model": {"channels": 1, "image_size": 32, "nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
                     "attn_resolutions": [16]},
           "sampler": sampler or {}}
    recipe = resolve_recipe(raw)
    torch.manual_seed(0)
    model = get_method("hidd").build(recipe.model, recipe.objective, False)
    save_model(path, model.state_dict(), "hidd", recipe_to_dict(recipe))
    return path


def export_tiny_map(path: Path) -> Path:
    recipe = resolve_recipe({"method": "defocus-map", "data": {"image_size": 32},
                             "model": {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
                                       "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8}})
    model = get_method("defocus-map").build(recipe.model, recipe.objective, False)
    save_model(path, model.state_dict(), "defocus-map", recipe_to_dict(recipe))
    return path


class CountingZeroScore(nn.Module):
    """A one-channel 'prior' with a zero score that counts its evaluations per batch item."""

    channels, multiple = 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.items = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.items += x.shape[0]
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def hidd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_hidd(tmp_path_factory.mktemp("hidd") / "hidd" / "model.safetensors")


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "shot.png"
    write_image(path, read_image(VABD / "1_8" / "0002.JPG")[300:340, 500:550])
    return path


# ----------------------------------------------------------------------------- NFE


@pytest.mark.parametrize("settings", [
    dict(name="released", steps=3),
    dict(name="pc", steps=3),
    dict(name="pc", steps=4, corrector=False),
    dict(name="pc", steps=2, corrector_chains=0),
    dict(name="fast", steps=5),
    dict(name="fast", steps=4, consistency="physics"),
])
def test_nfe_reported_equals_network_evaluations_per_tile(settings: dict) -> None:
    method = get_method("hidd")
    cfg = SamplerConfig(**settings)
    model = CountingZeroScore()
    recipe = Recipe(method="hidd", data=DataConfig(image_size=16, channels=1), model=ModelConfig(), objective=ObjectiveConfig(),
                    sampler=cfg)
    image = np.random.default_rng(0).random((20, 27, 3), dtype=np.float32)  # 2 x 2 tiles of 16, 3 channels
    coc = np.full((20, 27), 2.0, np.float32)
    restore_image(method, recipe, model, image, progress=False, coc=coc, tiling=TilingOptions(tile=16, overlap=4,
                                                                                              batch=3))
    paths = 4 * 3  # tiles x colour channels, each its own sample path
    assert model.items == cfg.nfe() * paths


def test_fast_default_is_at_most_one_fiftieth_of_released() -> None:
    assert SamplerConfig(name="fast").nfe() * 50 <= SamplerConfig(name="released").nfe()


# ----------------------------------------------------------------------------- sampler overrides


def test_resolve_sampler_name_and_set_are_checked_like_recipe_keys(hidd_file: Path) -> None:
    from defocuskit.inference.load import load_model

    _, recipe, _ = load_model(hidd_file)
    cfg = resolve_sampler(recipe, name="fast", sets=["sampler.consistency=physics", "zeta=0.5"])
    assert (cfg.name, cfg.consistency, cfg.zeta, cfg.steps) == ("fast", "physics", 0.5, None)
    assert resolve_sampler(recipe, 7, name="pc").steps == 7
    # a recipe's steps belong to its own sampler: naming another one takes that one's default
    paper = dataclasses.replace(recipe, sampler=SamplerConfig(name="pc", steps=1000))
    assert resolve_sampler(paper, name="fast").steps is None
    assert resolve_sampler(paper, name="fast").nfe() == 10
    assert resolve_sampler(paper, name="fast", sets=["sampler.steps=12"]).steps == 12
    assert resolve_sampler(paper, name="pc").steps == 1000
    with pytest.raises(ValueError, match="sampler.name"):
        resolve_sampler(recipe, name="ddpm")
    with pytest.raises(ValueError, match="sampler.nope"):
        resolve_sampler(recipe, sets=["sampler.nope=1"])
    with pytest.raises(ValueError, match="sampler.zeta"):
        resolve_sampler(recipe, sets=["sampler.zeta=abc"])
    with pytest.raises(ValueError, match="only sampler settings"):
        resolve_sampler(recipe, sets=["model.nf=4"])
    # the same setting given twice with two values: refused, never one of them silently (pc and 2 ran before)
    with pytest.raises(ValueError, match=r"--sampler fast and --set sampler.name=pc disagree; give the name once"):
        resolve_sampler(recipe, name="fast", sets=["sampler.name=pc"])
    with pytest.raises(ValueError, match=r"--steps 2 and --set sampler.steps=3 disagree; give the steps once"):
        resolve_sampler(recipe, 2, sets=["sampler.steps=3"])
    assert resolve_sampler(recipe, 2, sets=["sampler.steps=2"]).steps == 2  # the same value twice: no conflict
    with pytest.raises(ValueError, match=r"a label \(LABEL:sampler.KEY=VALUE\) picks one of eval's checkpoints"):
        resolve_sampler(recipe, sets=["hrun:sampler.steps=2"])


def test_rddm_steps_out_of_range_is_refused_when_resolved() -> None:
    from defocuskit.methods.rddm import SamplerConfig as RddmSampler

    recipe = Recipe(method="rddm", sampler=RddmSampler())
    with pytest.raises(ValueError, match="1 to 4"):
        resolve_sampler(recipe, 30)
    assert resolve_sampler(recipe, 3).steps == 3


def test_eval_steps_beyond_rddm_range_names_the_per_checkpoint_form(tmp_path: Path) -> None:
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.runners import _checkpoint_runner
    from defocuskit.methods.rddm import RDDM

    recipe = resolve_recipe({"method": "rddm", "data": {"image_size": 32},
                             "model": {"map_model": {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
                                                     "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8},
                                       "pre_width": 8, "pre_enc_blocks": [1], "pre_dec_blocks": [1],
                                       "pre_enc_dw": ["dcn"], "pre_dec_dw": ["conv"], "width": 8,
                                       "enc_blocks": [1], "dec_blocks": [1], "enc_dw": ["dcn"], "dec_dw": ["conv"],
                                       "resnet_hidden_sizes": [8, 8, 8], "resnet_depths": [1, 1, 1],
                                       "resnet_embedding_size": 8, "resnet_pretrained": None}})
    model = get_method("rddm").build(recipe.model, recipe.objective, False)
    assert isinstance(model, RDDM)
    save_model(tmp_path / "rddm" / "model.safetensors", model.state_dict(), "rddm", recipe_to_dict(recipe))
    with pytest.raises(EvalError, match=r"1 to 4 steps.*--set LABEL:sampler.steps"):
        _checkpoint_runner(tmp_path / "rddm" / "model.safetensors", steps=30, sampler=None, sets=[], device="cpu",
                           seed=0, coc=None, tiling=TilingOptions(tile=None, overlap=None, batch=1))


def test_model_files_of_the_previous_version_still_load(tmp_path: Path) -> None:
    """Files exported before named samplers (consistency as weights, normalize_each_step) keep working."""
    from defocuskit.inference.load import load_model

    path = export_tiny_hidd(tmp_path / "new.safetensors")
    from safetensors.torch import load_file

    recipe = recipe_to_dict(resolve_recipe({"method": "hidd"}))
    recipe["sampler"] = {"steps": 10, "snr": 0.021, "predictor": True, "corrector": True, "corrector_chains": 3,
                         "consistency": [0.08, 0.15], "carry_mean": True, "normalize_each_step": True}
    recipe["model"] = resolve_recipe(json.loads(_metadata(path)["recipe"])).model.__dict__
    save_model(tmp_path / "old.safetensors", load_file(str(path)), "hidd", recipe)
    _, old, _ = load_model(tmp_path / "old.safetensors")
    assert (old.sampler.name, old.sampler.weights, old.sampler.consistency) == ("released", (0.08, 0.15), "identity")


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


# ----------------------------------------------------------------------------- deblur


def test_deblur_json_records_every_input(hidd_file: Path, photo: Path, tmp_path: Path) -> None:
    second = tmp_path / "in" / "other.png"
    write_image(second, read_image(VABD / "2_8" / "0002.JPG")[300:330, 500:545])
    written = deblur_files([photo, second], hidd_file, tmp_path / "out", sampler="fast",
                           sets=["sampler.steps=3", "sampler.consistency=physics", "sampler.cg_steps=4"],
                           coc="fnumber", f_number=1.8, progress=False)
    record = json.loads((tmp_path / "out" / "deblur.json").read_text())["images"]
    assert [r["output"] for r in record] == [str(p) for p in written]
    assert [r["input"] for r in record] == [str(photo), str(second)]
    first = record[0]
    assert first["method"] == "hidd" and first["checkpoint"] == str(hidd_file)
    assert first["sampler"]["name"] == "fast" and first["sampler"]["steps"] == 3
    assert first["sampler"]["consistency"] == "physics" and first["sampler"]["cg_steps"] == 4
    assert set(first["sampler"]) == {f for f in SamplerConfig.__dataclass_fields__}  # the full settings
    assert first["nfe"] == 3
    assert first["coc"]["source"] == "fnumber" and "f-number" in first["coc"]["description"]
    assert first["seconds"] > 0
    assert read_image(written[0]).shape == read_image(photo).shape


def test_deblur_with_a_defocus_map_model(hidd_file: Path, photo: Path, tmp_path: Path) -> None:
    map_file = export_tiny_map(tmp_path / "map.safetensors")
    deblur_files([photo], hidd_file, tmp_path / "out", sampler="fast", sets=["steps=2", "consistency=physics",
                                                                             "cg_steps=2"],
                 coc="map", coc_model=map_file, progress=False)
    (rec,) = json.loads((tmp_path / "out" / "deblur.json").read_text())["images"]
    assert rec["coc"] == {"source": "map", "model": str(map_file), "description": rec["coc"]["description"],
                          "bound": None}  # the tiny map file has no inference.coc_bound
    assert str(map_file) in rec["coc"]["description"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="fast", sets=["consistency=physics"]), "--coc"),
    (dict(sampler="fast", sets=["consistency=physics"], coc="oracle"), "eval"),
    (dict(sampler="fast", sets=["consistency=physics"], coc="map"), "--coc-model"),
    (dict(sampler="fast", sets=["consistency=physics"], coc="fnumber"), "--f-number"),
    (dict(sampler="fast", coc="lens"), "unknown CoC source"),
    (dict(sampler="heun"), "sampler.name"),
    (dict(sets=["sampler.sigma_strat=0.2"]), "sigma_strat"),
    (dict(sampler="released", sets=["consistency=physics"]), "released"),
    # 10^9 never ended, or ran out of memory
    (dict(sampler="fast", sets=["steps=1", "cg_steps=1001", "consistency=physics"], coc="fnumber", f_number=2.8),
     r"sampler\.cg_steps: 0 to 1000 conjugate-gradient steps"),
    (dict(sets=["steps=1", "corrector_chains=301"]), r"sampler\.corrector_chains: 0 to 300"),
])
def test_deblur_bad_options_fail_before_any_output(hidd_file: Path, photo: Path, tmp_path: Path, kwargs: dict,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deblur_files([photo], hidd_file, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_deblur_sampler_options(hidd_file: Path, photo: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    runner = CliRunner()
    res = runner.invoke(app, ["deblur", str(photo), "--checkpoint", str(hidd_file), "--out", str(tmp_path / "o"),
                              "--sampler", "fast", "--set", "sampler.steps=2", "--set", "sampler.consistency=physics",
                              "--set", "sampler.cg_steps=2", "--coc", "fnumber", "--f-number", "2.8"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "deblur.json").read_text())["images"][0]["nfe"] == 2
    res = runner.invoke(app, ["deblur", str(photo), "--checkpoint", str(hidd_file), "--out", str(tmp_path / "p"),
                              "--sampler", "nope"])
    assert res.exit_code == 2 and "sampler.name" in res.output


# ----------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    out = tmp_path_factory.mktemp("syn") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0,)), progress=False)
    return out


@pytest.fixture(scope="module")
def plain_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real crops without coc.png and without an f-number."""
    from tests.test_eval import _crop_pairs, _write_shards

    return _write_shards(tmp_path_factory.mktemp("plain") / "shards", "test", _crop_pairs(2, (32, 40)))


def test_eval_records_sampler_nfe_and_coc_per_method(hidd_file: Path, synthetic_shards: Path, tmp_path: Path) -> None:
    from defocuskit.eval.evaluate import evaluate

    report = evaluate(synthetic_shards, [hidd_file], ["input", "prox"],
                      EvalConfig(limit=2, report_dir=tmp_path / "r", samplers=["fast"],
                                 sets=["hidd:sampler.steps=2", "sampler.consistency=physics", "sampler.cg_steps=3"],
                                 coc="oracle", progress=False))
    on_disk = json.loads((tmp_path / "r" / "report.json").read_text())
    info = on_disk["protocol"]["methods"]["hidd"]
    assert info["sampler"]["name"] == "fast" and info["sampler"]["steps"] == 2 and info["nfe"] == 2
    assert info["coc"]["source"] == "oracle" and "ORACLE" in on_disk["protocol"]["coc"]["description"]
    assert on_disk["protocol"]["methods"]["prox"]["coc"]["source"] == "oracle"
    rows = {(r["method"], r["f_number"]) for r in report["rows"]}
    assert ("hidd", "all") in rows or any(m == "hidd" for m, _ in rows)
    assert not report["skipped"]


def test_the_gaussian_psf_reaches_hidds_data_step_and_the_prox_baseline(hidd_file: Path, synthetic_shards: Path,
                                                                         tmp_path: Path) -> None:
    """`sampler.psf=gaussian` and the `prox-gaussian` baseline deblur with Gaussian kernels: recorded in the report,
    and their outputs differ from the disc's on the same samples and noise."""
    from defocuskit.eval.evaluate import evaluate

    evaluate(synthetic_shards, [hidd_file, hidd_file], ["prox", "prox-gaussian", "prox-plain"],
             EvalConfig(limit=2, report_dir=tmp_path / "r", save_images=tmp_path / "img", samplers=["fast"],
                        sets=["sampler.steps=2", "sampler.consistency=physics", "hidd#2:sampler.psf=gaussian"],
                        coc="oracle", progress=False))
    methods = json.loads((tmp_path / "r" / "report.json").read_text())["protocol"]["methods"]
    assert methods["hidd"]["sampler"]["psf"] == "disc" and methods["hidd#2"]["sampler"]["psf"] == "gaussian"
    kernel = "the Gaussian of its disc"
    assert kernel in methods["prox-gaussian"]["description"] and kernel not in methods["prox"]["description"]
    weighed = "the image's own noise"  # the default prox baselines weigh their change against it; prox-plain does not
    assert weighed in methods["prox"]["description"] and weighed in methods["prox-gaussian"]["description"]
    assert weighed not in methods["prox-plain"]["description"]
    for disc, gaussian in (("hidd", "hidd#2"), ("prox", "prox-gaussian")):
        files = sorted((tmp_path / "img" / disc).iterdir())
        assert files
        assert any((read_image(f).astype(np.int64) - read_image(tmp_path / "img" / gaussian / f.name)).any()
                   for f in files), disc


@pytest.mark.parametrize("kwargs, message", [
    (dict(samplers=["fast"], sets=["sampler.consistency=physics"], coc="oracle"), "coc.png"),
    (dict(samplers=["fast"], sets=["sampler.consistency=physics"], coc="fnumber"), "f_number"),
    (dict(samplers=["fast"], sets=["sampler.consistency=physics"], coc="map"), "--coc-model"),
    (dict(samplers=["fast"], sets=["sampler.consistency=physics"]), "--coc"),
    (dict(samplers=["euler"]), "sampler.name"),
    (dict(sets=["sampler.nope=3"]), "nope"),
    (dict(sets=["sampler.psf=box"]), "sampler.psf"),
    (dict(sets=["other:sampler.steps=3"]), "no checkpoint is labelled 'other'"),
])
def test_eval_bad_sampler_or_coc_options_are_errors(hidd_file: Path, plain_shards: Path, tmp_path: Path,
                                                    kwargs: dict, message: str) -> None:
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.evaluate import evaluate

    with pytest.raises(EvalError, match=message):
        evaluate(plain_shards, [hidd_file], ["input"], EvalConfig(report_dir=tmp_path / "r", progress=False, **kwargs))
    assert not (tmp_path / "r" / "report.json").exists()


def test_eval_settings_go_to_the_labelled_checkpoint_only(hidd_file: Path, plain_shards: Path, tmp_path: Path) -> None:
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.evaluate import evaluate
    from tests.test_eval import export_identity_nafnet

    nafnet = export_identity_nafnet(tmp_path / "nafnet" / "model.safetensors")
    report = evaluate(plain_shards, [hidd_file, nafnet], [], EvalConfig(report_dir=tmp_path / "r", progress=False,
                                                                        limit=1, steps=2,
                                                                        sets=["hidd:sampler.corrector=false"]))
    methods = report["protocol"]["methods"]
    assert methods["hidd"]["sampler"]["steps"] == 2 and methods["hidd"]["nfe"] == 2
    assert methods["nafnet"]["nfe"] == 1 and not report["skipped"]
    with pytest.raises(EvalError, match="nafnet"):
        evaluate(plain_shards, [hidd_file, nafnet], [], EvalConfig(report_dir=tmp_path / "r2", progress=False,
                                                                   sets=["nafnet:sampler.steps=3"]))


def test_map_coc_is_estimated_once_per_image(tmp_path: Path) -> None:
    from defocuskit.inference.coc_source import CocSource

    source = CocSource.create("map", export_tiny_map(tmp_path / "map.safetensors"))
    image = np.random.default_rng(1).random((24, 30, 3), dtype=np.float32)
    first = source(image, name="a")
    assert source(image, name="a") is first  # Wiener, prox and the model share one estimate
    again = source(image.copy(), name="a")
    assert again is not first and np.array_equal(again, first)
    assert first.shape == (24, 30) and (first >= 0).all()
