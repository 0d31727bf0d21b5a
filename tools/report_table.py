"""Print an eval report (report.json) as a markdown table: PSNR / SSIM per method and f-number, and the gain over the input.

    python tools/report_table.py demo-out/report/report.json [--metric psnr]

Used for the demo figures in README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(report: dict, metric: str = "psnr") -> str:
    """Rows: methods; columns: f-numbers then "all"; cells: metric (gain over the input in parentheses)."""
    rows = report["rows"]
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
            gain = r[metric] - r[f"{metric}_input"]
            cells.append(f"{r[metric]:.2f}" if m == "input" else f"{r[metric]:.2f} ({gain:+.2f})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n = {f: cell[("input", f)]["n"] for f in columns if ("input", f) in cell}
    lines.append("")
    lines.append("pairs per column: " + ", ".join(f"{'all' if f is None else f'f/{f:g}'} {k}" for f, k in n.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--metric", default="psnr", choices=("psnr", "ssim", "mae"))
    args = ap.parse_args()
    print(table(json.loads(args.report.read_text()), args.metric))


if __name__ == "__main__":
    main()
