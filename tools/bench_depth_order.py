"""The forward model against the renderer, and the proximal step, with a signed and an unsigned CoC.

    python tools/bench_depth_order.py [--size 128] [--f-numbers 1.4 2.8 8] [--scenes N]

For every built-in scene (data/render.py; variants focus on the subject, an object or the background,
so some are focused behind a foreground) and f-number: the noise-free render y = R(x) in linear light,
then, away from a border of the largest CoC,

- forward PSNR: K_c x against y for the `over` operator with the signed CoC, with |CoC| (the depth order
  guessed as "larger is farther"), and the `scatter` model;
- prox gain: PSNR(prox(y_noisy), x) - PSNR(y_noisy, x) in sRGB, prox = argmin ||K_c x - y||^2 + 0.2 ||x - y||^2
  (30 CG steps, the `prox` baseline), signed against unsigned.

Scenes are split into "front focus" (under 1 % of the image in front of the focal plane) and "back focus".
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from defocuskit.data.render import builtin_scene, builtin_scene_names, render_stack
from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-20)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--f-numbers", type=float, nargs="+", default=[1.4, 2.8, 8.0])
    parser.add_argument("--scenes", type=int, default=None, help="only the first N built-in scenes")
    parser.add_argument("--compositing", default="normalise", choices=["normalise", "extend"],
                        help="the renderer's scheme; the operator reproduces 'normalise' exactly")
    args = parser.parse_args()
    names = builtin_scene_names()[: args.scenes]
    rows: dict[tuple[str, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    t0 = time.time()
    for name in names:
        scene = builtin_scene(name, args.size, 0)
        clean = render_stack(scene, args.f_numbers, noise=None, n_layers=16, compositing=args.compositing)
        noisy = render_stack(scene, args.f_numbers, n_layers=16, compositing=args.compositing)
        x = torch.from_numpy(scene.rgb).permute(2, 0, 1)[None]
        in_front = float((scene.depth_m < 0.98 * scene.focus_distance_m).mean())
        kind = "back focus" if in_front > 0.01 else "front focus"
        for n in args.f_numbers:
            y, coc = clean["shots"][float(n)]
            m = int(np.ceil(np.abs(coc).max() / 2)) + 1
            inner = (slice(m, -m), slice(m, -m))
            row = rows[(kind, n)]
            ops = {"signed": DefocusOperator(torch.from_numpy(coc)[None, None], n_levels=16),
                   "unsigned": DefocusOperator(torch.from_numpy(np.abs(coc))[None, None], n_levels=16),
                   "scatter": DefocusOperator(torch.from_numpy(np.abs(coc))[None, None], "scatter", 16)}
            for label, op in ops.items():
                out = op.forward(x)[0].permute(1, 2, 0).numpy()
                row[f"fwd {label}"].append(psnr(out[inner], y[inner]))
            y_noisy = torch.from_numpy(noisy["shots"][float(n)][0]).permute(2, 0, 1)[None]
            sharp = linear_to_srgb(x)[0].permute(1, 2, 0).numpy()
            base = psnr(linear_to_srgb(y_noisy)[0].permute(1, 2, 0).numpy()[inner], sharp[inner])
            for label in ("signed", "unsigned"):
                out = linear_to_srgb(ops[label].prox(y_noisy, y_noisy, 0.2, 30))[0].permute(1, 2, 0).numpy()
                row[f"prox {label}"].append(psnr(out[inner], sharp[inner]) - base)
    print(f"{len(names)} scenes at {args.size} px, {time.time() - t0:.0f} s\n")
    cols = ["fwd signed", "fwd unsigned", "fwd scatter", "prox signed", "prox unsigned"]
    print("| focus | f-number | n | forward PSNR: signed | unsigned | scatter | prox gain: signed | unsigned |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (kind, n), row in sorted(rows.items()):
        cells = " | ".join(f"{np.mean(row[c]):.1f}" if c.startswith("fwd") else f"{np.mean(row[c]):+.2f}" for c in cols)
        print(f"| {kind} | f/{n:g} | {len(row['fwd signed'])} | {cells} |")


if __name__ == "__main__":
    main()
