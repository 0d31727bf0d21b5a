"""Why the thin-lens proximal step loses at small CoC: its settings side by side, and the same step on a noise-free
re-blur of the reference (K x, the operator's own blur of the sharp side) and scored in linear light.

    python tools/prox_noise.py SHARDS --split test --coc oracle
    python tools/prox_noise.py SHARDS --split test --coc map --coc-model runs/defocus-map/model.safetensors
    python tools/prox_noise.py SHARDS --coc oracle --per-image f5_6,f8

Prints, per f-number, the mean PSNR gain over the input (sRGB, the evaluator's metric on clipped floats) of the prox
baseline (eval/baselines.prox_baseline: argmin ||K_c x - y||^2 + rho ||x - y||^2, CG steps) for rho 0.2 (the
baseline's), 0.5 and 1, 5 and 2 CG steps and the Gaussian kernel, each without the weighing against the image's own
noise (imaging/noise.py; `prox-plain`), and the disc and Gaussian steps with it (`prox`, `prox-gaussian`); then the
Wiener baseline without and with it (`wiener-plain`, `wiener`), with each variant's seconds per image. With `--coc oracle` also: prox-plain's gain scored in linear light, and its gain on the
noise-free K x in place of the shot (what the step recovers when the operator and the CoC are exactly right and
nothing else is in y). The CoC is signed where the shard records a sign,
as the evaluator passes it. `--per-image` lists each sample whose key holds one of the comma-separated parts.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from defocuskit.data.reader import iter_samples, signed_coc
from defocuskit.eval.baselines import PROX_CG_STEPS, PROX_RHO, prox_baseline, wiener_baseline
from defocuskit.eval.metrics import psnr, to_unit
from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb, srgb_to_linear
from defocuskit.inference.coc_source import CocSource

VARIANTS = (("prox-plain (rho 0.2, 30 steps)", PROX_RHO, PROX_CG_STEPS, "disc", False),
            ("prox (the same, weighed against the noise)", PROX_RHO, PROX_CG_STEPS, "disc", True),
            ("rho 0.5", 0.5, PROX_CG_STEPS, "disc", False), ("rho 1", 1.0, PROX_CG_STEPS, "disc", False),
            ("5 CG steps", PROX_RHO, 5, "disc", False), ("2 CG steps", PROX_RHO, 2, "disc", False),
            ("Gaussian kernel", PROX_RHO, PROX_CG_STEPS, "gaussian", False),
            ("Gaussian kernel, weighed against the noise", PROX_RHO, PROX_CG_STEPS, "gaussian", True),
            ("wiener-plain (the Wiener baseline before)", None, None, None, False),
            ("wiener (weighed against the noise)", None, None, None, True))


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None]


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].numpy().transpose(1, 2, 0).clip(0.0, 1.0)


def oracle_checks(blur: np.ndarray, sharp: np.ndarray, coc: np.ndarray) -> tuple[float, float]:
    """(prox-plain's gain in linear light, its sRGB gain on the noise-free re-blur K x of the reference)."""
    op = DefocusOperator(torch.from_numpy(np.ascontiguousarray(coc, np.float32))[None, None])
    y, x = srgb_to_linear(_chw(blur)), srgb_to_linear(_chw(sharp))
    out = op.prox(y, y, PROX_RHO, PROX_CG_STEPS)
    linear = psnr(_hwc(out), _hwc(x)) - psnr(_hwc(y), _hwc(x))
    clean = op.forward(x)
    clean_out = op.prox(clean, clean, PROX_RHO, PROX_CG_STEPS)
    noise_free = psnr(_hwc(linear_to_srgb(clean_out)), sharp) - psnr(_hwc(linear_to_srgb(clean)), sharp)
    return linear, noise_free


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards")
    ap.add_argument("--split", default="test")
    ap.add_argument("--coc", default="oracle", choices=("oracle", "map", "edge"))
    ap.add_argument("--coc-model", default=None)
    ap.add_argument("--per-image", default="", help="comma-separated key parts: list those samples one by one")
    args = ap.parse_args()
    source = CocSource.create(args.coc, args.coc_model)
    parts = [p for p in args.per_image.split(",") if p]
    columns = [v[0] for v in VARIANTS] + (["linear light", "noise-free K x"] if args.coc == "oracle" else [])
    gains: dict[str, dict[float | str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, list[float]] = defaultdict(list)
    for sample in iter_samples(args.shards, args.split):
        if sample["blur"] is None or sample["sharp"] is None:
            continue
        blur, sharp, meta = to_unit(sample["blur"]), to_unit(sample["sharp"]), sample["meta"]
        coc = source(blur, meta, signed_coc(sample), name=sample["key"])
        base = psnr(blur, sharp)
        row = []
        for name, rho, steps, psf, noise in VARIANTS:
            start = time.perf_counter()
            out = (wiener_baseline(blur, meta, coc, noise=noise) if rho is None
                   else prox_baseline(blur, meta, coc, psf, rho, steps, noise))
            seconds[name].append(time.perf_counter() - start)
            row.append(psnr(out.clip(0, 1), sharp) - base)
        if args.coc == "oracle":
            row += list(oracle_checks(blur, sharp, coc))
        for name, gain in zip(columns, row):
            gains[name][meta["f_number"]].append(gain)
            gains[name]["all"].append(gain)
        if any(p in sample["key"] for p in parts):
            print(f"{sample['key']}: input {base:.2f} dB; " + ", ".join(f"{n} {g:+.2f}" for n, g in zip(columns, row)))
    if not gains:
        raise SystemExit(f"{args.shards}: no pair with blur.png and sharp.png in split '{args.split}'")
    keys = sorted(k for k in gains[columns[0]] if k != "all") + ["all"]
    print(f"\n| {args.coc} CoC: gain dB | " + " | ".join(f"f/{k:g}" if k != "all" else "all" for k in keys)
          + " | s / image |")
    print("|---|" + "---:|" * len(keys) + "---:|")
    for name in columns:
        cost = f"{np.mean(seconds[name]):.2f}" if name in seconds else "-"
        print(f"| {name} | " + " | ".join(f"{np.mean(gains[name][k]):+.2f}" for k in keys) + f" | {cost} |")


if __name__ == "__main__":
    main()
