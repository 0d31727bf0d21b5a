"""The aperture figure: PSNR and SSIM against f-number, the blurred input against each method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_aperture(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Write a two-panel PNG (PSNR, SSIM vs f-number on a log2 axis); None when no row has an f-number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = [r for r in rows if r["f_number"] is not None]
    if not grouped:
        return None
    methods = list(dict.fromkeys(r["method"] for r in grouped))
    f_numbers = sorted({r["f_number"] for r in grouped})
    # The input's score per group: identical across methods scoring the same images; take the first found.
    inputs: dict[float, dict[str, Any]] = {}
    for r in grouped:
        inputs.setdefault(r["f_number"], r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric, label in zip(axes, ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        xs = [f for f in f_numbers if inputs[f][f"{metric}_input"] is not None]
        ax.plot(np.log2(xs), [inputs[f][f"{metric}_input"] for f in xs], "k--o", label="blurred input")
        for method in methods:
            mine = sorted((r for r in grouped if r["method"] == method and r[metric] is not None), key=lambda r: r["f_number"])
            if method == "input" or not mine:
                continue
            ax.plot(np.log2([r["f_number"] for r in mine]), [r[metric] for r in mine], "-o", label=method)
        ax.set_xticks(np.log2(f_numbers))
        ax.set_xticklabels([f"f/{f:g}" for f in f_numbers])
        ax.set_xlabel("f-number of the blurred shot")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
