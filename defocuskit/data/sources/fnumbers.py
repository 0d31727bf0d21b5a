"""f-numbers given beside the photos, for shots whose EXIF has none: a CSV of file,f_number rows
(`--f-number-csv`) and a file-name pattern (`--f-number-pattern`); the CSV wins over EXIF, EXIF over the pattern."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from defocuskit.data.metadata import F_NUMBER_RANGE  # defined with the shard schema, which readers check
from defocuskit.data.pairs import inside_root, relpath
from defocuskit.data.sample import IngestError, IngestOptions
from defocuskit.io.formats import IMAGE_EXTENSIONS
from defocuskit.io.raw import io_reason


@dataclass(frozen=True)
class GivenFNumbers:
    """f-numbers the user gave: per file (the CSV, keyed by path relative to the root) and a name pattern."""

    table: dict[str, float] = field(default_factory=dict)
    pattern: re.Pattern | None = None


def implausible(f_number: float, where: str) -> str | None:
    """The reject reason for an f-number outside F_NUMBER_RANGE (a misread or corrupt tag), else None."""
    low, high = F_NUMBER_RANGE
    if low <= f_number <= high:
        return None
    return f"f-number {f_number:g} from {where} is implausible (lenses span f/{low:g} to f/{high:g}); not used"


def parse_f_number(text: str) -> float | None:
    """A positive finite f-number from '2.8', '2_8', 'f/2.8' or 'F2.8'; None if it is not one."""
    text = re.sub(r"^[fF]/?", "", text.strip()).replace("_", ".")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _compile_pattern(pattern: str) -> re.Pattern:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise IngestError(f"--f-number-pattern {pattern!r}: not a regular expression ({exc})") from None
    if compiled.groups < 1:
        raise IngestError(f"--f-number-pattern {pattern!r}: has no group; put the f-number in parentheses, "
                            r"e.g. 'f(\d+(?:[._]\d+)?)'")
    return compiled


def read_f_number_csv(csv_path: str | Path, root: Path) -> dict[str, float]:
    """The rows of an f-number CSV (header with columns `file` and `f_number`; files relative to `root`)
    as {path relative to root: f-number}. Raises IngestError naming the CSV and line of a bad row."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            return _csv_rows(csv.reader(f), csv_path, root)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = io_reason(exc) if isinstance(exc, OSError) else str(exc)
        raise IngestError(f"--f-number-csv {csv_path}: {reason}") from None


def _csv_rows(reader: Any, csv_path: Path, root: Path) -> dict[str, float]:
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in ("file", "f_number") if c not in header]
    if missing:
        raise IngestError(f"{csv_path}:1: missing column {', '.join(missing)} (header: {','.join(header)}); "
                            "needs the columns file,f_number")
    col_file, col_f = header.index("file"), header.index("f_number")
    table: dict[str, float] = {}
    lines: dict[str, int] = {}
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        cells = row + [""] * (len(header) - len(row))
        name, value = cells[col_file].strip(), cells[col_f].strip()
        rel = _csv_file(csv_path, line, name, root)
        f_number = parse_f_number(value)
        if f_number is None:
            raise IngestError(f"{csv_path}:{line}: f_number {value!r} of {name!r} is not a positive number")
        if reason := implausible(f_number, "the CSV"):
            raise IngestError(f"{csv_path}:{line}: {name!r}: {reason}")
        if rel in table:
            raise IngestError(f"{csv_path}:{line}: {name!r} is listed twice (also on line {lines[rel]})")
        table[rel], lines[rel] = f_number, line
    return table


def _csv_file(csv_path: Path, line: int, name: str, root: Path) -> str:
    """A CSV row's file as a path relative to root; IngestError if it is missing or not a shot file."""
    if not name:
        raise IngestError(f"{csv_path}:{line}: empty file name")
    path = root / name.replace("\\", "/")
    if not path.is_file():
        raise IngestError(f"{csv_path}:{line}: no such file {name!r} under {root}")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise IngestError(f"{csv_path}:{line}: {name!r} is not an image file --raw-dir reads")
    rel = inside_root(path, root)  # by name, as the sources' relpath looks the files up (a link is not followed)
    if rel is None:
        raise IngestError(f"{csv_path}:{line}: {name!r} is outside {root}")
    return rel


def given_f_numbers(root: Path, opts: IngestOptions) -> GivenFNumbers:
    """opts.f_number_csv and opts.f_number_pattern, read and checked (IngestError when bad)."""
    table = read_f_number_csv(opts.f_number_csv, root) if opts.f_number_csv else {}
    pattern = _compile_pattern(opts.f_number_pattern) if opts.f_number_pattern else None
    return GivenFNumbers(table, pattern)


def resolve_f_number(path: Path, exif: dict[str, Any], root: Path, given: GivenFNumbers) -> str | None:
    """Set exif["f_number"] from the CSV, EXIF or the name pattern; the reject reason when there is none
    (or EXIF holds a text FNumber that is not a number)."""
    listed = given.table.get(relpath(path, root))
    if listed is not None:
        exif["f_number"] = listed
        return None
    if exif["f_number"] is not None:
        return implausible(float(exif["f_number"]), "EXIF")
    if exif.get("f_number_text") is not None:  # a text tag that is not an f-number: corrupt, not missing
        return f"EXIF FNumber {exif['f_number_text']!r} is not a number (give it with --f-number-csv)"
    hint = " (give it with --f-number-csv or --f-number-pattern)"
    if given.pattern is None:
        return "f-number unknown: no EXIF FNumber" + hint
    found = [m.group(1) for m in given.pattern.finditer(path.name) if m.group(1) is not None]
    if not found:
        return ("f-number unknown: no EXIF FNumber, and the name does not match --f-number-pattern "
                f"{given.pattern.pattern!r}")
    value = parse_f_number(found[0])
    if value is None:
        return (f"f-number unknown: no EXIF FNumber, and --f-number-pattern found {found[0]!r}, "
                "not a positive number")
    values = {parse_f_number(text) for text in found} - {None}
    if len(values) > 1:  # 'dscf0017_f2_8.jpg' with 'f(\d+...)': f/17 or f/2.8; the first match is a guess
        return (f"f-number unknown: no EXIF FNumber, and --f-number-pattern {given.pattern.pattern!r} matches the "
                f"name {len(found)} times with different f-numbers ({', '.join(map(repr, found))}); make it match "
                "only the f-number")
    exif["f_number"] = value
    return implausible(value, f"--f-number-pattern ({found[0]!r})")
