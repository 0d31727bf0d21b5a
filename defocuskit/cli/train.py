"""`defocuskit train`: the one training loop from a recipe, and `--dry-run`'s check of everything it names."""

from __future__ import annotations

from typing import Any, Optional

import typer

from defocuskit.cli.once import fail
from defocuskit.cli.options import exit_before_torch

TRAIN_EXAMPLE = ("Example: defocuskit train nafnet-tiny data.train=shards/ train.max_steps=200  (on several GPUs: "
                 "accelerate launch -m defocuskit train nafnet data.train=shards/)")


def dry_run_report(resolved: Any) -> None:
    """`--dry-run`: check the recipe, its output_dir (`train.runfolder.check_run_folder`) and the weights
    `train.init_from` names against its network, then print the resolved recipe and the parameter counts; a
    TrainingError or RecipeError names what is wrong."""
    import os

    from defocuskit.config.recipe import recipe_to_yaml
    from defocuskit.methods import get_method
    from defocuskit.train.checks import TrainingError, build_network, check_recipe, format_counts, parameter_counts
    from defocuskit.train.init import init_provenance, load_initial_weights
    from defocuskit.train.runfolder import check_run_folder

    method = get_method(resolved.method)
    check_recipe(resolved, method)
    try:  # the run folder as the run checks it before any work (read only): a file there, the user's files
        check_run_folder(resolved.output_dir, validates=bool(resolved.train.eval_every or resolved.train.keep_best))
    except TrainingError as exc:
        fail(str(exc), 1)
    model = build_network(method, resolved, False)
    try:
        if resolved.train.init_from:  # what the run would check before any work, checked now
            model_file, _ = init_provenance(resolved.train.init_from)
            load_initial_weights(model, model_file, method.name, resolved.train.init_from, resolved)
    except TrainingError as exc:
        fail(str(exc), 1)  # once under `accelerate launch`: every process checks the same weights
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch`: checked by every process, printed by one
        return
    typer.echo(recipe_to_yaml(resolved), nl=False)
    counts = format_counts(parameter_counts(model)).splitlines()
    typer.echo(f"# {method.name}: parameters\n" + "\n".join(f"#{line}" for line in counts))


def train_cmd(
    recipe: str = typer.Argument(..., help="A recipe YAML file, or a packaged recipe by name (`defocuskit recipes` "
                                 "lists them): nafnet-tiny, nafnet-tiny.yaml or recipes/nafnet-tiny.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted key=value overrides, e.g. train.max_steps=100 "
                                                    "data.train=shards/"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter counts, then exit."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over, deleting the checkpoints, metrics "
                                   "and exported models that earlier runs wrote in the run folder (nothing else)."),
) -> None:
    """Train a method from a recipe (one process, or under `accelerate launch -m defocuskit train ...`)."""
    import os
    import sys

    from defocuskit.config.recipe import find_recipe
    from defocuskit.config.typed import RecipeError

    try:
        find_recipe(recipe)  # a missing recipe is named before torch is imported (seconds)
    except RecipeError as exc:
        exit_before_torch(True, str(exc))
    from defocuskit.methods.recipes import load_recipe_source

    source = None  # where the recipe's values came from, once it is read: named in the errors of later checks
    try:
        resolved, source = load_recipe_source(recipe, overrides or [])
        if dry_run:
            dry_run_report(resolved)
            return
        from defocuskit.data.reader import ShardError, shard_error_line
        from defocuskit.eval.validation import make_validator
        from defocuskit.methods import get_method
        from defocuskit.train.checks import TrainingError, check_recipe
        from defocuskit.train.data import dead_loader_worker
        from defocuskit.train.loop import train

        check_recipe(resolved, get_method(resolved.method))  # before the validator reads data.val
        try:
            path = train(resolved, resume=not no_resume, validate=make_validator(resolved))
        except KeyboardInterrupt:
            if os.environ.get("RANK", "0") == "0":
                again = "the same command without --no-resume" if no_resume else "the same command again"
                print(f"interrupted: the checkpoints in {resolved.output_dir} are kept; run {again} to resume from "
                      "the last one", file=sys.stderr)
            raise typer.Exit(130) from None
        except TrainingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        except ShardError as exc:  # also when a DataLoader worker met it (its message then wraps a traceback)
            print(f"error: {shard_error_line(exc)}", file=sys.stderr)
            raise typer.Exit(1) from None
        except RuntimeError as exc:  # PyTorch's error where a DataLoader worker died: a traceback of its internals
            if (died := dead_loader_worker(exc)) is None:
                raise
            again = "the same command without --no-resume" if no_resume else "the same command again"
            print(f"error: {died}; the checkpoints in {resolved.output_dir} are kept: run {again} to resume from the "
                  "last one", file=sys.stderr)
            raise typer.Exit(1) from None
        except FileNotFoundError:
            raise
        except OSError as exc:  # the run folder cannot be written: permissions, a file in the way
            from defocuskit.io.atomic import DISK_FULL

            if exc.errno in DISK_FULL:  # main() names the path and its disk
                raise
            print(f"error: {exc.filename}: {exc.strerror}" if exc.filename else f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
    except (RecipeError, ValueError, FileNotFoundError) as exc:  # before any work: the same on every process
        if isinstance(exc, RecipeError) and source is not None:
            exc = source.locate(exc)
        fail(str(exc), 2)
    if os.environ.get("RANK", "0") == "0":  # once under `accelerate launch`
        typer.echo(f"model: {path}")
