"""`eval --align` (ECC) on pairs already on the reference's grid and on pairs moved by a known warp: the fit alone
(as before) beside the fit with the identity as a candidate (now), PSNR change over scoring the output as produced.

    python tools/bench_eval_align.py [--fixtures ../shared/fixtures/real] [--sides 64,128,256] [--count 8]

Each fixture photograph (the first `--count` images under the fixtures, references and shots alike) is reduced to
the long side given and rounded to 8 bits as the reference; the "output" is its Gaussian blur (sigma 1 px), either
on the reference's grid or first moved by a rotation of 0.3 deg and a shift of (d, d / 2) px. A registration that
only serves the scoring should leave an on-grid output as it is (0 dB) and recover the moved ones' loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tool_args import whole, whole_list

from defocuskit.data.register import RegistrationError, align
from defocuskit.eval import metrics

REPO = Path(__file__).resolve().parents[1]


def _photos(root: Path, count: int) -> list[Path]:
    found = [p for p in sorted(root.rglob("*")) if p.suffix.lower() in (".jpg", ".png")
             and not {"depth", "focal"} & set(p.parts)]
    return found[:count]


def _u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


def _case(path: Path, side: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.imread(str(path))[..., ::-1].astype(np.float64) / 255.0
    s = side / max(img.shape[:2])
    ref = _u8(cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA))
    moved = ref
    if shift:
        m = cv2.getRotationMatrix2D((ref.shape[1] / 2, ref.shape[0] / 2), 0.3, 1.0)
        m[:, 2] += (shift, shift / 2)
        moved = cv2.warpAffine(ref, m, (ref.shape[1], ref.shape[0]), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT)
    return _u8(cv2.GaussianBlur(moved, (0, 0), 1.0)), ref


def _gain(out: np.ndarray, ref: np.ndarray, keep_identity: bool) -> float | str:
    try:
        moved, record = align(out, ref, method="ecc", motion="affine", keep_identity=keep_identity)
    except RegistrationError as exc:
        return f"refused ({exc.reason.split('(')[0].strip()})"
    scored = out if "identity" in record else np.asarray(moved, np.float64)
    return metrics.psnr(scored, ref) - metrics.psnr(out, ref)


def _cell(values: list[float | str]) -> str:
    nums = [v for v in values if isinstance(v, float)]
    failed = len(values) - len(nums)
    text = f"{np.median(nums):+.3f} ({min(nums):+.3f}, {max(nums):+.3f})" if nums else "-"
    return text + (f", {failed} refused" if failed else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "real")
    ap.add_argument("--sides", type=whole_list(16), default="64,128,256")
    ap.add_argument("--count", type=whole(1), default=8)
    args = ap.parse_args()
    photos = _photos(args.fixtures, args.count)
    if not photos:
        raise SystemExit(f"error: no .jpg or .png photographs under {args.fixtures}")
    print(f"{len(photos)} photographs; PSNR change (dB) over the output as produced: median (min, max)\n")
    print("| side px | output | fit alone (before) | fit or identity (now) |")
    print("|---:|---|---:|---:|")
    for side in (int(s) for s in args.sides.split(",")):
        for shift in (0.0, 0.5, 1.0, 3.0):
            cases = [_case(p, side, shift) for p in photos]
            before = [_gain(o, r, False) for o, r in cases]
            now = [_gain(o, r, True) for o, r in cases]
            what = "on the grid" if not shift else f"moved {shift:g} px, 0.3 deg"
            print(f"| {side} | {what} | {_cell(before)} | {_cell(now)} |")


if __name__ == "__main__":
    main()
