"""`eval --align` on real wide-aperture shots: how far off each way of fitting the sample's warp lands, on the VABD
fixture pairs as ingest registers them and on those pairs' inputs moved by a known warp.

    python tools/bench_eval_warp.py [--fixtures ../shared/fixtures/real] [--sides 256,512]

The VABD stacks are ingested at each long side (as `defocuskit ingest --vabd DIR --max-side SIDE`, into a temporary
folder); each pair's blurred input is then moved by a rotation of 0.1 deg and a shift of (d, -d / 2) px (bicubic,
8-bit), d in 0, 0.5, 1, 2. Printed per fit: the RMS over the frame (px at that side) of the difference between the
warp it keeps and the known one (the identity for d = 0, taking the pairs as registered by ingest), median and max
over the nine pairs, and how many kept the identity. Fits: `affine` (the input's fit of the old `--align`: ECC
affine of the whole frame, or the identity where it correlates as well), `bracket` (likewise with align's tripod
motion) and `sample` (`data.sample_warp.fit_sample_warp`: the identity, the bracket and the affine fit judged on
the detail both shots hold).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from tool_args import whole_list

from defocuskit.data.reader import decode_sample, iter_raw, shard_urls
from defocuskit.data.register import RegistrationError, align
from defocuskit.data.sample_warp import fit_sample_warp
from defocuskit.eval import metrics

REPO = Path(__file__).resolve().parents[1]
MOVES = (0.0, 0.5, 1.0, 2.0)


def _pairs(vabd: Path, side: int, work: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    out = work / f"vabd{side}"
    run_ingest({"vabd": vabd}, IngestOptions(out=str(out), workers=0, max_side=side), progress=False)
    pairs = []
    for url in shard_urls(out, "train"):
        for raw in iter_raw(url):
            s = decode_sample(raw)
            if s.get("blur") is not None:
                pairs.append((metrics.to_unit(s["blur"]), metrics.to_unit(s["sharp"])))
    return pairs


def _known(shape: tuple[int, ...], d: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((shape[1] / 2, shape[0] / 2), 0.1 if d else 0.0, 1.0)
    m[:, 2] += (d, -d / 2)
    return m


def _moved(inp: np.ndarray, known: np.ndarray) -> np.ndarray:
    """`inp` moved so that moved(known x) = inp(x): the fit's matrix (reference -> moving) should be `known`."""
    out = cv2.warpAffine(inp.astype(np.float32), known, (inp.shape[1], inp.shape[0]), flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REFLECT)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0) / 255.0


def _rms(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    ys, xs = np.mgrid[0:shape[0]:8, 0:shape[1]:8]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return float(np.sqrt((((a[:2] - b[:2]) @ pts) ** 2).sum(0).mean()))


def _fit(kind: str, moving: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, bool]:
    """(matrix kept, whether it is the identity)."""
    if kind == "sample":
        rec = fit_sample_warp(moving, ref)
        return np.asarray(rec["matrix"]), rec["motion"] == "identity"
    try:
        _, rec = align(moving, ref, method="ecc", motion=kind, keep_identity=True)
    except RegistrationError:
        return np.eye(3)[:2], True
    return np.asarray(rec["matrix"])[:2], "identity" in rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "real")
    ap.add_argument("--sides", type=whole_list(64), default="256,512")
    args = ap.parse_args()
    if not (args.fixtures / "VABD").is_dir():
        raise SystemExit(f"error: no VABD folder under {args.fixtures}")
    print("| side px | input moved by | affine: median / max px, identity kept | bracket | sample (now) |")
    print("|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-eval-warp-") as work:
        for side in (int(s) for s in args.sides.split(",")):
            pairs = _pairs(args.fixtures / "VABD", side, Path(work))
            for d in MOVES:
                cells = []
                for kind in ("affine", "bracket", "sample"):
                    errs, kept = [], 0
                    for inp, ref in pairs:
                        known = _known(ref.shape, d)
                        m, ident = _fit(kind, _moved(inp, known) if d else inp, ref)
                        errs.append(_rms(m, known, ref.shape))
                        kept += ident
                    cells.append(f"{np.median(errs):.2f} / {max(errs):.2f}, {kept}/{len(pairs)}")
                what = "nothing (as ingested)" if not d else f"{d:g} px, 0.1 deg"
                print(f"| {side} | {what} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
