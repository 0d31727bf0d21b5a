"""Aggregating per-image scores into per-(method, f-number) rows, and writing them: console, JSON, CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

METRICS = ("psnr", "ssim", "mae", "lpips")
ROW_KEYS = (
    "method", "f_number", "n", "psnr", "ssim", "mae", "lpips",
    "psnr_input", "ssim_input", "mae_input", "lpips_input", "psnr_gain", "ssim_gain", "mae_gain",
)


def group_of(f_number: float | None, stops: bool) -> float | None:
    """The reporting group of an f-number: rounded to 0.1, or the nearest full stop; None where unknown."""
    if f_number is None or not math.isfinite(float(f_number)) or float(f_number) <= 0:
        return None
    if stops:
        from defocuskit.optics import full_stop

        return float(full_stop(float(f_number)))
    return round(float(f_number), 1)


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return float(sum(values) / len(values))  # type: ignore[arg-type]


def _row(method: str, f_number: float | None, images: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "f_number": f_number, "n": len(images)}
    for m in METRICS:
        row[m] = _mean([im[m] for im in images])
        row[f"{m}_input"] = _mean([im[f"{m}_input"] for im in images])
    for m in ("psnr", "ssim", "mae"):
        a, b = row[m], row[f"{m}_input"]
        row[f"{m}_gain"] = None if a is None or b is None else a - b
    return row


def aggregate(images: list[dict[str, Any]], methods: list[str], by_aperture: bool) -> list[dict[str, Any]]:
    """Mean of each metric over the images of each (method, f-number group), then an "all" row (f_number None)."""
    rows = []
    for method in methods:
        mine = [im for im in images if im["method"] == method]
        if not mine:
            continue
        if by_aperture:
            groups = sorted({im["f_number"] for im in mine if im["f_number"] is not None})
            for g in groups:
                rows.append(_row(method, g, [im for im in mine if im["f_number"] == g]))
        rows.append(_row(method, None, mine))
    return rows


def _fmt(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def print_table(report: dict[str, Any], console: Console | None = None) -> None:
    """The rows as a rich table: method, f/N, n, PSNR, gain, SSIM, gain, MAE, LPIPS."""
    console = console or Console()
    table = Table(title=f"defocuskit eval: split '{report['protocol'].get('split')}'")
    for name in ("method", "f/N", "n", "PSNR", "ΔPSNR", "SSIM", "ΔSSIM", "MAE", "LPIPS"):
        table.add_column(name, justify="left" if name == "method" else "right")
    previous = None
    for row in report["rows"]:
        if previous is not None and row["method"] != previous:
            table.add_section()
        previous = row["method"]
        table.add_row(
            row["method"],
            "all" if row["f_number"] is None else f"f/{row['f_number']:g}",
            str(row["n"]),
            _fmt(row["psnr"], 2), _fmt(row["psnr_gain"], 2, signed=True),
            _fmt(row["ssim"], 4), _fmt(row["ssim_gain"], 4, signed=True),
            _fmt(row["mae"], 4), _fmt(row["lpips"], 4),
        )
    console.print(table)
    lpips = str(report["protocol"].get("lpips", ""))
    if lpips.startswith("unavailable"):
        console.print(f"LPIPS {lpips}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.get("skipped"):
        console.print(f"[yellow]skipped {len(report['skipped'])} sample(s)[/yellow] (listed in report.json)")


def write_report(report: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """Write report.json (everything) and report.csv (the rows); returns their paths."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    csv_path = report_dir / "report.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROW_KEYS), extrasaction="ignore")
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow({k: ("all" if k == "f_number" and row[k] is None else row[k]) for k in ROW_KEYS})
    return {"json": json_path, "csv": csv_path}
