"""How much blur each real shot adds to its f/16 reference, region by region of the thin-lens CoC its depth map gives,
beside what a defocus-map model reads there and where the proximal step gains or loses.

    python tools/blur_by_region.py --shards 0001=FOLD1/test-shards [--coc-model FOLD1/map/model.safetensors] [--prox]

FOLD/test-shards are `tools/loso_real.py`'s held-out real VABD shots (`ingest --vabd`; `--test-size 0`: their own
1536 px), registered and gain-matched. Regions: bins of the thin-lens CoC at the shot's f-number, |c| = k x long side
x relative CoC / N (imaging.depth on the shipped depth map, focus at the depth under the focal mask), k the stack's
calibrated scale (`tools/calibrate_renderer.py --size 384`, docs/benchmarks.md "Renderer calibration"). Per region:
its share of the frame and of the shot's squared error against the reference; the disc (diameter px, in linear light,
on a grid) that, applied to the reference, best matches the shot there, against the thin lens's added blur (the same
CoC with the reference's own taken off in quadrature, as `ingest --render` adds it); the median of the map model's
reading (as `eval --coc map` reads it); and with `--prox` the change of the whole shot's PSNR that the proximal step
with that map makes in that region (the regions' changes sum to its gain). 16 px margins are left out of the fits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_renderer import depth_coc, stacks  # noqa: E402
from tool_folders import vabd_shards_problem, vabd_shots  # noqa: E402

from defocuskit.imaging.lens_blur import linear_to_srgb, srgb_to_linear  # noqa: E402
from defocuskit.imaging.optics import disc_psf  # noqa: E402

K_AT_384 = {"0001": 0.0358, "0002": 0.0652, "0003": 0.0120}  # k / long side, calibrate_renderer.py --size 384
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
BIN_EDGES = (0.0, 1.0, 3.0, 6.0, 12.0, 20.0, 40.0, float("inf"))  # thin-lens CoC at f/N, px of diameter
DISCS = (0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 7, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40)
MARGIN = 16
MIN_AREA = 0.02


def best_discs(reference: np.ndarray, shot: np.ndarray, regions: list[np.ndarray]) -> list[float]:
    """For each region (bool mask), the disc diameter of DISCS whose blur of `reference` (sRGB float, blurred in
    linear light) is nearest `shot` there in mean squared error."""
    linear = srgb_to_linear(torch.from_numpy(reference)).numpy()
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    errors = []
    for d in DISCS:
        blurred = cv2.filter2D(linear, -1, disc_psf(d), borderType=cv2.BORDER_REFLECT)
        err = ((linear_to_srgb(torch.from_numpy(blurred)).numpy() - shot) ** 2).mean(-1)[inner]
        errors.append([err[r[inner]].mean() for r in regions])
    return [float(DISCS[i]) for i in np.argmin(np.array(errors), axis=0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", action="append", required=True, metavar="ID=DIR", help="a VABD fold's test shards")
    ap.add_argument("--coc-model", type=Path, default=None, help="a defocus-map model: its reading per region")
    ap.add_argument("--prox", action="store_true", help="the proximal step's change per region (needs --coc-model)")
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    args = ap.parse_args()
    if args.prox and args.coc_model is None:
        ap.error("argument --prox: needs --coc-model (the map the proximal step is driven by)")
    known = {s["name"]: s for s in stacks(args.fixtures)}
    for item in args.shards:  # every stack checked before the first is fitted
        problem = vabd_shards_problem(item, K_AT_384, set(known))
        if problem is not None:
            ap.error(f"argument --shards: {problem}")
    source = None
    if args.coc_model is not None:
        from defocuskit.inference.coc_source import CocError, CocSource

        try:
            source = CocSource.create("map", args.coc_model)
        except CocError as exc:
            ap.error(f"argument --coc-model: {exc}")
    print("| stack | f/N | thin-lens CoC px | area | error share | best added disc px | thin lens added px | map px | "
          "prox dB |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for stack_id, stack, sample, shot, reference, n in vabd_shots(args.shards, known):
        added = np.abs(depth_coc(stack, shot.shape[:2], K_AT_384[stack_id], n))  # render.added_coc's quadrature
        total = added / np.sqrt(1 - (n / 16) ** 2)  # the thin lens's whole CoC at f/N, which the regions bin
        bins = [(lo, hi, (total >= lo) & (total < hi)) for lo, hi in zip(BIN_EDGES[:-1], BIN_EDGES[1:])]
        bins = [b for b in bins if b[2].mean() >= MIN_AREA]
        err0 = ((shot - reference) ** 2).mean(-1)
        coc = source(shot, sample["meta"], name=sample["key"]) if source is not None else None
        err1 = None
        if args.prox:
            from defocuskit.eval.baselines import prox_baseline

            err1 = ((prox_baseline(shot, sample["meta"], coc=coc) - reference) ** 2).mean(-1)
        discs = best_discs(reference, shot, [b[2] for b in bins])
        for (lo, hi, region), disc in zip(bins, discs):
            cells = [f"{np.median(coc[region]):.1f}" if coc is not None else ""]
            cells.append(f"{-10 * np.log10(1 + (err1[region].sum() - err0[region].sum()) / err0.sum()):+.3f}"
                         if err1 is not None else "")
            print(f"| VABD {stack_id} | f/{n:g} | {lo:g}-{hi:g} | {region.mean():.2f} | "
                  f"{err0[region].sum() / err0.sum():.2f} | {disc:g} | {np.median(added[region]):.1f} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
