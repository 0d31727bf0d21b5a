"""Does the thin-lens proximal step deblur real shots when its CoC map is the best this project has: the one the
fixtures' depth maps and focal masks give, scaled by each stack's calibrated k? (Beside the edge estimate.)

    python tools/prox_depth_coc.py --shards 0001=FOLD1/test-shards --shards 0002=FOLD2/test-shards ...

FOLD/test-shards are `tools/loso_real.py`'s held-out real VABD shots (`ingest --vabd`, 512 px, registered and
gain-matched). The map: |c| = k x long side x relative CoC (imaging.depth: thin lens on the shipped depth map, focus
at the depth under the focal mask), added in quadrature to the f/16 reference's own (data.sources.render.added_coc),
signed; k per stack is the one `tools/calibrate_renderer.py --size 512` fitted on that stack's own shots
(docs/benchmarks.md, "Renderer calibration": an oracle-like scale, not a blind estimate). Prints the prox gain (dB
over the shot) with that map, with half of it, and with `--coc edge`'s map, per shot.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_renderer import depth_coc, stacks  # noqa: E402
from tool_folders import vabd_shards_problem, vabd_shots  # noqa: E402

from defocuskit.eval.baselines import prox_baseline  # noqa: E402
from defocuskit.eval.metrics import psnr  # noqa: E402
from defocuskit.imaging.blur_estimate import estimate_coc  # noqa: E402

K_AT_512 = {"0001": 0.0324, "0002": 0.0669, "0003": 0.0110}  # k / long side, calibrate_renderer.py --size 512
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", action="append", required=True, metavar="ID=DIR", help="a VABD fold's test shards")
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    args = ap.parse_args()
    by_name = {s["name"]: s for s in stacks(args.fixtures)}
    for item in args.shards:  # every fold checked before the first is scored
        problem = vabd_shards_problem(item, K_AT_512, set(by_name))
        if problem is not None:
            ap.error(f"argument --shards: {problem}")
    print("| stack | f/N | shot dB | mean abs CoC px | prox, depth map | prox, half of it | prox, edge map |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for stack_id, stack, sample, blur, sharp, f_number in vabd_shots(args.shards, by_name):
        coc = depth_coc(stack, blur.shape[:2], K_AT_512[stack_id], f_number)
        base = psnr(blur, sharp)
        gains = [psnr(prox_baseline(blur, sample["meta"], m), sharp) - base
                 for m in (coc, 0.5 * coc, estimate_coc(blur))]
        print(f"| VABD {stack_id} | f/{f_number:g} | {base:.2f} | {np.abs(coc).mean():.2f} | "
              + " | ".join(f"{g:+.2f}" for g in gains) + " |", flush=True)


if __name__ == "__main__":
    main()
