"""tools/loso_real.py hands the user's --render-arg / --render-set / --real-arg / --test-arg to defocuskit ingest over
its own options: since the CLI refuses a single-value option given twice, the user's must replace the tool's."""

from __future__ import annotations

import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from loso_real import layered  # noqa: E402

from defocuskit.cli.app import app  # noqa: E402
from defocuskit.cli.options import command_of, repeated_option  # noqa: E402


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
