"""What a sub-pixel misregistration between a real shot and its reference costs a model's measured gain.

A held-out VABD scene's f/16 reference is rendered at its real stack's apertures (calibrate_renderer's render: depth
map, focal mask, the scene's own k fitted to its real shots, no noise), so the blur is the renderer's and the
reference is exact. The render is then displaced by a smooth random field (a Gaussian-smoothed noise of 24 px, scaled
to an RMS length of `--rms` px; cubic resampling), as a real pair left by one rigid fit is, and each model
(`--model NAME=FILE`, raw output, no gate) deblurs it. Prints per f-number and displacement: the input's PSNR
against the reference, each model's gain in the detail band (`eval --detail-band 16`) and in all bands.

    python tools/misregistration_cost.py --scene 0001 --k 16.6 --model w16=FOLD/run/model.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from calibrate_renderer import prepare, psnr, render, stacks  # same folder

from defocuskit.api import load


def displaced(img: np.ndarray, rms: float, seed: int = 1) -> np.ndarray:
    """`img` resampled by a smooth random field of RMS length `rms` px (0: unchanged)."""
    if rms == 0:
        return img
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    field = np.stack([cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 24) for _ in range(2)])
    field *= rms / np.sqrt(np.mean(np.sum(field ** 2, axis=0)))
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(img, gx + field[0], gy + field[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/real")
    ap.add_argument("--scene", default="0001", help="the VABD scene (its fold's models have not seen it)")
    ap.add_argument("--k", type=float, required=True, help="px at f/1 (calibrate_renderer --size SIZE, the scene's)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", action="append", required=True, help="NAME=model.safetensors")
    ap.add_argument("--rms", default="0,0.2,0.35,0.5", help="RMS displacements, px")
    ap.add_argument("--detail-band", type=float, default=16.0)
    args = ap.parse_args()
    (stack,) = [s for s in stacks(args.fixtures) if s["name"] == f"VABD {args.scene}"]
    prep = prepare(stack, args.size)
    ref = prep["ref"]
    models = {name: load(path, device="cpu") for name, path in (m.split("=", 1) for m in args.model)}
    print("| f/N | displacement RMS px | input dB | " + " | ".join(f"{n}: detail, all bands" for n in models) + " |")
    print("|---|---:|---:|" + "---|" * len(models))
    for n in prep["shots"]:
        clean = render(prep, args.k, n)
        for rms in (float(x) for x in args.rms.split(",")):
            x = displaced(clean, rms)
            cells = []
            for model in models.values():
                out = model.deblur(x, focus_gate=0)
                cells.append(f"{psnr(out, ref, args.detail_band) - psnr(x, ref, args.detail_band):+.2f}, "
                             f"{psnr(out, ref) - psnr(x, ref):+.2f}")
            print(f"| {n:g} | {rms:g} | {psnr(x, ref):.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
