"""Seconds per 1536x1024 SSIM (uniform7, the evaluation default): defocuskit's against scikit-image's, side by side.

    python tools/bench_ssim.py [--repeat 8] [--size 1024x1536]

A random smooth colour image and a noisy copy (float64 in [0, 1]); the two implementations alternate, --repeat
times; printed: the fastest and the median of each, and their difference in value.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from defocuskit.eval import metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--size", default="1024x1536", help="HxW")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    x = cv2.GaussianBlur(rng.random((height, width, 3)), (5, 5), 1.0)
    y = np.clip(x + rng.normal(0.0, 0.05, x.shape), 0.0, 1.0)
    runs = {
        "defocuskit.eval.metrics.ssim": lambda: metrics.ssim(x, y),
        "skimage structural_similarity": lambda: structural_similarity(x, y, channel_axis=-1, data_range=1.0),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    values: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            values[name] = float(run())
            times[name].append(time.perf_counter() - start)
    from bench_eval_tiles import machine

    print(f"machine: {machine()}")
    print(f"{width}x{height}x3 float64 pair, {args.repeat} alternating runs\n")
    print("| SSIM uniform7 | fastest (s) | median (s) | value |")
    print("|---|---:|---:|---|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.3f} | {statistics.median(ts):.3f} | {values[name]:.15f} |")


if __name__ == "__main__":
    main()
