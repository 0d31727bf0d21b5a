"""CPU inference seconds of each whole-image method, NCHW input against channels-last input, side by side.

    python tools/bench_channels_last.py [--size 512x768] [--repeat 2] [--threads 2] [RECIPE ...]

Each recipe's network is built with random weights (seed 0; every parameter then perturbed by N(0, 0.02) so
that zero-initialised residual scales do not hide the difference) and run by
`defocuskit.inference.restore.restore_image` on one random image of --size (whole image, default tiling), once with
`channels_last=False` and once with `channels_last=True`, alternating, --repeat times; the fastest run of each
is printed, with the largest absolute difference between the two outputs. Methods that need a CoC map get a
smooth random one. This decides `Method.channels_last` (True where the channels-last column is faster).
The default recipes leave out the paper-size RDDM (minutes per pass on a CPU); name it to include it.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from defocuskit.inference.restore import restore_image
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

DEFAULT_RECIPES = ("nafnet-tiny", "nafnet", "rddm-tiny", "jdrl-tiny", "jdrl", "dncnn-tiny", "dncnn",
                   "ffdnet-tiny", "ffdnet", "cyclegan-tiny", "cyclegan")


def bench(name: str, height: int, width: int, repeat: int) -> tuple[str, float, float, float, bool]:
    """(recipe, NCHW s, channels-last s, max |difference|, the method's current setting)."""
    recipe = load_recipe(name)
    method = get_method(recipe.method)
    torch.manual_seed(0)
    model = method.build(recipe.model, recipe.objective, False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.random((height, width, 3), dtype=np.float32), (0, 0), 2.0)
    coc = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32) * 8, (0, 0), 16.0)
    best: dict[bool, float] = {}
    outs: dict[bool, np.ndarray] = {}
    for _ in range(repeat):
        for cl in (False, True):
            start = time.perf_counter()
            outs[cl] = restore_image(method, recipe, model, image, coc=coc, progress=False, channels_last=cl)
            best[cl] = min(best.get(cl, float("inf")), time.perf_counter() - start)
    diff = float(np.abs(outs[True] - outs[False]).max())
    return name, best[False], best[True], diff, method.channels_last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", default=list(DEFAULT_RECIPES))
    parser.add_argument("--size", default="512x768", help="HxW of the image")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    from bench_eval_tiles import machine  # the same machine line as the other inference benchmark

    print(f"machine: {machine()}")
    print(f"one {width}x{height} image per recipe, whole-image restore_image, fastest of {args.repeat}\n")
    print("| recipe | NCHW (s) | channels-last (s) | speed-up | max abs diff | Method.channels_last |")
    print("|---|---|---|---|---|---|")
    for name in args.recipes:
        name, nchw, cl, diff, setting = bench(name, height, width, args.repeat)
        print(f"| {name} | {nchw:.3f} | {cl:.3f} | {nchw / cl:.2f}x | {diff:.1e} | {setting} |", flush=True)


if __name__ == "__main__":
    main()
