"""Recipes: overrides (dotted and short), type errors and unknown keys named, round trip of the resolved recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from defocuskit.config.recipe import Recipe, recipe_to_dict, recipe_to_yaml
from defocuskit.config.typed import RecipeError, apply_overrides
from defocuskit.methods.recipes import expand_short_keys, load_recipe, resolve_recipe

TINY = Path(__file__).resolve().parents[1] / "recipes" / "hidd-tiny.yaml"


def test_dotted_and_short_overrides():
    r = load_recipe(TINY, ["train.max_steps=7", "data.train=shards/x-{000..003}.tar", "lr=1e-3", "optim.betas=[0.5, 0.9]",
                           "optim.grad_clip=null", "max_minutes=2", "model.nf=16"])
    assert isinstance(r, Recipe) and r.train.max_steps == 7 and r.data.train == "shards/x-{000..003}.tar"
    assert r.optim.lr == 1e-3 and isinstance(r.optim.lr, float) and r.optim.betas == (0.5, 0.9)
    assert r.optim.grad_clip is None and r.train.max_minutes == 2.0 and r.model.nf == 16


def test_short_key_routing():
    raw = {"method": "hidd"}
    assert expand_short_keys(raw, ["max_steps=3", "seed=1", "nf=4", "bogus=1"]) == [
        "train.max_steps=3", "seed=1", "model.nf=4", "bogus=1"]
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x", "d.e=2"]) == {"a": {"b": 1, "c": "x"}, "d": {"e": 2}}
    with pytest.raises(RecipeError, match=r"ambiguous.*data\.channels.*model\.channels"):
        expand_short_keys(raw, ["channels=3"])
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides({}, ["novalue"])
    for whole in ("model=null", "model={}", "model=5", "model={width: 8}"):  # never a whole section reset silently
        with pytest.raises(RecipeError, match=r"'model' is a section; set its keys \(model\.KEY=VALUE\)"):
            apply_overrides({"model": {"width": 8}}, [whole])
    assert apply_overrides({}, ["sampler={}"]) == {"sampler": {}}  # a section the recipe does not have: given


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.max_steps=many", "train.max_steps"),
        ("data.augment=3", "data.augment"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("model.nf=2.5", "model.nf"),
        ("output_dir=[1]", "output_dir"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(TINY, [override])


@pytest.mark.parametrize("override, key", [("train.max_stepz=1", "train.max_stepz"), ("model.width=8", "model.width"),
                                           ("nonsense=1", "nonsense"), ("data.train.x=1", "data.train")])
def test_unknown_key_names_the_key(override, key):
    with pytest.raises(RecipeError, match=key.replace(".", r"\.")):
        load_recipe(TINY, [override])


def test_missing_file_and_unknown_method(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        load_recipe(TINY, ["method=nope"])


def test_round_trip_through_dict_and_yaml(tmp_path):
    r = load_recipe(TINY, ["optim.betas=[0.8, 0.99]", "seed=5"])
    d = recipe_to_dict(r)
    assert d["optim"]["betas"] == [0.8, 0.99] and d["model"]["ch_mult"] == list(r.model.ch_mult)
    assert resolve_recipe(d) == r
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe_to_yaml(r))
    assert yaml.safe_load(path.read_text()) == d
    assert load_recipe(path) == r


def test_the_inference_section_holds_a_models_own_focus_gate():
    """nafnet-cpu gates its model by default (inference.focus_gate, px); a bad value names the key; a recipe
    without the section (every model file written before it) has no gate."""
    assert load_recipe("recipes/nafnet-cpu.yaml").inference.focus_gate == 3.0
    assert load_recipe("recipes/nafnet-cpu.yaml", ["focus_gate=null"]).inference.focus_gate is None
    assert resolve_recipe({"method": "nafnet"}).inference.focus_gate is None
    assert load_recipe("recipes/hidd-cpu.yaml").inference.focus_gate == 3.0
    assert load_recipe("recipes/jdrl-cpu.yaml").inference.focus_gate == 3.0  # its reblur loss trains the module only
    assert load_recipe("recipes/jdrl.yaml").inference.focus_gate is None
    for bad in ("-1", "0", ".nan"):
        with pytest.raises(RecipeError, match="inference.focus_gate: expected a positive number of pixels"):
            load_recipe("recipes/nafnet-cpu.yaml", [f"inference.focus_gate={bad}"])


@pytest.mark.parametrize("value", ["*.tar", "[a", "!x", "@x", "!!python/object/apply:os.system [true]"])
def test_an_override_value_that_is_not_yaml_is_one_line_naming_it(value):
    """`data.train=*.tar` (an alias to YAML) stopped in a ScannerError traceback."""
    with pytest.raises(RecipeError) as info:
        load_recipe(TINY, [f"data.train={value}"])
    said = str(info.value)
    assert said.startswith(f"override 'data.train={value}': the value is not YAML (") and "\n" not in said


def test_yaml_nested_too_deeply_is_one_line_naming_the_file(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("method: hidd\nseed: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match=f"^{deep}: not valid YAML: nested too deeply$"):
        load_recipe(deep)
    with pytest.raises(RecipeError, match=r"^override 'seed=\[\[\[.*nested too deeply"):
        load_recipe(TINY, ["seed=" + "[" * 5000])


def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path):
    """YAML keeps the last of two equal keys silently: a second `train:` section dropped the first's keys."""
    text = TINY.read_text()
    twice = tmp_path / "twice.yaml"
    twice.write_text(text + "train:\n  max_steps: 3\n")
    line = len(text.splitlines()) + 1
    with pytest.raises(RecipeError, match=f"^{twice}: not valid YAML: line {line}, column 1: key 'train' given twice"):
        load_recipe(twice)
    twice.write_text(text.replace("train:\n", "train:\n  seed: 1\n  seed: 2\n", 1))
    with pytest.raises(RecipeError, match="key 'seed' given twice in one mapping"):
        load_recipe(twice)
    merged = tmp_path / "merged.yaml"  # a key a merge brings may be set again: the mapping's own wins, as YAML says
    merged.write_text("method: hidd\ntrain: &t {max_steps: 5, log_every: 2}\ninference: {}\n"
                      "optim: {}\nsampler: {}\ndata: {}\n")
    assert load_recipe(merged).train.max_steps == 5
    merged.write_text("method: hidd\ntrain:\n  <<: {max_steps: 5, log_every: 2}\n  max_steps: 9\n")
    r = load_recipe(merged)
    assert (r.train.max_steps, r.train.log_every) == (9, 2)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    """A "billion laughs" (aliases of aliases, 9^9 strings) took a minute and every byte of memory (MemoryError)."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                  for i in range(1, 7)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"method: hidd\nseed: [{', '.join(levels)}]\n")
    with pytest.raises(RecipeError, match=f"^{bomb}: not valid YAML: its aliases expand to more than 100,000 values"):
        load_recipe(bomb)
    shared = tmp_path / "shared.yaml"  # a few aliases are YAML as usual
    shared.write_text("method: hidd\noptim: {betas: &b [0.5, 0.9]}\nsampler: {}\ndata: {}\ntrain: {}\n")
    assert load_recipe(shared).optim.betas == (0.5, 0.9)


@pytest.mark.parametrize("method", ["[hidd]", "{a: 1}"])
def test_a_method_that_is_no_name_is_one_line(method):
    """`method: [hidd]` stopped in TypeError: unhashable type: 'list'."""
    with pytest.raises(ValueError, match=r"^unknown method .* \(known: "):
        load_recipe(TINY, [f"method={method}"])


def test_a_recipe_that_is_not_utf8_is_one_line_naming_the_file(tmp_path):
    """A Latin-1 recipe said only "'utf-8' codec can't decode byte 0xe9 in position 33: ...", naming no file."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("method: hidd\noutput_dir: runs/café\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=f"^{latin}: not UTF-8 text \\(byte 0xe9 at offset 33\\); save it as UTF-8$"):
        load_recipe(latin)


def test_plain_scalars_read_as_yaml_1_2_not_1_1(tmp_path):
    """PyYAML reads YAML 1.1: `output_dir: off` (or the override output_dir=no) became false and then the string
    'no', `max_steps: 020` octal 16, `1:20` base-60 80, and a quoted '1_0' the number 10, all silently."""
    r = load_recipe(TINY, ["output_dir=off", "train.max_steps=020", "train.log_every=0x4", "optim.lr=1e-3"])
    assert (r.output_dir, r.train.max_steps, r.train.log_every, r.optim.lr) == ("off", 20, 4, 1e-3)
    assert load_recipe(TINY, ["output_dir=no"]).output_dir == "no"
    with pytest.raises(RecipeError, match=r"train.max_steps: expected an integer, got '1:20'"):
        load_recipe(TINY, ["train.max_steps=1:20"])
    with pytest.raises(RecipeError, match=r"data.augment: expected true or false, or one of 'hflip', got 'yes'"):
        load_recipe(TINY, ["data.augment=yes"])  # a boolean is true or false: 'yes' was read as true, 'no' as false
    with pytest.raises(RecipeError, match=r"optim.lr: expected a number, got '1_0'"):
        load_recipe(TINY, ["optim.lr='1_0'"])
    assert load_recipe(TINY, ["data.augment=false", "train.mixed_precision=no"]).train.mixed_precision == "no"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.read_text().replace("output_dir: runs/hidd-tiny", "output_dir: off", 1))
    assert load_recipe(recipe).output_dir == "off"


def test_an_override_with_a_comment_in_it_is_refused_not_cut(tmp_path):
    """`output_dir=a # b` was the folder 'a' (YAML reads ' #' on as a comment), silently."""
    with pytest.raises(RecipeError, match=r"override 'output_dir=a # b': YAML reads ' #' and what follows as a comment"):
        load_recipe(TINY, ["output_dir=a # b"])
    assert load_recipe(TINY, ["output_dir='a # b'"]).output_dir == "a # b"
    assert load_recipe(TINY, ["output_dir=a#b"]).output_dir == "a#b"


def test_a_recipe_error_names_the_file_or_the_override_that_set_the_value(tmp_path):
    """A value the recipe cannot use was named by its key alone (`optim.lr must be ...`), not by the file it was
    read from nor the override that set it."""
    for name, train, said in (("type", {"max_steps": "many"}, "train.max_steps: expected an integer, got 'many'"),
                              ("unknown", {"max_stepz": 3}, "unknown recipe key 'train.max_stepz' (known here: "),
                              ("string", {"mixed_precision": 2}, "train.mixed_precision: expected a string, got 2")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"method": "hidd", "train": train}))
        with pytest.raises(RecipeError) as info:
            load_recipe(path)
        assert str(info.value).startswith(f"{path}: {said}")
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({"method": "nafnet", "inference": {"focus_gate": -1}}))
    with pytest.raises(RecipeError, match=f"^{path}: inference.focus_gate: expected a positive number"):
        load_recipe(path)  # a config's own range check
    with pytest.raises(RecipeError, match=r"^train\.max_steps: expected an integer, got 'x' \(override "
                                          r"'max_steps=x'\)$"):
        load_recipe(TINY, ["seed=1", "max_steps=x"])  # a short key named as given
    with pytest.raises(RecipeError, match=r"^unknown recipe key 'optim\.lrr' \(known here: .*\) \(override "
                                          r"'optim\.lrr=1'\); did you mean 'optim\.lr'\?$"):
        load_recipe("hidd-tiny", ["optim.lrr=1"])
    with pytest.raises(RecipeError, match=r"^packaged recipe nafnet-tiny: unknown recipe key 'model\.\w+' \(known"):
        load_recipe("nafnet-tiny", ["method=hidd"])  # the packaged recipe's own key, by its name
    with pytest.raises(RecipeError, match=r"^override 'data\.train=\*\.tar': the value is not YAML"):
        load_recipe(TINY, ["data.train=*.tar"])  # an override's own error names it once


def test_the_checks_before_training_name_the_file_or_the_override(tmp_path):
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    nan = tmp_path / "nan.yaml"
    nan.write_text((TINY.parent / "nafnet-tiny.yaml").read_text().replace("lr: 1.0e-3", "lr: .nan"))
    out = f"output_dir={tmp_path / 'run'}"
    positive = "optim.lr and optim.grad_clip must be positive"
    for args, said in (
        ([str(nan)], f"{nan}: {positive} (got nan, 1.0)\n"),
        (["nafnet-tiny", "optim.betas=[0.9,2]"], "optim.betas: two numbers in [0, 1), got 2.0 (override "
                                                 "'optim.betas=[0.9,2]')\n"),
        (["nafnet-tiny", "lr=.nan", "optim.grad_clip=-1"], f"{positive} (got nan, -1.0) (overrides 'lr=.nan', "
                                                           "'optim.grad_clip=-1')\n"),
        ([str(nan), "optim.grad_clip=2"], f"{nan}: {positive} (got nan, 2.0) (override 'optim.grad_clip=2')\n"),
        (["nafnet-tiny", "optim.lr=.nan"], f"packaged recipe nafnet-tiny: {positive} (got nan, 1.0) (override "
                                           "'optim.lr=.nan')\n"),
    ):
        for dry in (["--dry-run"], []):  # checked by --dry-run and by the run before any work
            result = CliRunner().invoke(app, ["train", *args, out, *dry])
            assert result.exit_code == 2 and result.output == f"error: {said}", result.output
    result = CliRunner().invoke(app, ["train", "nafnet-tiny", "model.width=-3", out, "--dry-run"])
    assert result.exit_code == 2 and result.output == "error: model.width: -3 is negative; no model key takes a " \
        "negative number (counts and sizes are 0 or more) (override 'model.width=-3')\n", result.output
    assert not (tmp_path / "run").exists()


def test_an_override_key_given_twice_with_two_values_is_refused_naming_both(tmp_path):
    """`train max_steps=10 train.max_steps=20` trained 20 steps without a word about the 10; the same value twice
    passes."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    with pytest.raises(RecipeError, match=r"^override train\.max_steps given twice \('max_steps=10' and "
                                          r"'train\.max_steps=20'\); it takes one value: give it once$"):
        load_recipe(TINY, ["max_steps=10", "seed=1", "train.max_steps=20"])
    with pytest.raises(RecipeError, match=r"given twice \('data\.augment=1' and 'data\.augment=true'\)"):
        load_recipe(TINY, ["data.augment=1", "data.augment=true"])  # YAML's 1 is no bool
    assert load_recipe(TINY, ["train.max_steps=7", "max_steps=7", "train.max_steps= 7"]).train.max_steps == 7
    out = f"output_dir={tmp_path / 'run'}"
    result = CliRunner().invoke(app, ["train", "nafnet-tiny", "train.max_steps=10", "train.max_steps=20", out,
                                      "--dry-run"])
    assert result.exit_code == 2 and result.output == ("error: override train.max_steps given twice ('train.max_steps="
                                                       "10' and 'train.max_steps=20'); it takes one value: give it "
                                                       "once\n"), result.output
    assert not (tmp_path / "run").exists()


def test_a_callers_own_overrides_give_way_to_the_users():
    from defocuskit.config.typed import layered_overrides

    own = ["data.train=a", "train.max_steps=5", "seed=3", "train.max_minutes=2"]
    assert layered_overrides(own, ["max_steps=9", "seed=4"]) == ["data.train=a", "train.max_minutes=2",
                                                                   "max_steps=9", "seed=4"]
    assert layered_overrides(own, []) == own
    assert load_recipe(TINY, layered_overrides(own, ["train.max_minutes=7"])).train.max_minutes == 7


def test_an_import_override_of_a_key_the_release_sets_replaces_it(tmp_path):
    """The release's own overrides (restormer: data.train=DPDD) give way to the caller's of the same key: a key given
    twice with two values is refused, so both would stop the import."""
    from test_release import release_file

    from defocuskit.inference.release import convert_checkpoint
    from defocuskit.methods import get_method

    checkpoint = release_file(tmp_path, "restormer")
    _, recipe, _ = convert_checkpoint(get_method("restormer"), checkpoint, ["data.train=my-shards", "seed=3"])
    assert recipe.data.train == "my-shards" and recipe.seed == 3


def test_augment_hflip_mirrors_left_right_only_as_the_releases_do():
    # RDDM's and CycleGAN's releases flip horizontally only; data.augment had no way to reproduce it
    import numpy as np

    from defocuskit.train.augment import crop_and_augment

    assert load_recipe(TINY, ["data.augment=hflip"]).data.augment == "hflip"
    img = np.arange(6 * 6 * 3, dtype=np.uint16).reshape(6, 6, 3)
    drawn = set()
    for seed in range(32):
        out = crop_and_augment({"blur": img, "sharp": img + 1}, 6, "hflip", np.random.default_rng(seed))
        mirrored = bool(np.array_equal(out["blur"], img[:, ::-1]))
        assert mirrored or np.array_equal(out["blur"], img)  # never turned, never flipped upside down
        assert np.array_equal(out["sharp"], out["blur"] + 1)  # alike for every member
        drawn.add(mirrored)
    assert drawn == {True, False}
