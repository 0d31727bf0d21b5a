"""The command line's shared option types: choices as enums built from the constants the code checks
against (one list each), the help texts several commands share, and the entry point's disk-full handling."""

from __future__ import annotations

import errno
import os
import sys
from enum import Enum
from typing import Any, Callable, Iterable, Optional

import typer

from defocuskit.cli.demo import PRESETS
from defocuskit.config.typed import did_you_mean
from defocuskit.data.pairs import REGISTER_CHOICES
from defocuskit.data.sample import BIT_DEPTHS, BRACKET_FITS, CUHK_WHITE_IS, SPLIT_BY
from defocuskit.eval.baselines import BASELINES
from defocuskit.eval.metrics import SSIM_VARIANTS
from defocuskit.eval.protocols import PROTOCOLS
from defocuskit.eval.scoring import ALIGN_MODES
from defocuskit.imaging.depth import DEPTH_KINDS
from defocuskit.inference.coc_source import COC_SOURCES

WORKERS_HELP = ("worker processes, as PyTorch's num_workers: 0 = in the main process, N = N worker processes; "
                "default: one per core, at most 8")
DEVICE_HELP = "auto (CUDA if present, else MPS, else CPU) | cpu | cuda | cuda:N | mps"


def choices(name: str, values: Iterable[str]) -> type[Enum]:
    """A `str, Enum` typer choice of the values that the code defines (and checks) in one place."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


BitDepth = choices("BitDepth", BIT_DEPTHS)
SplitBy = choices("SplitBy", SPLIT_BY)
Register = choices("Register", REGISTER_CHOICES)
BracketFit = choices("BracketFit", BRACKET_FITS)
CuhkWhiteIs = choices("CuhkWhiteIs", CUHK_WHITE_IS)
Baseline = choices("Baseline", BASELINES)
AlignBy = choices("AlignBy", ALIGN_MODES)
Ssim = choices("Ssim", SSIM_VARIANTS)
EvalProtocolChoice = choices("EvalProtocolChoice", PROTOCOLS)
EvalCoc = choices("EvalCoc", COC_SOURCES)
DeblurCoc = choices("DeblurCoc", [c for c in COC_SOURCES if c != "oracle"])  # oracle reads shards: eval only
Preset = choices("Preset", PRESETS)
RenderDepth = choices("RenderDepth", DEPTH_KINDS)


def value(choice: Optional[Enum | str]) -> Optional[str]:
    """The plain string of a choice (None stays None)."""
    return None if choice is None else str(getattr(choice, "value", choice))


def pick(kind: type[Enum]) -> Callable[[Any], str]:
    """The `parser=` of a choice option: the value as a plain string; any other value is refused (exit 2)
    naming the choices and, for a misspelling, the nearest one ("did you mean")."""
    allowed = [str(e.value) for e in kind]

    def parse(text: Any) -> str:
        text = value(text) or ""
        if text not in allowed:
            raise typer.BadParameter(f"{text!r} is not one of {', '.join(map(repr, allowed))}"
                                     f"{did_you_mean(text, allowed)}")
        return text

    return parse


def print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from defocuskit import __version__

        try:
            torch = version("torch")  # read from the installed metadata: torch itself is not imported
        except PackageNotFoundError:
            torch = "not installed"
        typer.echo(f"defocuskit {__version__} (torch {torch})")
        raise typer.Exit()


def output_paths(argv: list[str]) -> list[str]:
    """The paths a command line writes to (--out, --report, --save-images, --sheet, output_dir=), then its
    other arguments: where a full disk is looked for first."""
    outputs, others = [], []
    for i, arg in enumerate(argv):
        if arg in ("--out", "--report", "--save-images", "--sheet") and i + 1 < len(argv):
            outputs.append(argv[i + 1])
        elif arg.startswith(("--out=", "--report=", "--save-images=", "--sheet=", "output_dir=")):
            outputs.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            others.append(arg)
    return outputs + others


_PATH_FAULTS = {  # an OSError that names a path the user gave, as one line (file_fault_line)
    FileExistsError: "exists and is a file where a folder is needed; give another path",
    NotADirectoryError: "a part of this path is a file, not a folder; give another path",
    IsADirectoryError: "is a folder where a file is needed; give a file name",
    PermissionError: "permission denied: it (or its folder) cannot be read or written by this user",
    FileNotFoundError: "no such file or folder, and none can be made there; give another path",
}
_ERRNO_FAULTS = {  # the same, for OSErrors that have no class of their own
    errno.ENAMETOOLONG: "a name in this path is longer than the file system allows (255 bytes); give a shorter one",
    errno.ELOOP: "a loop of symbolic links in this path; give another path",
    errno.EROFS: "on a read-only file system; give another path",
}


def file_fault_line(exc: BaseException) -> str | None:
    """One line for an error about a path the user gave (a file where a folder goes, a read-only folder, ...);
    None for anything else. Where defocuskit raised it with its own words (a temporary or staging path in the way),
    those words, which name the path."""
    for kind, text in _PATH_FAULTS.items():
        if isinstance(exc, kind) and getattr(exc, "filename", None):
            own = exc.strerror if exc.errno is not None and exc.strerror != os.strerror(exc.errno) else None
            return own if own and str(exc.filename) in own else f"{exc.filename}: {text}"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_FAULTS and getattr(exc, "filename", None):
        return f"{exc.filename}: {_ERRNO_FAULTS[exc.errno]}"
    return None


def repeated_option(command: Any, args: list[str]) -> str | None:
    """The line refusing a single-value option of the click `command` given twice in `args` (the arguments after
    the command's name), else None: the CLI library keeps the last value and drops the first without a word
    (`--pairs A --pairs B` ingested only B)."""
    takes: dict[str, tuple[str, int, bool]] = {}  # option string -> (its first name, values it takes, single)
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "option":
            values = 0 if param.is_flag or getattr(param, "count", False) else param.nargs
            for name in (*param.opts, *param.secondary_opts):
                takes[name] = (param.opts[0], values, not param.multiple and values > 0)
    seen: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] != "--":
        name, eq, given = args[i].partition("=")
        first, values, single = takes.get(name, ("", 0, False))
        value = given if eq else " ".join(args[i + 1:i + 1 + values])
        if single and first in seen and seen[first] != value:
            return f"{first} given twice ({seen[first]!r} and {value!r}); it takes one value: give it once"
        if single:
            seen[first] = value
        i += 1 + (0 if eq else values)
    return None


def empty_value(command: Any, args: list[str]) -> str | None:
    """The line refusing an empty value in `args` (the arguments after the click `command`'s name), else None: `--out
    ""` or an empty argument, what an unset shell variable gives (`--out "$OUT"`), stood for the working folder (deblur
    wrote there, ingest made it a shard folder, eval saved its report and images there), exit 0."""
    takes: dict[str, tuple[str, int]] = {}  # option string -> (its first name, values it takes)
    arguments: list[Any] = []
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "argument":
            arguments.append(param)
        elif getattr(param, "param_type_name", "") == "option":
            values = 0 if param.is_flag or getattr(param, "count", False) else param.nargs
            takes.update({name: (param.opts[0], values) for name in (*param.opts, *param.secondary_opts)})
    position, i, options = 0, 0, True
    while i < len(args):
        if options and args[i] == "--":
            options, i = False, i + 1
            continue
        if options and args[i].startswith("-") and args[i] != "-":
            name, eq, given = args[i].partition("=")
            first, values = takes.get(name, (name, 0))
            if "" in ([given] if eq else args[i + 1:i + 1 + values]):
                return f"{first} '': an empty value (an unset shell variable?); nothing was done: give one"
            i += 1 + (0 if eq else values)
            continue
        if args[i] == "":
            named = [p for k, p in enumerate(arguments) if k == position or (k < position and p.nargs == -1)]
            what = named[0].name.upper() if named else "argument"
            return f"{what} '': an empty argument (an unset shell variable?); nothing was done: give one"
        position, i = position + 1, i + 1
    return None


def command_of(group: Any, args: list[str]) -> tuple[Any, list[str]]:
    """The click command `args` (a command line without the program) invokes in `group`, and the arguments after its
    name; (None, []) where none is named (the group's own options --threads N and flags are skipped)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] == "--threads" else 1
    command = group.commands.get(args[i]) if i < len(args) else None
    if command is not None and hasattr(command, "commands"):
        return command_of(command, args[i + 1:])
    return command, args[i + 1:]


def run_reporting_disk_full(app: Any) -> None:
    """Run the Typer `app`; an exception a full disk caused, or a path that cannot be used as asked
    (`file_fault_line`), becomes one line on stderr and exit 1 (DEFOCUSKIT_TRACEBACK=1: the traceback); an empty
    value (`empty_value`) or a single-value option given twice (`repeated_option`) is refused first (exit 2)."""
    import sys

    import typer.main

    from defocuskit.io.atomic import disk_full_line

    command, rest = command_of(typer.main.get_command(app), sys.argv[1:])
    for refused in (empty_value, repeated_option):
        if command is not None and (line := refused(command, rest)) is not None:
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
    try:
        app()
    except Exception as exc:
        line = disk_full_line(exc, output_paths(sys.argv[1:])) or file_fault_line(exc)
        if line is None or os.environ.get("DEFOCUSKIT_TRACEBACK") == "1":
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


def hide_flag_types() -> None:
    """Help pages show no value type for on/off flags (`--strict`, not `--strict <bool>`, which reads as if
    `--strict true` were accepted): Typer's rich help shows the bool type of a flag; flags take no value."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


def one_line_usage_errors() -> None:
    """A usage error (missing argument, unknown option, bad value) is one line on stderr, `error: MESSAGE (see
    'defocuskit CMD --help')`, as every other refusal is, instead of Typer's usage lines and boxed panel, which wraps
    the message over several lines at the terminal's width; the exit code stays click's (2)."""
    from typer import rich_utils

    if getattr(rich_utils.rich_format_error, "one_line", False):
        return

    def format_error(exc: Any) -> None:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help page is the answer (Typer prints it)
            return
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        print(f"error: {message[:-1] if message.endswith('.') else message}{hint}", file=sys.stderr)

    format_error.one_line = True  # type: ignore[attr-defined]
    rich_utils.rich_format_error = format_error


def set_threads(threads: int | None) -> None:
    """`defocuskit --threads N`: every command's CPU threads (`io.threads`), set before torch is imported."""
    from defocuskit.io.threads import THREADS_ENV, apply_threads

    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    try:
        apply_threads()
    except ValueError as exc:  # $DEFOCUSKIT_THREADS=abc, 0, -1, 10**6: one line, as --threads 0 is
        given = f"${THREADS_ENV}='{threads}'"
        exit_before_torch(True, str(exc).replace(given, f"--threads {threads}") if threads is not None else str(exc))


def exit_before_torch(failed: bool, message: str) -> None:
    """Exit 2 with `error: message` when `failed`: a path check that costs no torch import (seconds); said once
    under `accelerate launch` (`once.fail`)."""
    if failed:
        from defocuskit.cli.once import fail

        fail(message, 2)
