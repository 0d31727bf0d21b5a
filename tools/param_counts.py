"""Print the parameter counts of the paper-size RDDM parts, the defocus-map estimator, NAFNet and Restormer.

    python tools/param_counts.py [--recipes recipes]

Builds each network from its recipe (random weights, nothing loaded) and counts parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe


def count(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def build(recipe_path: Path) -> nn.Module:
    recipe = load_recipe(recipe_path)
    return get_method(recipe.method).build(recipe.model, recipe.objective, False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", type=Path, default=Path("recipes"), help="folder with rddm.yaml, nafnet.yaml, defocus-map.yaml")
    args = parser.parse_args()
    rddm = build(args.recipes / "rddm.yaml")
    rows = [
        ("RDDM pre-deblur (released NAFNetModified: w32, [1,1,1,6], DCNv4 on 3 levels)", count(rddm.pre_deblur)),
        ("RDDM semantic encoder: ResNet-50 stem + stages 1-3", count(rddm.semantic)),
        ("RDDM denoiser (released NAFNetFusionModifiedcat: w64, [1,1,1,14], RDD blocks)", count(rddm.denoiser)),
        ("RDDM defocus-map estimator (SegFormer MiT-b1 shape, 2 outputs, frozen)", count(rddm.map_estimator)),
        ("RDDM total (pre-deblur + semantic encoder + denoiser + estimator)", count(rddm)),
        ("RDDM trained in recipes/rddm.yaml (all but the estimator)", count(rddm) - count(rddm.map_estimator)),
        ("defocus-map estimator (recipes/defocus-map.yaml)", count(build(args.recipes / "defocus-map.yaml"))),
        ("NAFNet baseline (recipes/nafnet.yaml, width 64)", count(build(args.recipes / "nafnet.yaml"))),
        ("Restormer (recipes/restormer.yaml, single-image defocus)", count(build(args.recipes / "restormer.yaml"))),
    ]
    width = max(len(name) for name, _ in rows)
    for name, n in rows:
        print(f"{name:<{width}}  {n:>12,}  ({n / 1e6:.2f} M)")


if __name__ == "__main__":
    main()
