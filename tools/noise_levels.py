"""Noise level of real shots at the size they are evaluated at, beside renders with `ingest --render`'s sensor noise.

The estimate is Immerkaer's (1996) fast noise estimator, taken in the flattest tenth of 16 px blocks (where
texture adds little), in 8-bit units, averaged over the colour channels. Real shots: every fixture folder
(VABD: references `input/` and the f/1.8, f/2.8, f/8 shots; EBB: `input/` references and `target/` f/1.8
shots) reduced to `--test-size` (long side) as the evaluation reads them. Renders: the references reduced to
`--render-size` with the renderer's sensor noise (data/render_photo.py: Poisson-Gaussian in linear light, sRGB)
at each photon count of `--photons` (0: no noise), without blur, so that the difference to the 0 row is the
added noise.

    python tools/noise_levels.py [--fixtures ../shared/fixtures/real] [--test-size 512] [--render-size 384]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from defocuskit.data.render_photo import SensorNoise, add_noise, encode
from defocuskit.imaging.blur_estimate import IMMERKAER_MASK
from defocuskit.io.images import read_image, srgb_to_linear, to_float


def noise_sigma(image: np.ndarray, block: int = 16, share: float = 10.0) -> float:
    """Noise std (8-bit units) of a float RGB image in [0, 1]: Immerkaer's estimate in the flattest `share` % of
    `block` px blocks, mean over channels."""
    r = np.abs(np.stack([cv2.filter2D(image[..., c], -1, IMMERKAER_MASK) for c in range(3)], -1))[1:-1, 1:-1].mean(-1)
    hb, wb = r.shape[0] // block, r.shape[1] // block
    blocks = r[:hb * block, :wb * block].reshape(hb, block, wb, block).mean((1, 3)) * np.sqrt(np.pi / 2) / 6
    return 255.0 * float(np.percentile(blocks, share))


def load(path: Path, long_side: int) -> np.ndarray:
    """An image file as float RGB in [0, 1], reduced (area) to `long_side` px."""
    im = to_float(read_image(path))
    h, w = im.shape[:2]
    s = long_side / max(h, w)
    return cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real")
    ap.add_argument("--test-size", type=int, default=512)
    ap.add_argument("--render-size", type=int, default=384)
    ap.add_argument("--photons", default="0,4000,40000,400000")
    args = ap.parse_args()
    print("| images | size | noise sigma (8-bit), mean (min-max) | n |\n|---|---:|---:|---:|")
    for name, folder in (("VABD", "VABD/train"), ("EBB train", "EBB/train"), ("EBB test", "EBB/test")):
        for sub in ("input", "1_8", "2_8", "8", "target"):
            d = args.fixtures / folder / sub
            if d.is_dir():
                v = [noise_sigma(load(p, args.test_size)) for p in sorted(d.iterdir())]
                print(f"| {name} {sub} (real) | {args.test_size} | {np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f}) "
                      f"| {len(v)} |")
    refs = [p for folder in ("VABD/train", "EBB/train", "EBB/test")
            for p in sorted((args.fixtures / folder / "input").iterdir())]
    rng = np.random.default_rng(0)
    for photons in (float(p) for p in args.photons.split(",")):
        noise = SensorNoise(photons_at_white=photons) if photons > 0 else None
        v = [noise_sigma(encode(add_noise(srgb_to_linear(load(p, args.render_size)), rng, noise))) for p in refs]
        label = f"references + render noise, {photons:.0f} photons" if noise else "references, no noise"
        print(f"| {label} | {args.render_size} | {np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f}) | {len(v)} |")


if __name__ == "__main__":
    main()
