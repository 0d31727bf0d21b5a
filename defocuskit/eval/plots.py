"""The aperture figure: PSNR against f-number (mean ± std over images) for the blurred input and each method,
and each method's gain over the input."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

DODGE = 0.035  # horizontal offset between series, in log2(f-number) units (one full stop is 0.5)


def _n_label(ns: set[int]) -> str:
    return f"n={min(ns)}" if len(ns) == 1 else f"n={min(ns)}–{max(ns)}"


def aperture_title(report: Mapping[str, Any]) -> str:
    """"PSNR by aperture: <shard folder> (<sources>) · split <split>", from a report's protocol and images."""
    protocol = report.get("protocol") or {}
    folder = Path(str(protocol.get("shards") or "")).name or "shards"
    sources = sorted({str(im.get("source") or "unknown") for im in report.get("images") or []})
    text = "PSNR by aperture: " + folder + (f" ({', '.join(sources)})" if sources else "")
    text += f" · split {protocol.get('split', '?')}"
    if protocol.get("limit"):
        text += f" · first {protocol['limit']} pairs"
    if protocol.get("protocol", "default") != "default":
        text += f" · protocol {protocol['protocol']}"
    if protocol.get("align"):
        text += f" · aligned ({protocol['align']})"
    if protocol.get("detail_band_px"):
        text += f" · detail band ({protocol['detail_band_px']:g} px)"
    return text


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(ax: Any, xs: np.ndarray, means: list[float], stds: list[float | None], **style: Any) -> Any:
    yerr = None if any(s is None for s in stds) else np.asarray(stds, np.float64)
    return ax.errorbar(xs, means, yerr=yerr, capsize=3, elinewidth=1, markersize=5, **style)


def plot_aperture(rows: list[dict[str, Any]], path: Path, title: str | None = None) -> Path | None:
    """Write `aperture_figure(rows, title)` as a PNG; None (and nothing written) when no row has an f-number."""
    plt = _pyplot()
    fig = aperture_figure(rows, title)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def aperture_figure(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    """A two-panel matplotlib Figure: PSNR vs f-number (log2 axis) and the gain over the blurred input.

    Points are the means over images, error bars the std over images (rows' `*_std`); the x ticks give the
    number of images per f-number and the title repeats it. Only pooled rows (no `source`) are drawn.
    None when no row has an f-number.
    """
    plt = _pyplot()
    grouped = [r for r in rows if r["f_number"] is not None and r.get("source") is None]
    if not grouped:
        return None
    methods = [m for m in dict.fromkeys(r["method"] for r in grouped) if m != "input"]
    f_numbers = sorted({r["f_number"] for r in grouped})
    ns = {f: {int(r["n"]) for r in grouped if r["f_number"] == f} for f in f_numbers}
    # The input's score per group: the input baseline's row where it was scored, else the row of the method that
    # scored the most of the group's images (a method that skipped some holds the input's score on those it scored)
    inputs: dict[float, dict[str, Any]] = {}
    for r in grouped:
        if r["psnr_input"] is not None:
            best = inputs.get(r["f_number"])
            if best is None or (best["method"] != "input" and (r["method"] == "input" or r["n"] > best["n"])):
                inputs[r["f_number"]] = r
    offsets = {name: (i - len(methods) / 2) * DODGE for i, name in enumerate(["input", *methods])}

    fig, (ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, constrained_layout=True)
    fs = [f for f in f_numbers if f in inputs]
    _series(ax, np.log2(fs) + offsets["input"], [inputs[f]["psnr_input"] for f in fs],
            [inputs[f].get("psnr_input_std") for f in fs], fmt="k--o", label="blurred input")
    gain_ax.axhline(0.0, color="k", linestyle="--", linewidth=1, label="blurred input (0 dB)")
    for i, method in enumerate(methods):
        mine = sorted((r for r in grouped if r["method"] == method and r["psnr"] is not None), key=lambda r: r["f_number"])
        if not mine:
            continue
        xs = np.log2([r["f_number"] for r in mine]) + offsets[method]
        color = f"C{i}"
        _series(ax, xs, [r["psnr"] for r in mine], [r.get("psnr_std") for r in mine], fmt="-o", color=color,
                label=method)
        gains = [r for r in mine if r["psnr_gain"] is not None]
        if gains:
            _series(gain_ax, np.log2([r["f_number"] for r in gains]) + offsets[method], [r["psnr_gain"] for r in gains],
                    [r.get("psnr_gain_std") for r in gains], fmt="-o", color=color, label=method)
    if not methods:
        gain_ax.text(0.5, 0.7, "no method besides the blurred input", transform=gain_ax.transAxes, ha="center",
                     va="center", color="0.4")
        gain_ax.set_ylim(-1.0, 1.0)
    for a, label in ((ax, "PSNR (dB), mean ± std over images"), (gain_ax, "PSNR gain over the input (dB), mean ± std")):
        a.set_xticks(np.log2(f_numbers), [f"f/{f:g}\n{_n_label(ns[f])}" for f in f_numbers])
        a.tick_params(labelbottom=True)
        a.set_xlabel("f-number of the blurred shot (n = images per point)")
        a.set_ylabel(label)
        a.grid(True, alpha=0.3)
        a.legend(fontsize="small")
    ax.set_title("PSNR against the sharp reference")
    gain_ax.set_title("gain over the blurred input (method − input, per image)")
    all_n = set().union(*ns.values())
    fig.suptitle(f"{title or 'PSNR by aperture'}\n{_n_label(all_n).replace('=', ' = ')} images per f-number, "
                 f"{len(f_numbers)} f-numbers; error bars: std over images", fontsize="medium")
    return fig
