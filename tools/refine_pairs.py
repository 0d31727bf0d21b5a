"""Each real fixture pair registered as `ingest` registers it, rigid alone and with the smooth residual warp
(`ingest --refine-warp`, `data.refine`): how much closer the shot and its f/16 reference come.

For every pair of the fixtures (VABD/train 0001-0003 at f/1.8, f/2.8, f/8; EBB train + test at f/1.8): the shot is
registered onto the reference at full size (`data.register.align`, ECC affine), then refined (`data.refine.refine`,
smooth `--smooth` x the long side, bounded by `--max-shift`); both results are reduced to `--size` (INTER_AREA) and
scored against the reference passed through the shot's tone curve (calibrate_renderer.tone_curve: the shots differ
from the reference in exposure and tone, not only in blur), PSNR in all bands and in the detail band
(`--detail-band`, as `eval --detail-band`). The defocus itself keeps the shot far from its reference; what the
refinement changes is the part of that difference that is misregistration.

    python tools/refine_pairs.py [--fixtures ../shared/fixtures/real] [--size 512] [--smooth 0.047]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from calibrate_renderer import apply_tone, psnr, shrink, stacks, tone_curve  # same folder

from defocuskit.data.refine import MAX_SHIFT, refine
from defocuskit.data.register import align
from defocuskit.io.images import read_image, to_float


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/real")
    ap.add_argument("--size", type=int, default=512, help="scored at this long side (loso_real's test size)")
    ap.add_argument("--smooth", type=float, default=0.047, help="the field's Gaussian, x the long side")
    ap.add_argument("--max-shift", type=float, default=MAX_SHIFT, help="the field's bound, x the long side")
    ap.add_argument("--detail-band", type=float, default=16.0, help="px at --size (eval --detail-band)")
    args = ap.parse_args()
    t0 = time.time()
    print("| pair | f/N | field px, full size: median / 90th (0: not kept) | shared-detail correlation: rigid -> "
          "refined | PSNR dB: rigid -> refined | detail band dB: rigid -> refined |")
    print("|---|---|---|---|---|---|")
    for stack in stacks(args.fixtures):
        ref = to_float(read_image(stack["ref"]))
        small_ref = shrink(ref, args.size)
        for n, path in stack["shots"].items():
            shot = to_float(read_image(path))
            rigid, record = align(shot, ref, "ecc", "affine")
            refined, extra = refine(shot, ref, rigid, record["matrix"], args.smooth, args.max_shift)
            a, b = shrink(rigid, args.size), shrink(refined, args.size)
            target = apply_tone(small_ref, tone_curve(small_ref, a))
            (c0, c1), (m, p90) = extra["refine_corr"], extra["refined_px"]
            print(f"| {stack['name']} | {n:g} | {m:.2f} / {p90:.2f} | {c0:.3f} -> {c1:.3f} "
                  f"| {psnr(target, a):.2f} -> {psnr(target, b):.2f} "
                  f"| {psnr(target, a, args.detail_band):.2f} -> {psnr(target, b, args.detail_band):.2f} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
