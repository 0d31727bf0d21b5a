"""The `defocuskit` command line: thin wrappers, one function call per command."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Single-image defocus deblurring research toolkit.")


def main() -> None:
    """Console-script entry point."""
    app()
