"""tools/loso_real.py hands the user's --render-arg / --render-set / --real-arg / --test-arg to defocuskit ingest over
its own options, and its --set / --map-set to defocuskit train over its own recipe overrides: since the CLI refuses a
single-value option, and a recipe key, given twice with two values, the user's must replace the tool's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from loso_real import layered, layered_overrides  # noqa: E402

from defocuskit.cli.app import app  # noqa: E402
from defocuskit.cli.options import command_of, repeated_option  # noqa: E402
from defocuskit.config.typed import RecipeError  # noqa: E402
from defocuskit.methods.recipes import load_recipe  # noqa: E402


def test_the_users_ingest_arguments_replace_the_tools_own():
    own = ["--max-side", "384", "--render-f-numbers", "1.8,2.8,4,5.6,8", "--workers", "1"]
    extra = ["--no-render-noise", "--render-f-numbers", "1.8,2.8,4,5.6,8,11", "--render-veil=0.125", "--workers=2"]
    args = layered(own, extra)
    assert args == ["--max-side", "384", *extra]
    import typer.main

    command, rest = command_of(typer.main.get_command(app), ["ingest", "--render", "photos", "--out", "o", *args])
    assert repeated_option(command, rest) is None  # the command line the tool runs is one the CLI takes
    command, rest = command_of(typer.main.get_command(app), ["ingest", "--render", "p", "--out", "o", *own, *extra])
    assert repeated_option(command, rest).startswith("--render-f-numbers given twice")  # as it was before


def test_the_users_recipe_overrides_replace_the_tools_own(tmp_path):
    own = [f"data.train=[{tmp_path / 'a'}]", f"output_dir={tmp_path / 'run'}", "train.max_minutes=25.0"]
    user = ["train.max_minutes=5", "seed=2"]  # loso_real --set train.max_minutes=5 --set seed=2
    recipe = load_recipe("nafnet-tiny", layered_overrides(own, user))  # the overrides the tool's train is given
    assert recipe.train.max_minutes == 5 and recipe.seed == 2 and recipe.output_dir == str(tmp_path / "run")
    assert layered_overrides(own, ["max_minutes=5"]) == own[:2] + ["max_minutes=5"]  # a short key too
    with pytest.raises(RecipeError, match="override train.max_minutes given twice"):
        load_recipe("nafnet-tiny", [*own, *user])  # both, as the tool passed them before


def test_the_ebb_folds_shots_get_no_registration_option(tmp_path, monkeypatch):
    """Fold `ebb` ingests its shots with --register none, which ingest refuses beside --refine-warp / --local-gain
    (given but not used): the tool leaves them out there, in either spelling, and keeps the user's others."""
    from loso_real import without_registration
    from typer.testing import CliRunner

    from defocuskit.data import ingest

    user = ["--refine-warp=0.047", "--bit-depth", "16", "--local-gain", "0.06", "--max-side=256"]
    kept, dropped = without_registration(user)
    assert kept == ["--bit-depth", "16", "--max-side=256"]
    assert dropped == ["--refine-warp=0.047", "--local-gain", "0.06"]
    assert without_registration(["--max-side", "64"]) == (["--max-side", "64"], [])
    assert without_registration(["--bracket-fit=subject", "--min-align-score", "0.5"]) == (
        [], ["--bracket-fit=subject", "--min-align-score", "0.5"])
    for sub in ("input", "target"):
        (tmp_path / "ebb" / "test" / sub).mkdir(parents=True)

    def stop(*args, **kwargs):  # the checks before any work passed
        raise ingest.IngestError("stop here")

    monkeypatch.setattr(ingest, "list_all", stop)
    base = ["ingest", "--ebb", str(tmp_path / "ebb"), "--register", "none", "--out", str(tmp_path / "o")]
    own = ["--max-side", "512", "--workers", "1"]
    for args, said in ((kept, "stop here"), (user, "given but not used: --refine-warp, --local-gain")):
        result = CliRunner().invoke(app, [*base, *layered(own, args)], terminal_width=400)
        assert result.exit_code == 1 and said in result.output, result.output
