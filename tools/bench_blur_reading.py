"""How wide a photo's blur reads (`data.image_scale.blur_px`, what `--work-side auto` uses) against the disc it was
blurred by: each photo at `--side` px on its long side, blurred in linear light by discs of `--discs` px, its 90th
percentile of the training-free edge estimate read once at the estimator's working size and by `blur_px` (read again
at half the size while the width nears the estimator's reach).

    python tools/bench_blur_reading.py ../shared/fixtures/real/VABD/train/input/0001.JPG [--discs 0,8,16,32,48,64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", type=Path, nargs="+")
    ap.add_argument("--side", type=int, default=768)
    ap.add_argument("--discs", default="0,8,16,32,48,64")
    args = ap.parse_args(argv)

    from defocuskit.data.image_scale import BLUR_PERCENTILE, blur_px
    from defocuskit.imaging.blur_estimate import estimate_coc
    from defocuskit.imaging.optics import disc_psf
    from defocuskit.io.images import linear_to_srgb, read_image, srgb_to_linear, to_float

    discs = [float(d) for d in args.discs.split(",")]
    print("photo | " + " | ".join(f"c = {d:g}: once / re-read" for d in discs))
    for path in args.photos:
        image = to_float(read_image(path))[..., :3]
        h, w = image.shape[:2]
        f = args.side / max(h, w)
        image = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        cells = []
        for c in discs:
            linear = srgb_to_linear(np.clip(image, 0.0, 1.0))
            if c > 1:  # a defocus disc, in linear light
                linear = cv2.filter2D(linear, -1, disc_psf(c), borderType=cv2.BORDER_REFLECT)
            blurred = linear_to_srgb(linear).astype(np.float32)
            once = float(np.percentile(estimate_coc(blurred), BLUR_PERCENTILE))
            cells.append(f"{once:.1f} / {blur_px(blurred):.1f}")
        print(f"{path} | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
