"""Aggregating per-image scores into per-(method, f-number) rows, optionally per source, and writing them:
console, JSON, CSV.

Each row holds, per metric, the mean and the spread over its images (population standard deviation,
ddof=0), for the method, for the blurred input and for the per-image gain (method minus input)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from defocuskit.eval.config import EvalError
from defocuskit.io.hub import changed_since, file_sha256

METRICS = ("psnr", "ssim", "mae", "lpips")
GAIN_METRICS = METRICS  # every metric's per-image gain (method minus input; for MAE and LPIPS lower is better)
STD_DESCRIPTION = ("*_std: population standard deviation (ddof=0) over the images of the row; *_gain_std: of the "
                   "per-image gain (method minus blurred input on the same image)")
ROW_KEYS = (
    "method", "source", "f_number", "n",
    *(k for m in METRICS for k in (m, f"{m}_std")),
    *(k for m in METRICS for k in (f"{m}_input", f"{m}_input_std")),
    *(k for m in GAIN_METRICS for k in (f"{m}_gain", f"{m}_gain_std")),
)
GROUPING = "f_number rounded to 0.1 (0.01 below f/1)"  # `group_of` without stops, as the protocol names it
ALL = "all"  # how report.csv and the table write a pooled f-number or source (None in the rows)


def group_of(f_number: float | None, stops: bool) -> float | None:
    """The reporting group of an f-number: rounded to 0.1 (0.01 below f/1: f/0.95 is no f/0.9), or the nearest full
    stop; None where unknown."""
    if f_number is None or not math.isfinite(float(f_number)) or float(f_number) <= 0:
        return None
    if stops:
        from defocuskit.imaging.optics import full_stop

        return float(full_stop(float(f_number)))
    return round(float(f_number), 2 if float(f_number) < 1.0 else 1)


def _stats(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, population std) of the values; (None, None) when there are none or any is missing."""
    if not values or any(v is None for v in values):
        return None, None
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std())


def _row(method: str, source: str | None, f_number: float | None, images: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "source": source, "f_number": f_number, "n": len(images)}
    for m in METRICS:
        row[m], row[f"{m}_std"] = _stats([im[m] for im in images])
        row[f"{m}_input"], row[f"{m}_input_std"] = _stats([im[f"{m}_input"] for im in images])
    for m in GAIN_METRICS:
        gains = [None if im[m] is None or im[f"{m}_input"] is None else im[m] - im[f"{m}_input"] for im in images]
        row[f"{m}_gain"], row[f"{m}_gain_std"] = _stats(gains)
    return row


def check_scored(result: dict[str, Any], methods: list[str], where: str) -> None:
    """EvalError where a method scored none of the pairs (every one skipped): a report without its rows would be an
    empty result; the message names the most common reason."""
    if not result["pairs"]:
        return
    scored = {image["method"] for image in result["images"]}
    empty = [m for m in methods if m not in scored]
    if empty:
        reasons = Counter(s["reason"] for s in result["skipped"] if s["method"] is None or s["method"] in empty)
        why = f" (most common reason: {reasons.most_common(1)[0][0]})" if reasons else ""
        raise EvalError(f"{', '.join(empty)}: none of the {result['pairs']} pairs of {where} was scored{why}; no "
                        "report was written")


def source_of(image: dict[str, Any]) -> str:
    """The source name an image row is grouped under ("unknown" where the sample's json had none)."""
    return str(image.get("source") or "unknown")


def _rows_of(method: str, source: str | None, images: list[dict[str, Any]], by_aperture: bool) -> list[dict[str, Any]]:
    rows = []
    if by_aperture:
        for g in sorted({im["f_number"] for im in images if im["f_number"] is not None}):
            rows.append(_row(method, source, g, [im for im in images if im["f_number"] == g]))
    rows.append(_row(method, source, None, images))
    return rows


def aggregate(images: list[dict[str, Any]], methods: list[str], by_aperture: bool,
              by_source: bool = False) -> list[dict[str, Any]]:
    """Rows of mean and std of each metric per (method, f-number group), then an "all" row (f_number None).

    Pooled rows have `source` None. With `by_source`, each method's pooled rows are followed by the same
    rows per source (`source` named; sources sorted), each ending with that source's "all" row.
    """
    rows = []
    for method in methods:
        mine = [im for im in images if im["method"] == method]
        if not mine:
            continue
        rows.extend(_rows_of(method, None, mine, by_aperture))
        if by_source:
            for source in sorted({source_of(im) for im in mine}):
                rows.extend(_rows_of(method, source, [im for im in mine if source_of(im) == source], by_aperture))
    return rows


def add_source_rows(report: dict[str, Any]) -> dict[str, Any]:
    """Replace `report["rows"]` by the rows per (source, f-number) as well as pooled, from `report["images"]`.

    The methods keep the order of the existing rows; f-number groups come from the images (None where the
    evaluation did not group by aperture). Returns the report.
    """
    methods = list(dict.fromkeys([r["method"] for r in report["rows"]] + [im["method"] for im in report["images"]]))
    by_aperture = any(im["f_number"] is not None for im in report["images"])
    report["rows"] = aggregate(report["images"], methods, by_aperture, by_source=True)
    return report


def _fmt(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pm(value: float | None, std: float | None, digits: int, signed: bool = False) -> str:
    """"+0.52 ±0.76": a mean and its spread over images."""
    text = _fmt(value, digits, signed)
    return text if value is None or std is None else f"{text} ±{std:.{digits}f}"


def _table(rows: list[dict[str, Any]], title: str, caption: str | None = None) -> Table:
    """One table: method (named on the first row of its block), f/N, n, PSNR, gain ±std, SSIM, gain, MAE, LPIPS
    (the LPIPS column only where a row has it)."""
    lpips = any(r["lpips"] is not None for r in rows)
    table = Table(title=title, caption=caption, box=box.MINIMAL, show_edge=False)
    for name in ("method", "f/N", "n", "PSNR", "ΔPSNR ±sd", "SSIM", "ΔSSIM", "MAE") + (("LPIPS",) if lpips else ()):
        table.add_column(name, justify="left" if name == "method" else "right")
    previous = None
    for row in rows:
        if previous is not None and row["method"] != previous:
            table.add_section()
        first = row["method"] != previous
        previous = row["method"]
        table.add_row(
            row["method"] if first else "",
            ALL if row["f_number"] is None else f"f/{row['f_number']:g}",
            str(row["n"]),
            _fmt(row["psnr"], 2), _pm(row["psnr_gain"], row.get("psnr_gain_std"), 2, signed=True),
            _fmt(row["ssim"], 4), _fmt(row["ssim_gain"], 4, signed=True),
            _fmt(row["mae"], 4), *((_fmt(row["lpips"], 4),) if lpips else ()),
        )
    return table


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """The rows as rich tables: all sources pooled, then (rows with a `source`) one table per source."""
    console = console or Console()
    split = report["protocol"].get("split")
    rows = report["rows"]
    pooled = [r for r in rows if r.get("source") is None]
    sources = list(dict.fromkeys(r["source"] for r in rows if r.get("source") is not None))
    scope = "all sources" if sources else ""
    chosen = report["protocol"].get("protocol", "default")
    band, align = report["protocol"].get("detail_band_px"), report["protocol"].get("align")
    scope = ", ".join(p for p in (scope, f"protocol {chosen}" if chosen != "default" else "",
                                  f"aligned to the reference ({align})" if align else "",
                                  f"detail band (low-pass {band:g} px from the reference)" if band else "") if p)
    console.print(_table(pooled, f"defocuskit eval: split '{split}'" + (f", {scope}" if scope else ""),
                         caption="Δ: gain over the blurred input; sd: std over images"))
    if len(sources) == 1:
        console.print(f"one source, '{sources[0]}': its rows are the rows above")
    for source in sources if len(sources) > 1 else []:
        console.print(_table([r for r in rows if r.get("source") == source], f"source '{source}', split '{split}'"))
    lpips = str(report["protocol"].get("lpips", ""))
    if lpips.startswith("unavailable"):
        console.print(f"LPIPS {lpips}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.get("skipped"):
        console.print(skipped_line(report["skipped"]))


def skipped_line(skipped: list[dict[str, Any]]) -> str:
    """"skipped 3 sample(s) ...": the samples (by key) left out of one method's rows or more, and where a sample was
    skipped for several methods, how many (sample, method) scores are missing in all."""
    samples = len({s["key"] for s in skipped})
    scores = "" if samples == len(skipped) else f", {len(skipped)} scores of (sample, method) in all"
    return f"[yellow]skipped {samples} sample(s)[/yellow] (listed in report.json{scores})"


def write_report(report: dict[str, Any], report_dir: Path, by_source: bool = False,
                 sha256_of: list[str] | None = None) -> dict[str, Path]:
    """Write report.csv (the rows) and report.json (everything); returns their paths.

    With `by_source`, the rows are first recomputed per (source, f-number) from the images (`add_source_rows`).
    The protocol records what the *_std columns are. `sha256_of`: files of `report_dir` (report.csv among them)
    whose SHA-256 report.json records in "sha256".
    """
    if by_source:
        add_source_rows(report)
    report.setdefault("protocol", {}).setdefault("std", STD_DESCRIPTION)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / "report.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_KEYS), extrasaction="ignore")
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow({k: (ALL if k in ("f_number", "source") and row.get(k) is None else row.get(k))
                             for k in ROW_KEYS})
    if sha256_of is not None:
        report["sha256"] = {name: file_sha256(report_dir / name) for name in sha256_of}
        report["sha256"]["report.json"] = _report_sha256(report)  # of the file without this entry: edits show
    json_path = report_dir / "report.json"
    json_path.write_text(_report_text(report))
    return {"json": json_path, "csv": csv_path}


def _report_text(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def _report_sha256(report: dict[str, Any]) -> str:
    """The SHA-256 of report.json's text as written without its own entry in "sha256" (the entry records this)."""
    own = {k: v for k, v in report["sha256"].items() if k != "report.json"}
    return hashlib.sha256(_report_text({**report, "sha256": own}).encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """The versions of the libraries that computed a report's numbers (recorded in its protocol)."""
    import cv2
    import skimage
    import torch

    import defocuskit

    return {"numpy": np.__version__, "scikit-image": skimage.__version__, "torch": torch.__version__,
            "opencv": cv2.__version__, "defocuskit": defocuskit.__version__}


REPORT_FILES = ["figure.png", "aperture.png", "report.csv", "report.json"]  # replaced in this order
LEGACY_FILES = ["aperture.png", "report.csv", "report.json"]  # what a report.json without "files" wrote


def written_files(report: dict[str, Any]) -> list[str]:
    """The report files (names in REPORT_FILES) the evaluation that made `report` wrote beside it: its "files";
    for a report.json of a version that did not record them, report.json, report.csv and (unless a note says it
    was not written) aperture.png, never figure.png."""
    files = report.get("files")
    if isinstance(files, list):
        return [f for f in files if f in REPORT_FILES]
    notes = report.get("notes") if isinstance(report.get("notes"), list) else []
    return [f for f in LEGACY_FILES if not any(str(n).startswith(f"{f} not written") for n in notes)]


def _probe_writable(folder: Path) -> None:
    """EvalError naming `folder` when it cannot be made or written to (a file, no permission, read-only)."""
    if folder.exists() and not folder.is_dir():
        raise EvalError(f"{folder}: exists and is not a folder; give a folder for --report")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EvalError(f"{folder}: cannot write the report there ({exc.strerror or exc}); "
                        "give another --report") from None


def check_report_folder(folder: Path) -> None:
    """EvalError naming the file when `folder` holds a report file (report.json, report.csv, a figure) that no
    earlier evaluation wrote there (not among the files its report.json lists): it would be replaced or
    removed. Also EvalError when `folder` is not a folder or cannot be written to. The files of an evaluation killed
    while they replaced the earlier ones are judged as they will be once the next run has finished replacing them."""
    from defocuskit.io.staging import staged_pending

    folder = Path(folder)
    _probe_writable(folder)
    try:
        pending = staged_pending(folder, REPORT_FILES)
    except FileExistsError as exc:
        raise EvalError(exc.strerror) from None

    def at(name: str) -> Path | None:  # where the file `name` will be read from (None: it will be removed)
        return pending[name] if name in pending else folder / name

    try:
        earlier = json.loads(at("report.json").read_text(encoding="utf-8"))  # type: ignore[union-attr]
        ours = written_files(earlier) if isinstance(earlier, dict) and "protocol" in earlier else []
    except (OSError, ValueError, TypeError, AttributeError):
        earlier, ours = {}, []
    recorded = earlier.get("sha256") if ours and isinstance(earlier.get("sha256"), dict) else {}
    if recorded.get("report.json") and _report_sha256(earlier) != recorded["report.json"]:
        raise EvalError(f"{folder / 'report.json'}: changed since the evaluation that wrote it (not the SHA-256 it "
                        "records of itself); it is left as it is: move it or give another --report")
    for name in ours:
        path = at(name)
        if name != "report.json" and recorded.get(name) and path is not None and (path.exists() or path.is_symlink()) \
                and changed_since(path, recorded[name]):
            raise EvalError(f"{folder / name}: changed since the evaluation that wrote it (not the SHA-256 its "
                            "report.json records); it is left as it is: move it or give another --report")
    theirs = [name for name in REPORT_FILES if (p := at(name)) is not None and (p.exists() or p.is_symlink())]
    theirs = [name for name in theirs if name not in ours]
    if theirs:
        why = ("not listed in the report.json of defocuskit beside it" if ours
               else "no report.json of defocuskit beside it")
        raise EvalError(f"{folder / theirs[0]}: exists and was not written by an earlier evaluation ({why}); "
                        "it is left as it is: give another --report")


def write_report_files(report: dict[str, Any], folder: Path, figure_rows: list[Any] | None, by_aperture: bool,
                       by_source: bool) -> None:
    """Write the report's files into `folder` together: figure.png (with `figure_rows`, the rows of `--figure`;
    a note where there are none), aperture.png (with `by_aperture`; a note where no row has an f-number),
    report.json (which records them in "files") and report.csv. They replace the files an earlier evaluation
    wrote there and remove those of them this run does not write; a failure (a full disk) leaves them as they were.
    """
    from defocuskit.eval.plots import aperture_title, plot_aperture
    from defocuskit.io.staging import staged_files

    with staged_files(folder, REPORT_FILES) as stage:  # every file to a staging folder first
        if figure_rows:
            from defocuskit.eval.figure import write_figure

            write_figure(stage / "figure.png", figure_rows, aperture_title(report))
        elif figure_rows is not None:
            report["notes"].append("figure.png not written: no pair that every method produced an output for")
        if by_source:
            add_source_rows(report)  # the rows the plot and the files show
        if by_aperture and plot_aperture(report["rows"], stage / "aperture.png", title=aperture_title(report)) is None:
            report["notes"].append("aperture.png not written: no f-number groups")
        # what this run wrote: the next evaluation into this folder replaces or removes these and no other file
        report["files"] = [n for n in REPORT_FILES if (stage / n).exists() or n in ("report.csv", "report.json")]
        # with the others' SHA-256: a file changed since (a user's copy over it) is not the next run's to replace
        write_report(report, stage, sha256_of=[n for n in report["files"] if n != "report.json"])
        check_report_folder(folder)  # again: a file put there while this run scored is left alone
