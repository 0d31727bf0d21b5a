"""Help pages and misspellings: an example on every command's help, ingest's options in panels, and "did you
mean" for a misspelt recipe name, recipe key, choice, method or sampler."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app

runner = CliRunner()
COMMANDS = [[], ["ingest"], ["inspect"], ["train"], ["deblur"], ["eval"], ["demo"], ["pseudo-coc"], ["import-weights"], ["recipes"],
            ["recipes", "ls"], ["recipes", "cp"]]


def _text(result) -> str:
    """The output as one line of words (rich boxes and wrapping removed)."""
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "defocuskit")
def test_every_help_page_has_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: defocuskit " in _text(result)


def test_ingest_help_groups_its_options_in_panels():
    text = runner.invoke(app, ["ingest", "--help"]).output
    panels = ["Sources (one or more)", "Output", "Source options", "Patches", "Registration (misaligned pairs)",
              "Rendering (--render)", "Run"]
    assert [text.find(f"─ {p} ─") >= 0 for p in panels] == [True] * len(panels)
    assert sorted(panels, key=lambda p: text.find(f"─ {p} ─")) == panels  # sources first, run options last
    rendering = text[text.find("─ Rendering (--render) ─"):text.find("─ Run ─")]
    assert "--render-depth" in rendering and "--render-jpeg" in rendering and "--dpdd" not in rendering


@pytest.mark.parametrize(("args", "message", "near"), [
    (["train", "nafnet-tny", "--dry-run"], "recipe not found: nafnet-tny", "nafnet-tiny"),
    (["train", "nafnet-tiny", "train.max_step=3", "--dry-run"], "unknown recipe key 'train.max_step'",
     "train.max_steps"),
    (["train", "nafnet-tiny", "max_step=3", "--dry-run"], "unknown recipe key 'max_step'", "train.max_steps"),
    (["train", "nafnet-tiny", "trian.max_steps=3", "--dry-run"], "unknown recipe key 'trian'", "train"),
    (["train", "nafnet-tiny", "method=nafent", "--dry-run"], "unknown method 'nafent'", "nafnet"),
    (["train", "hidd-tiny", "sampler.name=fats", "--dry-run"], "unknown sampler 'fats'", "fast"),
    (["recipes", "cp", "hid-tiny", "x"], "no packaged recipe named 'hid-tiny'", "hidd-tiny"),
])
def test_misspelt_recipe_names_and_keys_say_did_you_mean(args, message, near, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    text = _text(result)
    assert result.exit_code == 2 and message in text and f"did you mean '{near}'?" in text, result.output


@pytest.mark.parametrize(("args", "near"), [
    (["eval", "--baseline", "weiner"], "wiener"),
    (["eval", "--coc", "orcale"], "oracle"),
    (["deblur", "a.png", "--checkpoint", "m", "--out", "o", "--coc", "fnumbr"], "fnumber"),
    (["ingest", "--out", "o", "--synthetic", "builtin", "--register", "homograpy"], "homography"),
])
def test_misspelt_choices_say_did_you_mean(args, near, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    text = _text(result)
    assert result.exit_code == 2 and f"did you mean '{near}'?" in text and not (tmp_path / "o").exists(), text


def test_choices_and_labels_in_messages_below_the_cli():
    from defocuskit.eval.config import EvalError
    from defocuskit.eval.runners import split_label
    from defocuskit.inference.coc_source import CocError, CocSource

    with pytest.raises(CocError, match=r"unknown CoC source 'edgee' .*; did you mean 'edge'\?$"):
        CocSource.create("edgee")
    with pytest.raises(EvalError, match=r"no checkpoint is labelled 'nafent' .*; did you mean 'nafnet'\?$"):
        split_label("nafent:fast", {"nafnet", "hidd"}, "--sampler")


@pytest.mark.parametrize(("args", "said"), [
    (["train"], "Missing argument 'recipe'"),
    (["eval", "--bogus"], "No such option: --bogus"),
    (["ingest", "--out", "o", "--render-f-numbers", "abc"], "--render-f-numbers abc: give comma-separated numbers"),
    (["deblur", "a.png", "--out", "o"], "Missing option '--checkpoint'"),
    (["eval", "--baseline", "wiener", "--workers", "0"], "--workers"),
])
def test_usage_errors_are_one_line_naming_the_command(args, said, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, prog_name="defocuskit")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and said in lines[0], lines[0]
    assert lines[0].endswith(f"(see 'defocuskit {args[0]} --help')"), lines[0]
