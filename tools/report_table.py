"""Print an eval report (report.json) as a markdown table: one metric (--metric: PSNR, SSIM or MAE) per method and
f-number, and the gain over the input; the rows over every source (an `eval --by-source` report's per-source rows
with `--source NAME`).

    python tools/report_table.py demo-out/report/report.json [--metric psnr] [--source dpdd]

Used for the demo figures in README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

DIGITS = {"psnr": 2, "ssim": 4, "mae": 4}  # as `defocuskit eval` prints them: SSIM and MAE gains are thousandths


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_rows(report: dict, metric: str) -> None:
    """ValueError naming the first row that is not an eval report's: a mapping with a method, an f-number (or
    None), a pair count and the metric for the method and the input (None where the eval had none)."""
    for i, r in enumerate(report["rows"]):
        if not isinstance(r, dict) or not isinstance(r.get("method"), str):
            raise ValueError(f"row {i} has no method: not a defocuskit eval report.json")
        missing = [k for k in ("f_number", "n", metric, f"{metric}_input") if k not in r]
        if missing:
            raise ValueError(f"row {i} ({r['method']}) has no {', '.join(missing)}: not a defocuskit eval report.json")
        bad = next((k for k in ("f_number", metric, f"{metric}_input") if r[k] is not None and not _number(r[k])),
                   None)
        if bad is not None or not (isinstance(r["n"], int) and not isinstance(r["n"], bool)):
            bad = bad or "n"
            raise ValueError(f"row {i} ({r['method']}) has {bad}={r[bad]!r}, not a number")


def table(report: dict, metric: str = "psnr", source: str | None = None) -> str:
    """Rows: methods; columns: f-numbers then "all"; cells: metric (gain over the input in parentheses; PSNR to 2
    decimals, SSIM and MAE to 4, as `defocuskit eval` prints them). The rows of
    `source` (None: those over every source; a report without --by-source holds only those)."""
    rows = [r for r in report["rows"] if r.get("source") == source]
    if not rows:
        known = sorted({str(r.get("source")) for r in report["rows"] if r.get("source") is not None})
        raise SystemExit(f"error: no rows for source {source!r} (the report's sources: {', '.join(known) or 'none'})")
    f_numbers = sorted({r["f_number"] for r in rows if r["f_number"] is not None})
    columns = [*f_numbers, None]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["f_number"]): r for r in rows}
    head = "| method | " + " | ".join(f"f/{f:g}" if f is not None else "all" for f in columns) + " |"
    lines = [head, "|---|" + "---:|" * len(columns)]
    for m in methods:
        cells = []
        for f in columns:
            r = cell.get((m, f))
            if r is None:
                cells.append("")
                continue
            if r[metric] is None:  # not scored (an eval without this metric)
                cells.append("-")
                continue
            known, digits = r[f"{metric}_input"] is not None, DIGITS[metric]
            gain = f" ({r[metric] - r[f'{metric}_input']:+.{digits}f})" if known and m != "input" else ""
            cells.append(f"{r[metric]:.{digits}f}{gain}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n = {f: cell[("input", f)]["n"] for f in columns if ("input", f) in cell}
    lines.append("")
    lines.append("pairs per column: " + ", ".join(f"{'all' if f is None else f'f/{f:g}'} {k}" for f, k in n.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--metric", default="psnr", choices=("psnr", "ssim", "mae"))
    ap.add_argument("--source", default=None, help="an `eval --by-source` report's rows of this source")
    args = ap.parse_args()
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
        if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
            raise ValueError("no 'rows': not a defocuskit eval report.json")
        check_rows(report, args.metric)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {args.report}: {str(exc).splitlines()[0]}") from None
    print(table(report, args.metric, args.source))


if __name__ == "__main__":
    main()
