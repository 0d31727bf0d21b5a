"""How well a defocus-map model estimates the circle of confusion: its maps against the shards' coc.png, by f-number.

    python tools/check_coc_estimator.py MODEL.safetensors SHARDS [--split test] [--limit N] [--device cpu]

Every pair of the split that has a coc.png goes through the model by `defocuskit.inference.coc_source.CocSource`, the
source that `--coc map` uses at evaluation (tiles of the training size). Printed per f-number and for all: n, the
mean true CoC and the mean estimate (pixels of diameter), the mean absolute error (pixels, over all pixels of
all images) and the mean over images of the per-image Pearson correlation between estimate and truth (what a
depth-varying blur model needs; a constant map scores 0). The maps drive Wiener, prox, FFDNet's level map and
HIDD's physics data consistency, so an estimator near 0 correlation leaves them all at their input.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from defocuskit.data.reader import iter_samples
from defocuskit.inference.coc_source import CocError, CocSource
from defocuskit.io.images import to_float


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 0 where either is constant."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("shards", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        source = CocSource.create("map", args.model, args.device)
    except CocError as exc:
        raise SystemExit(str(exc)) from None
    assert source is not None
    rows: dict[float | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    n = 0
    for sample in iter_samples(args.shards, args.split):
        if sample["blur"] is None or sample["coc"] is None:
            continue
        if args.limit is not None and n >= args.limit:
            break
        n += 1
        pred = source(to_float(sample["blur"]), name=sample["key"])
        true = sample["coc"]
        for key in (sample["meta"].get("f_number"), None):
            row = rows[key]
            row["true"].append(float(true.mean()))
            row["pred"].append(float(pred.mean()))
            row["abs"].append(float(np.abs(pred - true).sum()))
            row["pixels"].append(float(true.size))
            row["corr"].append(correlation(pred, true))
    if n == 0:
        raise SystemExit(f"{args.shards}: no {args.split} pair with a coc.png")
    print(f"model: {args.model}")
    print(f"data: {args.shards}, split {args.split}, {n} images with coc.png\n")
    print("| f-number | n | true CoC mean (px) | estimate mean (px) | MAE (px) | correlation per image |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in sorted((k for k in rows if k is not None)) + [None]:
        r = rows[key]
        label = "all" if key is None else f"f/{key:g}"
        mae = sum(r["abs"]) / sum(r["pixels"])
        print(f"| {label} | {len(r['true'])} | {np.mean(r['true']):.2f} | {np.mean(r['pred']):.2f} | {mae:.2f} | "
              f"{np.mean(r['corr']):+.2f} |")


if __name__ == "__main__":
    main()
