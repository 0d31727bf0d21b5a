"""Longitudinal chromatic aberration of the real stacks: a focus per channel, renders against shots.

A lens focuses red, green and blue at slightly different distances, so each channel's signed CoC is offset:
CoC_ch = k (c + d_ch) / N (c the signed relative CoC of the depth map, as `ingest --render` uses it). For every
stack of the fixtures (`calibrate_renderer.stacks`, working size `--size`), with the stack's k
(`calibrate_renderer.fit_k`) and its own veiling glare V (`fit_veil.fit_v`), the offset d is searched on a grid
(D_GRID, in units of c) per channel: a channel's error depends on its own CoC only, so each channel takes the d
that minimises its mean squared error over the stack's apertures against the registered, gain-matched shots
(`fit_veil.gain_matched`). Prints per stack the best d per channel, the best d shared by all three (a focus
error, not chromatic) and the sRGB PSNR (mean over apertures) at d = 0, at the shared d and per channel: what a
renderer with chromatic aberration could gain over the present one.

    python tools/fit_loca.py [--fixtures ../shared/fixtures/real] [--size 384]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from calibrate_renderer import MARGIN, REF_F_NUMBER, fit_k, prepare, stacks
from fit_veil import fit_v, gain_matched, renders

from defocuskit.data.render_photo import add_veil, added_veil, encode, render_coc, restore_highlights
from defocuskit.data.sources.render import added_coc

D_GRID = np.round(np.arange(-0.12, 0.121, 0.02), 3)  # offsets of c; c spans about -1 ... 1 over a depth map


def channel_mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3,) mean squared error per channel, the margin left out as calibrate_renderer.psnr does."""
    h, w = a.shape[:2]
    my, mx = int(MARGIN * h), int(MARGIN * w)
    diff = (a[my:h - my, mx:w - mx].astype(np.float64) - b[my:h - my, mx:w - mx]) ** 2
    return diff.reshape(-1, 3).mean(axis=0)


def to_db(mse: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / max(float(np.mean(mse)), 1e-12)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/real")
    parser.add_argument("--size", type=int, default=384, help="working size: the long side in pixels")
    args = parser.parse_args()
    t0 = time.time()
    print("| stack | k px | own V | best d R / G / B | shared d | PSNR d = 0 | shared d | per channel |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for stack in stacks(args.fixtures):
        prep = prepare(stack, args.size)
        k = fit_k(prep, args.size)
        shots = gain_matched(stack, args.size)
        v = fit_v(renders(prep, k, list(shots)), shots)
        linear = restore_highlights(prep["linear"])
        err = {}
        for d in D_GRID:
            total = np.zeros(3)
            for n, shot in shots.items():
                rendered = render_coc(linear, added_coc(k * (prep["c"] + d), n, REF_F_NUMBER))
                total += channel_mse(encode(add_veil(rendered, added_veil(v, n, REF_F_NUMBER))), shot)
            err[float(d)] = total / len(shots)
        best = [min(err, key=lambda d, ch=ch: err[d][ch]) for ch in range(3)]
        shared = min(err, key=lambda d: float(err[d].mean()))
        per_channel = np.array([err[best[ch]][ch] for ch in range(3)])
        print(f"| {stack['name']} | {k:.1f} | {v:.3f} | {best[0]:+.2f} / {best[1]:+.2f} / {best[2]:+.2f} | "
              f"{shared:+.2f} | {to_db(err[0.0]):.2f} | {to_db(err[shared]):.2f} | {to_db(per_channel):.2f} |",
              flush=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
