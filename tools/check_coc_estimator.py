"""How well a CoC source estimates the circle of confusion: its maps against the truth, by f-number.

    python tools/check_coc_estimator.py MODEL.safetensors SHARDS [--split test] [--limit N] [--device cpu] [--bins]
    python tools/check_coc_estimator.py --coc edge SHARDS [--split test] [--limit N]
    python tools/check_coc_estimator.py --coc edge --real DIR [--split train] [--ids 0002,0003] [--size 512]

The source is `defocuskit.inference.coc_source.CocSource`, as `--coc map` (a defocus-map model file, tiles of the
training size) or `--coc edge` (training-free: imaging.blur_estimate) use it at evaluation, with the f-number bound
of the model (its `inference.coc_bound`) or of `--coc-bound K` (0: none) applied at each image's f-number.

Synthetic shards: every pair of the split that has a coc.png. Printed per f-number and for all: n, the mean
true CoC and the mean estimate (pixels of diameter), the mean absolute error (pixels, over all pixels of all
images), the mean over images of the per-image Pearson correlation between estimate and truth (what a
depth-varying blur model needs; a constant map scores 0), and the seconds per image. `--bins` adds, per f-number,
the mean estimate over the pixels of each bin of true CoC (BIN_EDGES): where the map reads too much blur, which
the deconvolving methods turn into ringing. The maps drive Wiener,
prox, FFDNet's level map and HIDD's physics data consistency, so an estimator near 0 correlation leaves them
all at their input.

Real photographs (`--real DIR`, a dataset root with `{split}/...`): VABD-style `{input,8,2_8,1_8,depth,focal}/NNNN.*`
(the f-number is the folder name, `_` read as `.`) or EBB-style `{input,target,depth,focal}/NNNN.*` (target is
f/1.8). The reference CoC, known only up to scale, is |signed_relative_coc(decode_depth(depth), "relative",
focus_value(depth value, focal mask))| (imaging/depth.py: thin lens, c proportional to 1/s - 1/d); so only the
per-image Pearson correlation is printed (no MAE), with the estimate made on the blurred shot at a working size
(`--size`, the longer side) to which depth and mask are resized too.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tool_args import whole

from defocuskit.inference.coc_source import CocError, CocSource
from defocuskit.io.images import read_image, to_float

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")
VABD_APERTURES = ("8", "2_8", "1_8")
BIN_EDGES = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, float("inf"))  # true CoC, pixels of diameter
EBB_F_NUMBER = 1.8


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; 0 where either is constant."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def real_shots(root: Path, split: str, ids: set[str] | None) -> Iterator[tuple[str, float, Path, Path, Path]]:
    """(stem, f-number, blurred shot, depth, focal mask) of a VABD- or EBB-style split folder."""
    base = root / split
    folders = [(f, float(f.replace("_", "."))) for f in VABD_APERTURES if (base / f).is_dir()]
    if not folders and (base / "target").is_dir():
        folders = [("target", EBB_F_NUMBER)]
    if not folders or not (base / "depth").is_dir() or not (base / "focal").is_dir():
        raise SystemExit(f"{base}: expected {{{','.join(VABD_APERTURES)}}}/ or target/, and depth/ and focal/")
    for depth in sorted((base / "depth").iterdir()):
        stem = depth.stem
        focal = _find(base / "focal", stem)
        if (ids is not None and stem not in ids) or focal is None:
            continue
        for folder, f_number in folders:
            shot = _find(base / folder, stem)
            if shot is not None:
                yield stem, f_number, shot, depth, focal


def reference_coc(depth_path: Path, focal_path: Path, size: tuple[int, int]) -> np.ndarray:
    """|CoC| up to scale at the working size from a false-colour relative depth map and the focal-plane mask."""
    from defocuskit.imaging.depth import decode_depth, focus_value, signed_relative_coc

    value = decode_depth(read_image(depth_path), name=str(depth_path))
    value = _resize(value, size)
    mask = read_image(focal_path)
    mask = _resize(mask[..., 0] if mask.ndim == 3 else mask, size, nearest=True)
    return np.abs(signed_relative_coc(value, "relative", focus_value(value, mask)))


def check_real(source: CocSource, args: argparse.Namespace) -> None:
    ids = set(args.ids.split(",")) if args.ids else None
    rows: dict[float | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for stem, f_number, shot, depth, focal in real_shots(args.real, args.split, ids):
        image = to_float(read_image(shot))
        h, w = image.shape[:2]
        scale = args.size / max(h, w)
        size = (round(w * scale), round(h * scale))
        image = _resize(image, size)
        ref = reference_coc(depth, focal, size)
        started = time.perf_counter()
        pred = source(image, {"f_number": f_number}, name=f"{stem}@f/{f_number:g}")
        seconds = time.perf_counter() - started
        r = correlation(pred, ref)
        print(f"{args.split}/{stem} f/{f_number:g}: correlation {r:+.3f} ({seconds:.2f} s)")
        for key in (f_number, None):
            rows[key]["corr"].append(r)
            rows[key]["seconds"].append(seconds)
    if not rows:
        raise SystemExit(f"{args.real}/{args.split}: no shot with depth and focal mask")
    print(f"\nsource: {source.describe()['description']}")
    print(f"data: {args.real}, split {args.split}, ids {args.ids or 'all'}, "
          f"working size {args.size} px (longer side)\n")
    print("| f-number | n | correlation per image (mean) | min | s / image |")
    print("|---|---:|---:|---:|---:|")
    for key in sorted(k for k in rows if k is not None) + [None]:
        r = rows[key]
        label = "all" if key is None else f"f/{key:g}"
        print(f"| {label} | {len(r['corr'])} | {np.mean(r['corr']):+.2f} | {np.min(r['corr']):+.2f} | "
              f"{np.mean(r['seconds']):.2f} |")


def check_shards(source: CocSource, args: argparse.Namespace) -> None:
    from defocuskit.data.reader import iter_samples

    rows: dict[float | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    bins: dict[tuple[float | None, int], np.ndarray] = defaultdict(lambda: np.zeros(3))  # pixels, sum true, sum est.
    n = 0
    for sample in iter_samples(args.shards, args.split):
        if sample["blur"] is None or sample["coc"] is None:
            continue
        if args.limit is not None and n >= args.limit:
            break
        n += 1
        started = time.perf_counter()
        pred = source(to_float(sample["blur"]), sample["meta"], name=sample["key"])
        seconds = time.perf_counter() - started
        true = sample["coc"]
        which = np.digitize(true, BIN_EDGES[1:-1])
        for b in np.unique(which):
            inside = which == b
            bins[(sample["meta"].get("f_number"), int(b))] += (inside.sum(), true[inside].sum(), pred[inside].sum())
        for key in (sample["meta"].get("f_number"), None):
            row = rows[key]
            row["true"].append(float(true.mean()))
            row["pred"].append(float(pred.mean()))
            row["abs"].append(float(np.abs(pred - true).sum()))
            row["pixels"].append(float(true.size))
            row["corr"].append(correlation(pred, true))
            row["seconds"].append(seconds)
    if n == 0:
        raise SystemExit(f"{args.shards}: no {args.split} pair with a coc.png")
    print(f"source: {source.describe()['description']}")
    print(f"data: {args.shards}, split {args.split}, {n} images with coc.png\n")
    print("| f-number | n | true CoC mean (px) | estimate mean (px) | MAE (px) | correlation per image | s / image |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in sorted(k for k in rows if k is not None) + [None]:
        r = rows[key]
        label = "all" if key is None else f"f/{key:g}"
        mae = sum(r["abs"]) / sum(r["pixels"])
        print(f"| {label} | {len(r['true'])} | {np.mean(r['true']):.2f} | {np.mean(r['pred']):.2f} | {mae:.2f} | "
              f"{np.mean(r['corr']):+.2f} | {np.mean(r['seconds']):.2f} |")
    if args.bins:
        print("\n| f-number | true CoC bin (px) | pixels | true mean | estimate mean |")
        print("|---|---|---:|---:|---:|")
        for f_number, b in sorted(bins, key=lambda fb: (fb[0] or 0.0, fb[1])):
            pixels, true_sum, est_sum = bins[(f_number, b)]
            label = "?" if f_number is None else f"f/{f_number:g}"
            print(f"| {label} | {BIN_EDGES[b]:g}-{BIN_EDGES[b + 1]:g} | {int(pixels)} | {true_sum / pixels:.2f} | "
                  f"{est_sum / pixels:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="*", metavar="PATH",
                        help="--coc map: MODEL and SHARDS (MODEL alone with --real); "
                        "--coc edge: SHARDS (none with --real)")
    parser.add_argument("--coc", choices=("map", "edge"), default="map")
    parser.add_argument("--real", type=Path, default=None, help="real photographs with depth/ and focal/ (see above)")
    parser.add_argument("--ids", default=None, help="--real: comma-separated file stems (default: all)")
    parser.add_argument("--size", type=whole(16), default=512, help="--real: working size, the longer side in pixels")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=whole(1), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bins", action="store_true", help="shards: mean estimate per bin of true CoC, by f-number")
    parser.add_argument("--coc-bound", type=float, default=None,
                        help="K of the f-number bound, as `eval --coc-bound` (0: none); default: the model's own")
    args = parser.parse_args()
    wanted = (1 if args.coc == "map" else 0) + (0 if args.real else 1)
    if len(args.paths) != wanted:
        parser.error(f"--coc {args.coc}{' --real' if args.real else ''} takes {wanted} path(s): "
                     + ("MODEL " if args.coc == "map" else "") + ("" if args.real else "SHARDS"))
    model = args.paths[0] if args.coc == "map" else None
    args.shards = None if args.real else args.paths[-1]
    try:
        source = CocSource.create(args.coc, model, args.device, args.coc_bound)
    except CocError as exc:
        raise SystemExit(str(exc)) from None
    assert source is not None
    try:
        if args.real is not None:
            check_real(source, args)
        else:
            check_shards(source, args)
    except FileNotFoundError as exc:  # no such shard folder or split, no real photographs: one line
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
