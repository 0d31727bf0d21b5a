"""Which disc turns a reference shot's defocus into the f/N shot's, under the thin lens: the blur a data step that
stops at the reference should undo, against the quadrature sqrt(1 - (N / N_ref)^2) that `ingest --render` adds by.

    python tools/disc_composition.py [--size 512] [--seed 0]

A texture with a 1/f amplitude spectrum (as natural images have) is blurred by a disc of diameter D (the shot) and by
one of D x N / N_ref (the reference: the thin lens's CoC scales as 1 / N); printed per (D, N, N_ref) the diameter a,
as a fraction of D, of the disc that turns the reference into the shot with the least squared error (grid 0.50-1.00 x
D, step 0.01; 40 px margins left out).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
from tool_args import whole

from defocuskit.imaging.optics import disc_psf

CASES = ((8.0, 16.0), (8.0, 22.0), (2.8, 16.0))  # (N, N_ref): the VABD f/8 and f/2.8 shots; the built-in set's f/22
DIAMETERS = (5.4, 8.0, 16.0)
MARGIN = 40


def pink_texture(size: int, seed: int) -> np.ndarray:
    """A (size, size) float32 texture with a 1/f amplitude spectrum, zero mean and unit variance."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = 1.0
    texture = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) / radius)).astype(np.float32)
    return (texture - texture.mean()) / texture.std()


def best_added_disc(texture: np.ndarray, shot_px: float, reference_px: float) -> float:
    """The diameter (px) of the disc that, applied to `texture` blurred by a `reference_px` disc, best gives it
    blurred by a `shot_px` one."""
    def blur(x: np.ndarray, d: float) -> np.ndarray:
        return cv2.filter2D(x, -1, disc_psf(d), borderType=cv2.BORDER_REFLECT)

    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    shot, reference = blur(texture, shot_px), blur(texture, reference_px)
    grid = np.arange(0.5, 1.0001, 0.01) * shot_px
    errors = [np.mean(((blur(reference, a) - shot) ** 2)[inner]) for a in grid]
    return float(grid[int(np.argmin(errors))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=whole(128), default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    texture = pink_texture(args.size, args.seed)
    print("| shot disc D px | f/N | reference f/N_ref | best added disc / D | quadrature |")
    print("|---:|---|---|---:|---:|")
    for d in DIAMETERS:
        for n, n_ref in CASES:
            a = best_added_disc(texture, d, d * n / n_ref)
            print(f"| {d:g} | f/{n:g} | f/{n_ref:g} | {a / d:.2f} | {np.sqrt(1 - (n / n_ref) ** 2):.3f} |", flush=True)


if __name__ == "__main__":
    main()
