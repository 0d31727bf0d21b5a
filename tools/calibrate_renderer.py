"""Calibrate the thin-lens renderer on real aperture stacks: render(f/16 reference, depth, f/N) against the real f/N.

For every stack of the real fixtures (VABD/train 0001-0003 at f/1.8, f/2.8, f/8; EBB train + test at f/1.8)
at a working size (`--size`, long side):

1. the real f/N shot is registered onto the f/16 reference (`data.register.align`, ECC affine at full size,
   as `ingest --vabd/--ebb` does) and reduced to the working size (INTER_AREA). Photometry: the shots differ
   from the reference by more than an exposure gain (VABD's f/1.8 shots are 2-4x brighter in the shadows
   but under 2x in the mid-tones: the camera's tone curve and exposure differ), so a per-channel monotone
   tone curve T, from the reference's sRGB to the shot's, is fitted on the two images smoothed (Gaussian,
   2 % of the long side: blur does not move local means; mean shot value in 32 bins of the reference
   value, made non-decreasing, through (0, 0) and (1, 1)) and applied to the
   REFERENCE side, to the reference and to the render alike (the camera's curve acts after the optics);
2. the depth map (Spectral false colour, relative: larger = farther) is decoded, the focus is the median depth
   under the focal mask, and c = `signed_relative_coc` is the CoC up to one scale;
3. the reference is rendered exactly as `ingest --render` renders a photo, without noise: sRGB -> linear,
   highlights restored, `render_coc` with the CoC added in quadrature to the reference's own
   (k * c * sqrt(1/N^2 - 1/16^2)), clipped, sRGB;
4. one scale k per stack (CoC px at f/1 per unit of c, at the working size), shared by all of its apertures
   because CoC ~ 1/N, maximises the mean PSNR (sRGB, a margin cropped) of render vs real shot: a log grid,
   then golden-section search;
5. leave-one-out: each stack rendered with k = the median of the OTHER stacks' fitted k (as a fraction of the
   long side), so that figure is not tuned on the stack itself;
6. for the VABD stacks also k fitted on each aperture alone: equal k at every aperture is what CoC ~ 1/N says.

Prints one row per stack and aperture: PSNR(reference vs shot), PSNR(render vs shot) at the stack's own k and
at the leave-one-out k, the fitted k; then the median k fraction (the `--render` default).

`--detail-band PX` adds a second table in the detail band of `eval --detail-band` (each image's low-pass, a
Gaussian of PX, replaced by the other's: photometry and glare left out, the score symmetric): reference vs shot (the
detail a deblurrer starts from), render vs shot at the stack's own k and at a k fitted in the band, the render vs
the reference (the detail the modelled defocus alone takes away), and the share of the shot's detail error (MSE
against the reference) that the render explains, 1 - MSE(render, shot) / MSE(reference, shot).

`--refine-warp S` registers each shot as `ingest --refine-warp S` does (the rigid fit refined by a smooth residual warp
where both shots share detail), so misregistration counts less as unexplained blur.

    python tools/calibrate_renderer.py [--fixtures ../shared/fixtures/real] [--size 384] [--detail-band 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from tool_args import choice_list, finite, whole

from defocuskit.data.refine import refine
from defocuskit.data.register import align, match_gain
from defocuskit.data.render_photo import encode, render_shot, restore_highlights
from defocuskit.data.sources.render import added_coc
from defocuskit.eval.metrics import detail_band
from defocuskit.imaging.depth import decode_depth, focus_value, signed_relative_coc
from defocuskit.imaging.optics import PSF_SAMPLINGS
from defocuskit.io.images import read_image, srgb_to_linear, to_float

REF_F_NUMBER = 16.0
VABD_APERTURES = {"1_8": 1.8, "2_8": 2.8, "8": 8.0}
MARGIN = 0.04  # share of each side left out of the PSNR (registration borders)
K_RANGE = (0.002, 0.3)  # k / long side searched


def stacks(root: Path) -> list[dict]:
    """Every stack of the fixtures: name, reference, depth, focal mask, {f_number: shot}; SystemExit (one line) where
    `root` holds none (a table of no stack, and nan, is no measurement)."""
    found = []
    vabd = root / "VABD" / "train"
    for ref in sorted((vabd / "input").glob("*.JPG")):
        s = ref.stem
        found.append({"name": f"VABD {s}", "ref": ref, "depth": vabd / "depth" / f"{s}.png",
                      "focal": vabd / "focal" / f"{s}.png",
                      "shots": {n: vabd / folder / f"{s}.JPG" for folder, n in VABD_APERTURES.items()}})
    for split in ("train", "test"):
        ebb = root / "EBB" / split
        for ref in sorted((ebb / "input").glob("*.jpg")):
            s = ref.stem
            found.append({"name": f"EBB {split}/{s}", "ref": ref, "depth": ebb / "depth" / f"{s}.png",
                          "focal": ebb / "focal" / f"{s}.jpg", "shots": {1.8: ebb / "target" / f"{s}.jpg"}})
    if not found:
        raise SystemExit(f"error: {root}: no fixture stacks (VABD/train/input/*.JPG, EBB/{{train,test}}/input/*.jpg); "
                         "give --fixtures")
    return found


def depth_coc(stack: dict, shape: tuple[int, int], k: float, f_number: float) -> np.ndarray:
    """The signed CoC (px) at f/N that a stack's depth map and focal mask give on an image of `shape`, with CoC scale
    `k` (x the long side), the f/16 reference's own blur taken off in quadrature (render.added_coc)."""
    h, w = shape
    values = decode_depth(read_image(stack["depth"]), "auto", name=str(stack["depth"]))
    values = cv2.resize(values, (w, h), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(to_float(read_image(stack["focal"])).mean(axis=2), (w, h)) > 0.5
    unit = signed_relative_coc(values, "relative", focus_value(values, mask)) * k * max(h, w)
    return added_coc(unit, f_number, 16.0)


def shrink(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    scale = size / max(h, w)
    return cv2.resize(a, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def prepare(stack: dict, size: int, refine_warp: float = 0.0) -> dict:
    """Registered, gain-matched shots and the reference at the working size; the relative CoC map. With
    `refine_warp` > 0 each shot's rigid fit is refined as `ingest --refine-warp` refines it."""
    ref = to_float(read_image(stack["ref"]))
    shots = {}
    for n, path in stack["shots"].items():
        shot = to_float(read_image(path))
        warped, record = align(shot, ref, "ecc", "affine")
        if refine_warp > 0:
            warped = refine(shot, ref, warped, record["matrix"], refine_warp)[0]
        small = shrink(warped, size)
        shots[n] = {"image": small, "tone": tone_curve(shrink(ref, size), small),
                    "exposure": 1.0 / match_gain(warped, ref)[1], "score": record["score"],
                    "shift": float(np.hypot(record["matrix"][0][2], record["matrix"][1][2]))}
    values = decode_depth(read_image(stack["depth"]), "auto", name=str(stack["depth"]))
    mask = to_float(read_image(stack["focal"])).mean(axis=2) > 0.5
    c = signed_relative_coc(values, "relative", focus_value(values, mask))
    small_ref = shrink(ref, size)
    c = cv2.resize(c, (small_ref.shape[1], small_ref.shape[0]), interpolation=cv2.INTER_AREA)
    return {"ref": small_ref, "linear": srgb_to_linear(small_ref), "c": c, "shots": shots}


def mse(a: np.ndarray, b: np.ndarray, band: float = 0.0) -> float:
    """Mean squared error with a margin left out; in the detail band of `band` px when it is > 0."""
    if band > 0:
        a = detail_band(a, b, band)
    h, w = a.shape[:2]
    my, mx = int(MARGIN * h), int(MARGIN * w)
    return float(np.mean((a[my:h - my, mx:w - mx].astype(np.float64) - b[my:h - my, mx:w - mx]) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, band: float = 0.0) -> float:
    return float(10.0 * np.log10(1.0 / max(mse(a, b, band), 1e-12)))


def tone_curve(ref: np.ndarray, shot: np.ndarray, bins: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per channel, a monotone map ref -> shot: the mean of the smoothed shot in bins of the smoothed reference
    (least squares, the images being registered), made non-decreasing."""
    sigma = 0.02 * max(ref.shape[:2])
    a, b = cv2.GaussianBlur(ref, (0, 0), sigma), cv2.GaussianBlur(shot, (0, 0), sigma)
    curves = []
    for ch in range(3):
        x, y = a[..., ch].ravel(), b[..., ch].ravel()
        idx = np.clip((x * bins).astype(int), 0, bins - 1)
        count = np.bincount(idx, minlength=bins)
        keep = count >= 20
        xs = (np.bincount(idx, x, bins)[keep] / count[keep])
        ys = np.maximum.accumulate(np.bincount(idx, y, bins)[keep] / count[keep])
        # black stays black and white white: the sharp images reach beyond the smoothed range
        curves.append((np.concatenate([[0.0], xs, [1.0]]), np.concatenate([[0.0], ys, [1.0]])))
    return curves


def apply_tone(img: np.ndarray, curves: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.stack([np.interp(img[..., ch], *curves[ch]) for ch in range(3)], axis=2).astype(np.float32)


def render(prep: dict, k: float, f_number: float, highlights: float = 8.0, psf: str = "area") -> np.ndarray:
    coc = added_coc(k * prep["c"], f_number, REF_F_NUMBER)  # as ingest --render renders it
    return encode(render_shot(prep["linear"], restore_highlights(prep["linear"], gain=highlights), coc, psf=psf))


def score(prep: dict, k: float, highlights: float = 8.0, band: float = 0.0, psf: str = "area") -> dict[float, float]:
    return {n: psnr(apply_tone(render(prep, k, n, highlights, psf), s["tone"]), s["image"], band)
            for n, s in prep["shots"].items()}


def baseline(prep: dict, shot: dict) -> float:
    """PSNR of the reference itself (through the shot's tone curve) against the shot."""
    return psnr(apply_tone(prep["ref"], shot["tone"]), shot["image"])


def fit_k(prep: dict, long_side: int, grid: int = 10, iters: int = 10, band: float = 0.0, psf: str = "area") -> float:
    """The k (px at f/1) maximising the mean PSNR over the stack's apertures (in the detail band of `band` px when
    it is > 0): log grid, then golden section."""
    def loss(logk: float) -> float:
        return -float(np.mean(list(score(prep, float(np.exp(logk)), band=band, psf=psf).values())))

    lo, hi = np.log(K_RANGE[0] * long_side), np.log(K_RANGE[1] * long_side)
    xs = np.linspace(lo, hi, grid)
    ys = [loss(x) for x in xs]
    i = int(np.argmin(ys))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    g = (np.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = loss(x1), loss(x2)
    for _ in range(iters):
        if f1 < f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = loss(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = loss(x2)
    return float(np.exp(x1 if f1 < f2 else x2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/real")
    parser.add_argument("--size", type=whole(16), default=384, help="working size: the long side in pixels")
    parser.add_argument("--detail-band", type=finite(), default=0.0, metavar="PX",
                        help="also score in the detail band of this Gaussian (px at the working size); 0: off")
    parser.add_argument("--refine-warp", type=finite(0.0, high=0.5), default=0.0, metavar="S",
                        help="register each shot as `ingest --refine-warp S` does (the rigid fit, then a smooth "
                             "residual warp); 0: the rigid fit alone")
    parser.add_argument("--psf", type=choice_list(PSF_SAMPLINGS), default="area",
                        help="the detail table once per disc sampling of this list (optics.disc_psf: area, band); "
                        "the first table always with area")
    args = parser.parse_args()
    if args.detail_band < 0:
        parser.error(f"--detail-band: expected 0 (off) or a positive number of pixels, got {args.detail_band:g}")
    t0 = time.time()
    preps, fitted = {}, {}
    for stack in stacks(args.fixtures):
        prep = prepare(stack, args.size, args.refine_warp)
        preps[stack["name"]] = prep
        fitted[stack["name"]] = fit_k(prep, args.size) / args.size
        print(f"  {stack['name']}: k = {fitted[stack['name']] * args.size:.1f} px ({time.time() - t0:.0f} s)", flush=True)
    print(f"\nworking size {args.size} px (long side), reference f/{REF_F_NUMBER:g}\n")
    print("| stack | f/N | shot: exposure vs ref, ECC translation px (full size) | ref vs shot dB | render vs shot dB (own k) "
          "| render vs shot dB (leave-one-out k) | no highlight restoration (own k) | k px (k / long side) "
          "| leave-one-out k px | k px fitted on this aperture alone |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"ref": [], "own": [], "loo": [], "nohl": []}
    for name, prep in preps.items():
        k = fitted[name] * args.size
        k_loo = float(np.median([v for n, v in fitted.items() if n != name])) * args.size
        own, loo, nohl = score(prep, k), score(prep, k_loo), score(prep, k, highlights=1.0)
        for n, shot in prep["shots"].items():
            alone = fit_k({**prep, "shots": {n: shot}}, args.size) if len(prep["shots"]) > 1 else k
            base = baseline(prep, shot)
            for key, v in (("ref", base), ("own", own[n]), ("loo", loo[n]), ("nohl", nohl[n])):
                totals[key].append(v)
            print(f"| {name} | {n:g} | {shot['exposure']:.2f}, {shot['shift']:.1f} | {base:.2f} | {own[n]:.2f} "
                  f"| {loo[n]:.2f} | {nohl[n]:.2f} | {k:.1f} ({fitted[name]:.4f}) | {k_loo:.1f} | {alone:.1f} |")
    means = {key: float(np.mean(v)) for key, v in totals.items()}
    print(f"| mean of {len(totals['ref'])} shots | | | {means['ref']:.2f} | {means['own']:.2f} | {means['loo']:.2f} "
          f"| {means['nohl']:.2f} | | | |")
    print(f"\nmedian k / long side: {np.median(list(fitted.values())):.4f}; {time.time() - t0:.0f} s")
    if args.detail_band > 0:
        for psf in args.psf.split(","):
            print(f"\nthe disc sampled as {psf!r}")
            detail_table(preps, fitted, args.size, args.detail_band, psf)
            print(f"{time.time() - t0:.0f} s")


def detail_table(preps: dict, fitted: dict, size: int, band: float, psf: str = "area") -> None:
    """The second table of `--detail-band`: how much of the shots' detail error the modelled defocus explains."""
    print(f"\ndetail band: low-pass (Gaussian of {band:g} px) replaced by the other image's\n")
    print("| stack | f/N | ref vs shot dB | render vs shot dB (own k) | render vs shot dB (k fitted in the band) "
          "| k px fitted in the band | render vs ref dB | share of the shot's detail error the render explains |")
    print("|---|---|---|---|---|---|---|---|")
    for name, prep in preps.items():
        k_band = fit_k(prep, size, band=band, psf=psf)
        own = score(prep, fitted[name] * size, band=band, psf=psf)
        for n, shot in prep["shots"].items():
            ref = apply_tone(prep["ref"], shot["tone"])
            rendered = apply_tone(render(prep, k_band, n, psf=psf), shot["tone"])
            share = 1.0 - mse(rendered, shot["image"], band) / mse(ref, shot["image"], band)
            print(f"| {name} | {n:g} | {psnr(ref, shot['image'], band):.2f} | {own[n]:.2f} "
                  f"| {psnr(rendered, shot['image'], band):.2f} "
                  f"| {k_band:.1f} | {psnr(rendered, ref, band):.2f} | {share:+.2f} |")


if __name__ == "__main__":
    main()
