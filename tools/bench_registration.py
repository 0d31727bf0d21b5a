"""Registration quality on the real aperture stacks: raw ECC correlation vs the blur-aware score.

Prints a Markdown table (pair, raw correlation, blur-aware score, consistency, displaced share, matched
blur, seconds for the score) for the 9 VABD pairs, the 6 EBB pairs and negative cases: swapped scenes
(registered with ECC affine as ingest does; when ECC fails, the score of the unregistered pair is shown)
and moved subjects (a 40 px shift of a person-sized region, a block of the reference pasted elsewhere).

    python tools/bench_registration.py [--fixtures ../shared/fixtures/real]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from defocuskit.data.register import (
    RegistrationError,
    _conjugate,
    _gray,
    _resize,
    _scale_matrix,
    _warp,
    align,
    registration_quality,
)
from defocuskit.io.images import read_image, to_float

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
VABD_SCENES, VABD_APERTURES = ("0001", "0002", "0003"), ("8", "2_8", "1_8")
EBB_PAIRS = (("train", "2977"), ("train", "2978"), ("train", "2979"), ("test", "4545"), ("test", "4546"),
             ("test", "4547"))
EBB_SWAPS = ((EBB_PAIRS[0], EBB_PAIRS[1]), (EBB_PAIRS[3], EBB_PAIRS[4]), (EBB_PAIRS[4], EBB_PAIRS[5]))
BUST = (100, 1024, 700, 1300)  # VABD 0003: the bust and its pedestal (rows, columns at full size)


def load(path: Path) -> np.ndarray:
    return to_float(read_image(path))


def moved_region(shot: np.ndarray, box: tuple[int, int, int, int], dx: int) -> np.ndarray:
    """`shot` with the region `box` (y0, y1, x0, x1) copied `dx` px to the right (a moved subject)."""
    y0, y1, x0, x1 = box
    out = shot.copy()
    out[y0:y1, x0 + dx:x1 + dx] = shot[y0:y1, x0:x1]
    return out


def pasted_block(shot: np.ndarray, reference: np.ndarray, size: int = 512) -> np.ndarray:
    """`shot` with a size x size block of the reference (top right) pasted at its lower left."""
    out = shot.copy()
    out[450:450 + size, 100:100 + size] = reference[100:100 + size, 900:900 + size]
    return out


def unregistered_quality(moving: np.ndarray, reference: np.ndarray, max_side: int = 1024) -> float:
    """The blur-aware score of a pair taken as it is (identity warp), at align's working resolution."""
    scale = min(1.0, max_side / max(reference.shape[:2]))
    return registration_quality(_resize(_gray(reference), scale), _resize(_gray(moving), scale))["score"]


def row(name: str, moving: np.ndarray, reference: np.ndarray) -> str:
    try:
        _, rec = align(moving, reference)
    except RegistrationError as exc:
        score = unregistered_quality(moving, reference)
        return f"| {name} | ECC fails ({exc.reason.split(' (')[0]}) | {score:.3f} (unregistered) | | | | |"
    # time the score alone, on the working-resolution images align judges it on
    h, w = reference.shape[:2]
    scale = min(1.0, 1024 / max(h, w))
    ref_w, mov_w = _resize(_gray(reference), scale), _resize(_gray(moving), scale)
    warp, size = _conjugate(np.array(rec["matrix"]), _scale_matrix(scale)), (ref_w.shape[1], ref_w.shape[0])
    t0 = time.perf_counter()
    registration_quality(ref_w, _warp(mov_w, warp, size), _warp(np.ones_like(mov_w), warp, size, cv2.BORDER_CONSTANT))
    dt = time.perf_counter() - t0
    displaced = "-" if rec["displaced"] is None else f"{rec['displaced']:.3f}"
    blur = rec["matched_blur_px"]
    return (f"| {name} | {rec['raw_score']:.3f} | {rec['score']:.3f} | {rec['consistency']:.3f} | {displaced} | "
            f"{blur[0]:.1f} / {blur[1]:.1f} | {dt:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=ROOT)
    root = parser.parse_args().fixtures
    vabd, ebb = root / "VABD" / "train", root / "EBB"
    print("| pair | raw correlation | blur-aware score | consistency | displaced | matched blur px (median / p90) "
          "| score s |")
    print("|---|---|---|---|---|---|---|")
    for scene in VABD_SCENES:
        ref = load(vabd / "input" / f"{scene}.JPG")
        for folder in VABD_APERTURES:
            print(row(f"VABD {scene} f/{folder.replace('_', '.')}", load(vabd / folder / f"{scene}.JPG"), ref))
    for split, stem in EBB_PAIRS:
        print(row(f"EBB {split}/{stem} f/1.8", load(ebb / split / "target" / f"{stem}.jpg"),
                  load(ebb / split / "input" / f"{stem}.jpg")))
    for a, b in (("0001", "0002"), ("0002", "0003"), ("0003", "0001")):
        print(row(f"swapped: VABD {a} f/1.8 vs {b} ref", load(vabd / "1_8" / f"{a}.JPG"),
                  load(vabd / "input" / f"{b}.JPG")))
    for (sa, a), (sb, b) in EBB_SWAPS:
        print(row(f"swapped: EBB {a} f/1.8 vs {b} ref", load(ebb / sa / "target" / f"{a}.jpg"),
                  load(ebb / sb / "input" / f"{b}.jpg")))
    for scene in VABD_SCENES:
        ref, shot = load(vabd / "input" / f"{scene}.JPG"), load(vabd / "1_8" / f"{scene}.JPG")
        print(row(f"pasted 512 px block: VABD {scene} f/1.8", pasted_block(shot, ref), ref))
    ref, shot = load(vabd / "input" / "0003.JPG"), load(vabd / "1_8" / "0003.JPG")
    for dx in (40, 20):
        print(row(f"moved subject: VABD 0003 f/1.8, bust shifted {dx} px", moved_region(shot, BUST, dx), ref))


if __name__ == "__main__":
    main()
