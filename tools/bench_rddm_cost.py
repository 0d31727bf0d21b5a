"""Parameter count and CPU seconds per DPDD-sized image (1120 x 1680) of the paper-size RDDM of a recipe.

    python tools/bench_rddm_cost.py [--recipe recipes/rddm.yaml] [--height 1120 --width 1680] [--threads 2]

Builds the model from the recipe with random weights (nothing is loaded or downloaded) and times
`defocuskit.inference.restore.restore_image` on one random image, as `defocuskit deblur` runs it (tiles of the
recipe's crop size, the recipe's sampler). Only APIs present in every defocuskit version since the
RDDM port are used, so the same script measures an older checkout too:
    PYTHONPATH=/path/to/old/checkout python tools/bench_rddm_cost.py --recipe /path/to/old/checkout/recipes/rddm.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from defocuskit.inference.restore import restore_image
from defocuskit.inference.tiling import TilingOptions
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe


def count(module: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/rddm.yaml"))
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--width", type=int, default=1680)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None, help="default: the recipe's crop size, as deblur")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    method = get_method(recipe.method)
    torch.manual_seed(0)
    model = method.build(recipe.model, recipe.objective, False).eval()
    parts = {name: count(child) for name, child in model.named_children()}
    trained = count(model) - parts.get("map_estimator", 0)
    image = np.random.default_rng(0).random((args.height, args.width, 3), dtype=np.float32)
    start = time.perf_counter()
    out = restore_image(method, recipe, model, image, progress=False, tiling=TilingOptions(tile=args.tile))
    seconds = time.perf_counter() - start
    assert out.shape == image.shape and np.isfinite(out).all()
    print(json.dumps({
        "recipe": str(args.recipe), "parameters": count(model), "trained_parameters": trained, "parts": parts,
        "image": [args.height, args.width], "tile": args.tile or recipe.data.image_size,
        "steps": getattr(recipe.sampler, "steps", None), "threads": args.threads, "seconds": round(seconds, 1),
    }))


if __name__ == "__main__":
    main()
