"""Where are registered real pairs aligned: on the subject in focus, or on the out-of-focus background?

For every real fixture pair (VABD 0001-0003 at f/1.8, f/2.8, f/8; EBB train and test at f/1.8), the shot is
registered onto its f/16 reference three ways, at the working resolution `align` uses (ECC affine, 1024 px):
- whole frame: ECC on the whole frame (`align` before the highlights were masked);
- highlights masked: the same without the light of clipped highlights (`highlights.unexplained_highlights`),
  what `align` does;
- refined on the detail: that fit refined (the two finest ECC levels) on the detail both shots share
  (`highlights.shared_detail`: the subject in focus), a variant `align` does not use.
Each is scored in focus by the correlation of the two images' fine detail (Laplacian of a 1 px Gaussian) inside
the focal mask shipped with the stack (near 1 when the subject in focus is aligned to a fraction of a pixel,
near 0 when it is off by a pixel or more), and out of focus by the correlation of the two images low-passed
(Gaussian, 3 px) outside it; a 40 px margin left out.

    python tools/bench_registration_focus.py [--fixtures ../shared/fixtures/real]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from calibrate_renderer import stacks

from defocuskit.data import register as reg
from defocuskit.data.highlights import shared_detail, unexplained_highlights
from defocuskit.io.images import read_image, to_float

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
VARIANTS = ("whole frame", "highlights masked", "refined on the detail")


def fit(ref: np.ndarray, mov: np.ndarray, variant: str) -> np.ndarray:
    """The full-resolution warp (reference -> moving) of one variant, at `align`'s working resolution."""
    scale = min(1.0, 1024 / max(ref.shape[:2]))
    rc, mc = (reg._resize(np.clip(x, 0.0, 1.0).astype(np.float32), scale) for x in (ref, mov))
    rw, mw = reg._gray(rc), reg._gray(mc)
    rg, mg = (cv2.GaussianBlur(x, (0, 0), 2.0) for x in (rw, mw))
    lit = unexplained_highlights(rc, mc)
    warp = reg._ecc(rg, mg, "affine", None if variant == "whole frame" else (~lit).astype(np.uint8))
    if variant == "refined on the detail":
        detail = (shared_detail(rw, mw) & ~lit).astype(np.uint8)
        for level in (1, 0):
            warp = reg._ecc_level(rg, mg, "affine", warp, 0.5 ** level, detail)
    return reg._rescale(warp, scale)


def correlation(a: np.ndarray, b: np.ndarray, where: np.ndarray, fine: bool, margin: int = 40) -> float:
    """Correlation of the fine detail (`fine`) or of the 3 px low-pass of two images over `where`."""
    if fine:
        la, lb = (cv2.Laplacian(cv2.GaussianBlur(reg._gray(x), (0, 0), 1.0), cv2.CV_32F) for x in (a, b))
    else:
        la, lb = (cv2.GaussianBlur(reg._gray(x), (0, 0), 3.0) for x in (a, b))
    m = where.copy()
    m[:margin], m[-margin:], m[:, :margin], m[:, -margin:] = False, False, False, False
    x, y = la[m] - la[m].mean(), lb[m] - lb[m].mean()
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=ROOT)
    args = ap.parse_args()
    t0 = time.time()
    print("| pair | " + " | ".join(f"{v}: in focus / out of focus" for v in VARIANTS) + " |\n|---|"
          + "---:|" * len(VARIANTS))
    for st in stacks(args.fixtures):
        ref = to_float(read_image(st["ref"]))
        h, w = ref.shape[:2]
        focal = cv2.resize(to_float(read_image(st["focal"])).mean(axis=2), (w, h))
        for n, path in st["shots"].items():
            mov = to_float(read_image(path))
            if mov.shape != ref.shape:
                continue
            cells = []
            for v in VARIANTS:
                warped = reg._warp(mov, fit(ref, mov, v), (w, h))
                cells.append(f"{correlation(ref, warped, focal > 0.5, True):.3f} / "
                             f"{correlation(ref, warped, focal <= 0.5, False):.3f}")
            print(f"| {st['name']} f/{n:g} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
