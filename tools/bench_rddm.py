"""Seconds per image of RDDM inference (default 1680x1120, 2 DDIM steps), full frame and/or tiled.

    python tools/bench_rddm.py [--device cuda] [--checkpoint runs/rddm/model.safetensors]
                               [--size 1680x1120] [--steps 2] [--mode both|full|tiled] [--tile 320] [--batch 4]

Without --checkpoint the paper-size network of recipes/rddm.yaml is built with random weights
(speed does not depend on the weights). "full" runs the whole frame through method.restore at once
(the networks pad internally); "tiled" runs defocuskit.inference.restore.restore_image, as `defocuskit deblur`
does, with tiles of the training crop size. Each mode runs once after a small warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from defocuskit.inference.restore import resolve_sampler, restore_image
from defocuskit.inference.tiling import TilingOptions
from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.recipes import load_recipe


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/rddm.yaml"))
    parser.add_argument("--size", default="1680x1120", help="WIDTHxHEIGHT")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--mode", choices=["both", "full", "tiled"], default="both")
    parser.add_argument("--tile", type=int, default=None, help="default: the recipe's crop size")
    parser.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    args = parser.parse_args()

    if args.checkpoint is not None:
        from defocuskit.inference.load import load_model

        method, recipe, model = load_model(args.checkpoint, args.device, expect_method="rddm")
    else:
        recipe = load_recipe(args.recipe)
        method = get_method(recipe.method)
        torch.manual_seed(0)
        model = method.build(recipe.model, recipe.objective, False).to(args.device).eval()
    sampler = resolve_sampler(recipe, args.steps)
    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    blur = torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).to(args.device)
    params = sum(p.numel() for p in model.parameters())
    print(f"rddm: {params / 1e6:.2f} M parameters, {width}x{height}, {args.steps} steps, device {args.device}")

    with torch.no_grad():  # warm-up (allocator, kernels) on a small input
        method.restore(model, blur[..., :128, :128], RestoreContext(sampler, recipe.objective))
    _sync(args.device)
    if args.mode in ("both", "full"):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = method.restore(model, blur, RestoreContext(sampler, recipe.objective, torch.Generator(args.device).manual_seed(0)))
        _sync(args.device)
        print(f"full frame: {time.perf_counter() - t0:.2f} s/image (output {tuple(out.shape)})")
        if args.device.startswith("cuda"):
            print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.mode in ("both", "tiled"):
        tile = args.tile or recipe.data.image_size
        t0 = time.perf_counter()
        restore_image(method, recipe, model, image, sampler_cfg=sampler,
                      device=args.device, progress=False, tiling=TilingOptions(tile=tile, batch=args.batch))
        _sync(args.device)
        print(f"tiled ({tile} px tiles, batch {args.batch}): {time.perf_counter() - t0:.2f} s/image")


if __name__ == "__main__":
    main()
