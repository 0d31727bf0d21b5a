"""Per-checkpoint settings of eval and deblur given twice or in any order: `--set`, `--sampler`, `--focus-gate`,
`--ensemble` (with or without a LABEL), and `--steps` where no model has a sampler."""

from __future__ import annotations

from pathlib import Path

import pytest

from defocuskit.eval.config import EvalConfig, EvalError
from defocuskit.eval.runners import (
    ensembles_per_checkpoint,
    gates_per_checkpoint,
    per_checkpoint_settings,
    split_label,
)
from defocuskit.inference.restore import resolve_sampler
from defocuskit.methods.recipes import resolve_recipe

HIDD_KEYS = {"name", "steps", "snr"}
PATHS = {"hidd": Path("runs/hidd/model.safetensors"), "hidd#2": Path("runs/hidd/model.safetensors"),
         "nafnet": Path("runs/nafnet/model.safetensors")}
KEYS = {"hidd": HIDD_KEYS, "hidd#2": HIDD_KEYS, "nafnet": set()}


@pytest.mark.parametrize("settings", [
    {"ensembles": ["nafnet:4", "nafnet:8"]},
    {"ensembles": ["4", "8"]},
    {"focus_gates": ["nafnet:3", "nafnet:5"]},
    {"focus_gates": ["2", "3"]},
    {"samplers": ["hidd:fast", "hidd:pc"]},
    {"samplers": ["fast", "released"]},
    {"sets": ["hidd:sampler.steps=3", "hidd:sampler.steps=4"]},
    {"sets": ["sampler.steps=3", "steps=4"]},
])
def test_the_same_setting_given_twice_with_other_values_is_refused_naming_both(settings: dict) -> None:
    (option, items), = settings.items()
    flag = {"ensembles": "--ensemble", "focus_gates": "--focus-gate", "samplers": "--sampler", "sets": "--set"}[option]
    with pytest.raises(EvalError, match=rf"^{flag} {items[0]} and {flag} {items[1]} disagree; give it once$"):
        if option == "ensembles":
            ensembles_per_checkpoint(list(PATHS), items)
        elif option == "focus_gates":
            gates_per_checkpoint(list(PATHS), items)
        else:
            per_checkpoint_settings(PATHS, KEYS, items if option == "samplers" else [],
                                    items if option == "sets" else [])


def test_the_same_value_twice_and_a_label_over_every_checkpoint_stand() -> None:
    assert ensembles_per_checkpoint(list(PATHS), ["nafnet:4", "nafnet:4", "8"]) == {"hidd": 8, "hidd#2": 8, "nafnet": 4}
    assert gates_per_checkpoint(list(PATHS), ["hidd:2", "0", "hidd:2"]) == {"hidd": 2.0, "hidd#2": None, "nafnet": None}


def test_a_labelled_sampler_or_set_wins_over_one_for_every_checkpoint_given_after_it() -> None:
    chosen = per_checkpoint_settings(PATHS, KEYS, ["hidd:fast", "pc"], ["hidd:sampler.steps=3", "sampler.steps=2"])
    assert chosen == {"hidd": ("fast", ["sampler.steps=3"]), "hidd#2": ("pc", ["sampler.steps=2"]),
                      "nafnet": (None, [])}


def test_a_run_folder_named_with_a_colon_is_a_label_too() -> None:
    labels = {"a:b", "nafnet"}
    assert split_label("a:b:4", labels, "--ensemble") == ("a:b", "4")
    assert split_label("a:b:sampler.steps=2", labels, "--set") == ("a:b", "sampler.steps=2")
    assert ensembles_per_checkpoint(["a:b", "nafnet"], ["a:b:8"]) == {"a:b": 8, "nafnet": 1}
    with pytest.raises(EvalError, match="no checkpoint is labelled 'a'"):
        split_label("a:4", labels, "--ensemble")


def test_deblur_refuses_one_sampler_key_set_twice_with_other_values() -> None:
    recipe = resolve_recipe({"method": "hidd", "data": {"image_size": 32, "channels": 1},
                             "model": {"channels": 1, "image_size": 32, "nf": 8, "ch_mult": [1, 2],
                                       "num_res_blocks": 1, "attn_resolutions": [16]}})
    with pytest.raises(ValueError, match=r"^--set sampler.steps=5 and --set steps=6 disagree; give sampler.steps "
                                         r"once$"):
        resolve_sampler(recipe, sets=["sampler.steps=5", "steps=6"])
    assert resolve_sampler(recipe, sets=["sampler.steps=5", "steps=5"]).steps == 5


def test_eval_refuses_steps_where_only_baselines_run(tmp_path: Path) -> None:
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.evaluate import evaluate

    shards = tmp_path / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), workers=0, synthetic_size=32,
                                                             synthetic_f_numbers=(2.0,)), progress=False)
    with pytest.raises(EvalError, match=r"^--steps 3: no 'steps' setting .*\(baselines only\)"):
        evaluate(shards, [], ["wiener"], EvalConfig(steps=3, report_dir=tmp_path / "report", progress=False))
    assert not (tmp_path / "report").exists()
