"""`defocuskit recipes`: list the recipes packaged with defocuskit, copy one to edit (torchtune's `tune ls` / `tune cp`)."""

from __future__ import annotations

import typer

recipes_app = typer.Typer(help="The recipes packaged with defocuskit: list them (no subcommand, or ls); copy one "
                               "to edit (cp).", epilog="Example: defocuskit recipes cp nafnet-tiny my-recipes/")


@recipes_app.callback(invoke_without_command=True)
def recipes_cmd(ctx: typer.Context) -> None:
    """List the packaged recipes: `defocuskit train NAME` trains one, `defocuskit recipes cp NAME DIR` copies one."""
    if ctx.invoked_subcommand is None:
        recipes_ls_cmd()


@recipes_app.command("ls", epilog="Example: defocuskit recipes ls  (then: defocuskit train NAME)")
def recipes_ls_cmd() -> None:
    """List the packaged recipes: name, method and the first line of the recipe's header."""
    from rich.console import Console
    from rich.table import Table

    from defocuskit.config.recipe import PACKAGED_RECIPES, describe_recipe, packaged_recipe, packaged_recipe_names

    table = Table(title=f"recipes in {PACKAGED_RECIPES}", title_justify="left")
    for column in ("name", "method", "description"):
        table.add_column(column, overflow="fold", no_wrap=column != "description")
    for name in packaged_recipe_names():
        info = describe_recipe(packaged_recipe(name))
        table.add_row(info["name"], info["method"], info["description"])
    console = Console()
    console.print(table)
    console.print("train one: defocuskit train NAME [key=value ...]; edit a copy: defocuskit recipes cp NAME DIR",
                  soft_wrap=True, markup=False)


@recipes_app.command("cp", epilog="Example: defocuskit recipes cp hidd-tiny my-hidd.yaml  (then: defocuskit "
                     "train my-hidd.yaml)")
def recipes_cp_cmd(
    name: str = typer.Argument(..., help="A packaged recipe (`defocuskit recipes` lists them)."),
    dest: str = typer.Argument(..., help="A folder (the copy keeps the name NAME.yaml; a name ending in / is one), or "
                               "the copy's file name."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Copy a packaged recipe to edit it, then train it with `defocuskit train FILE`."""
    import sys

    from defocuskit.config.recipe import copy_recipe
    from defocuskit.config.typed import RecipeError

    try:
        target = copy_recipe(name, dest, force=force)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    typer.echo(str(target))
