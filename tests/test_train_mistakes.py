"""A careless user's `train` (and shard readers): a run folder that is no run folder (a shard folder, the packaged
recipes), a file that is no shard, a zero width, `--dry-run` of a bad output_dir, a folder without the split: each one
line naming the path or key, before any work, nothing of the user's lost."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestOptions

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "nafnet-tiny.yaml")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mistakes") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(2.0,)), progress=False)
    return out


def train(*args: str):
    steps = [] if any(a.startswith("train.max_steps=") for a in args) else ["train.max_steps=2"]
    return CliRunner().invoke(app, ["train", TINY, *steps, *args])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_shard_folder_or_the_packaged_recipes_as_output_dir_is_refused(shards, tmp_path, monkeypatch):
    before = files(shards)
    result = train(f"data.train={shards}", f"output_dir={shards}")  # it trained into the shards, exit 0
    assert result.exit_code == 1 and one_line(result).startswith(f"error: output_dir {shards}: a shard folder")
    assert files(shards) == before
    run = tmp_path / "run"  # a run's folder that shards were written into since (pseudo-coc --out run/): resumed
    assert train(f"data.train={shards}", f"output_dir={run}").exit_code == 0
    for name in ("manifest.json", "train-000000.tar"):
        shutil.copy(shards / name, run)
    assert train(f"data.train={shards}", f"output_dir={run}", "train.max_steps=3").exit_code == 0
    import defocuskit.config.recipe as recipe

    packaged = tmp_path / "recipes"  # the package's own folder, stood in for by a copy
    shutil.copytree(recipe.PACKAGED_RECIPES, packaged)
    monkeypatch.setattr(recipe, "PACKAGED_RECIPES", packaged)
    listed = recipe.packaged_recipe_names()
    for out in (packaged, packaged / "run"):  # its recipe.yaml was listed by `defocuskit recipes` as 'recipe'
        result = train(f"data.train={shards}", f"output_dir={out}")
        assert result.exit_code == 1 and "inside defocuskit's packaged recipes" in one_line(result), result.output
    assert recipe.packaged_recipe_names() == listed and not (packaged / "run").exists()


def test_a_file_that_is_no_tar_named_as_shards_is_not_called_a_damaged_shard(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 100)
    result = train(f"data.train={notes}", f"output_dir={tmp_path / 'run'}")
    line = one_line(result)  # it said "damaged shard: ...; run the command that wrote the folder again"
    assert result.exit_code == 1 and line == f"error: {notes}: not a shard: not a tar file (it begins with no tar " \
        "header); shards are the tar files `defocuskit ingest` writes", line
    assert notes.read_text() == "my notes\n" * 100 and not (tmp_path / "run").exists()


def test_a_zero_width_is_one_line_naming_the_key(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train("model.width=0", f"output_dir={tmp_path / 'run'}", "--dry-run")
    assert not [w for w in caught if "zero-element" in str(w.message)]  # a second and third line on stderr
    line = one_line(result)  # torch's "Initializing zero-element tensors" warning came first, and "groups must be ..."
    assert result.exit_code == 2 and line.startswith("error: model.width: 0 is no positive size; the model section "
                                                     "does not build a nafnet network"), line


def test_dry_run_checks_the_output_dir(shards, tmp_path):
    (tmp_path / "f").write_text("mine")
    result = train(f"output_dir={tmp_path / 'f'}", "--dry-run")  # exit 0, the recipe printed
    assert result.exit_code == 1 and one_line(result) == f"error: output_dir {tmp_path / 'f'}: exists and is not a " \
        "folder; give a folder"
    result = train(f"output_dir={shards}", "--dry-run")
    assert result.exit_code == 1 and "a shard folder" in one_line(result)
    assert (tmp_path / "f").read_text() == "mine"


def test_a_folder_without_the_split_names_the_splits_it_has(shards, tmp_path):
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    shutil.copy(shards / "test-000000.tar", only_test)
    result = train(f"data.train={only_test}", f"output_dir={tmp_path / 'run'}")
    assert result.exit_code == 2 and one_line(result) == f"error: data.train: no shards match {only_test} (split " \
        "'train'; its splits: test)"


@pytest.mark.parametrize("override, said", [
    ("train.init_from=", "train.init_from: empty; give the model file to start from, or null for none"),  # exit 0
    ("data.val=", "data.val: empty; give a shard folder or pattern, or null for none"),  # "no shards match  (split"
    ("data.train=", "data.train: empty; give a shard folder or pattern"),  # the working folder's train split
    ("data.train=[SHARDS, '']", "data.train[1]: empty; give a shard folder or pattern"),
])
def test_an_empty_path_is_refused_naming_its_key(shards, tmp_path, override, said):
    """`train.init_from=$MODEL` with MODEL unset trained from scratch, exit 0; an empty data.train or data.val was read
    as the working folder."""
    override = override.replace("SHARDS", str(shards))
    for dry in ([], ["--dry-run"]):
        result = train(f"data.train={shards}" if "data.train" not in override else override,
                       f"output_dir={tmp_path / 'run'}", *([override] if "data.train" not in override else []), *dry)
        assert result.exit_code == 2 and one_line(result).startswith(f"error: {said}"), result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "said"), [
    ("model.enc_blocks=[1,-1,1]", "model.enc_blocks: [1, -1, 1] holds a negative number"),  # built 0 blocks there
    ("model.middle_blocks=-2", "model.middle_blocks: -2 is negative"),
    ("model.width=-8", "model.width: -8 is negative"),  # a torch traceback, then 'no positive size'
])
@pytest.mark.parametrize("dry", [["--dry-run"], []])
def test_a_negative_model_number_is_one_line_naming_the_key_before_any_work(override, said, dry, tmp_path):
    result = train(override, f"output_dir={tmp_path / 'run'}", *dry)
    line = one_line(result)
    assert result.exit_code == 2 and line == f"error: {said}; no model key takes a negative number (counts and " \
        f"sizes are 0 or more) (override '{override}')", line
    assert not (tmp_path / "run").exists()


def test_no_method_default_or_packaged_recipe_holds_a_negative_model_number():
    """The check above refuses every negative model number: no method's defaults nor packaged recipe may hold one."""
    from defocuskit.config.recipe import packaged_recipe_names
    from defocuskit.methods import get_method, method_names
    from defocuskit.methods.recipes import load_recipe_source
    from defocuskit.train.checks import negative_numbers

    for name in method_names():
        assert negative_numbers(get_method(name).ModelConfig()) == {}, name
    for name in packaged_recipe_names():
        assert negative_numbers(load_recipe_source(name, [])[0].model) == {}, name


@pytest.mark.parametrize(("content", "what"), [
    (b"my notes\n" * 20, "a text file (it begins 'my notes my notes my notes my notes my n')"),  # 'header too large'
    (b"", "an empty file"),  # was 'header too small'
    (bytes(range(200, 256)) * 4, "binary data (it begins c8 c9 ca cb cc cd ce cf)"),
])
def test_init_from_a_file_that_is_no_safetensors_says_what_it_is_and_what_is_expected(content, what, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    result = train(f"train.init_from={notes}", f"output_dir={tmp_path / 'run'}", "--dry-run")
    line = one_line(result)
    assert result.exit_code == 1 and line == f"error: train.init_from: {notes}: not a safetensors file: {what}; " \
        "expected a .safetensors model file (`defocuskit train` exports model.safetensors)", line
    assert notes.read_bytes() == content and not (tmp_path / "run").exists()
