"""What JDRL's flow warp does to the target of a pixel-aligned pair: random crops of a shard folder's pairs, the
reference warped onto the blurred crop's grid by DIS flow (stage 1 of the loss, objective.warp=always) against the
reference itself, per f-number (medians over the crops):

    python tools/bench_jdrl_warp.py SHARDS [--crop 96] [--crops 4] [--preset medium]

Columns: PSNR of the warped target against the reference; PSNR of the blurred crop against the reference and
against the warped target; fine detail kept (energy of the luminance Laplacian, warped target / reference, and
blurred crop / reference). On rendered pairs the reference is the exact target, so whatever the warp changes is
taken from what the model is taught.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.eval.metrics import psnr, to_unit  # noqa: E402
from defocuskit.imaging.flow import backward_warp, estimate_flow  # noqa: E402


def detail(x: np.ndarray) -> float:
    """Energy of the Laplacian of the luminance of a (C, H, W) image."""
    return float(np.mean(cv2.Laplacian(x.mean(0).astype(np.float32), cv2.CV_32F) ** 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--crops", type=int, default=4, help="random crops per pair")
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows: dict[float, list[tuple[float, ...]]] = defaultdict(list)
    for sample in iter_samples(args.shards, args.split):
        if sample.get("blur") is None or sample["meta"].get("f_number") is None:
            continue
        blur = to_unit(sample["blur"]).astype(np.float32).transpose(2, 0, 1)
        sharp = to_unit(sample["sharp"]).astype(np.float32).transpose(2, 0, 1)
        h, w = blur.shape[1:]
        for _ in range(args.crops):
            y, x = int(rng.integers(0, h - args.crop + 1)), int(rng.integers(0, w - args.crop + 1))
            b = torch.from_numpy(np.ascontiguousarray(blur[:, y:y + args.crop, x:x + args.crop]))[None]
            s = torch.from_numpy(np.ascontiguousarray(sharp[:, y:y + args.crop, x:x + args.crop]))[None]
            t = backward_warp(s, estimate_flow(b, s, args.preset))[0].numpy()
            bb, ss = b[0].numpy(), s[0].numpy()
            ref = max(detail(ss), 1e-12)
            rows[float(sample["meta"]["f_number"])].append(
                (psnr(t, ss), psnr(bb, ss), psnr(bb, t), detail(t) / ref, detail(bb) / ref))
    print("| f-number | crops | warped target vs reference dB | blurred vs reference dB | blurred vs warped target dB "
          "| fine detail kept: warped target | blurred |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for f, r in sorted(rows.items()):
        med = np.median(np.array(r), 0)
        print(f"| f/{f:g} | {len(r)} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[4]:.2f} |")


if __name__ == "__main__":
    main()
