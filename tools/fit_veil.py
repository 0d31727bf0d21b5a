"""Veiling glare of the real stacks: how much stray light separates a real wide-open shot from its thin-lens render.

For every stack of the real fixtures (`calibrate_renderer.stacks`) at a working size (`--size`, long side):
the shot is registered onto the f/16 reference and its exposure matched with one gain in linear light, exactly
as `ingest --vabd/--ebb` pair them (no tone curve: what is left is what a model trained on such pairs sees);
the reference is rendered as `ingest --render` does (k, the CoC scale, fitted per stack by
`calibrate_renderer.fit_k`), then with the veiling glare of `render_photo.add_veil`, a share
v = V / N^2 - V / 16^2 of the light spread evenly. V (the share at f/1) is fitted per stack on all of its
apertures (grid, max mean sRGB PSNR against the gain-matched shots). Glare is the lens's and the camera's, so V is
taken per camera: the median over that camera's `--tune` stacks (VABD 0001 for the VABD camera, the EBB train
stacks for EBB's) is what its other stacks are scored with, so their figures are not tuned on themselves.

Prints one row per shot: PSNR of reference, render without glare, render with the stack's own V and with its
camera's V, against the gain-matched shot; the stack's V; the means over the shots not tuned on, per camera.

    python tools/fit_veil.py [--fixtures ../shared/fixtures/real] [--size 384] [--tune "VABD 0001" ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from calibrate_renderer import REF_F_NUMBER, fit_k, prepare, psnr, shrink, stacks
from tool_args import whole

from defocuskit.data.register import align, match_gain
from defocuskit.data.render_photo import add_veil, added_veil, encode, render_shot, restore_highlights
from defocuskit.data.sources.render import added_coc
from defocuskit.io.images import read_image, to_float

V_GRID = np.round(np.arange(0.0, 1.01, 0.025), 3)


def gain_matched(stack: dict, size: int) -> dict[float, np.ndarray]:
    """Each shot registered and gain-matched onto the reference as ingest pairs them, at the working size."""
    ref = to_float(read_image(stack["ref"]))
    out = {}
    for n, path in stack["shots"].items():
        warped, _ = align(to_float(read_image(path)), ref, "ecc", "affine")
        out[n] = shrink(match_gain(warped, ref)[0], size)
    return out


def renders(prep: dict, k: float, f_numbers: list[float]) -> dict[float, np.ndarray]:
    """The reference rendered at each f-number as `ingest --render` does, linear light, before any glare."""
    restored = restore_highlights(prep["linear"])
    return {n: render_shot(prep["linear"], restored, added_coc(k * prep["c"], n, REF_F_NUMBER)) for n in f_numbers}


def veiled(shot: np.ndarray, f_number: float, veil_at_f1: float) -> np.ndarray:
    """A linear render with the glare of V = `veil_at_f1` beyond the reference's own, in sRGB."""
    return encode(add_veil(shot, added_veil(veil_at_f1, f_number, REF_F_NUMBER)))


def fit_v(rendered: dict[float, np.ndarray], shots: dict[float, np.ndarray]) -> float:
    """The V maximising the stack's mean PSNR over its apertures."""
    scores = [np.mean([psnr(veiled(rendered[n], n, v), s) for n, s in shots.items()]) for v in V_GRID]
    return float(V_GRID[int(np.argmax(scores))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/real")
    parser.add_argument("--size", type=whole(16), default=384, help="working size: the long side in pixels")
    parser.add_argument("--tune", action="append", default=[],
                        help="a stack the camera's V is fitted on (repeatable; default: VABD 0001 for the VABD "
                             "camera, the EBB train stacks for EBB's)")
    args = parser.parse_args()
    t0 = time.time()
    found = {}
    every = stacks(args.fixtures)
    names = [stack["name"] for stack in every]
    tune = args.tune or ["VABD 0001", *(n for n in names if n.startswith("EBB train/"))]
    missing = [t for t in tune if t not in names]
    if missing:  # before minutes of fitting every stack
        raise SystemExit(f"error: --tune: no stack named {missing[0]!r} (stacks: {', '.join(names)})")
    for stack in every:
        prep = prepare(stack, args.size)
        k = fit_k(prep, args.size)
        shots = gain_matched(stack, args.size)
        rendered = renders(prep, k, list(shots))
        found[stack["name"]] = (prep, rendered, shots, fit_v(rendered, shots))
        print(f"  {stack['name']}: k = {k:.1f} px, V = {found[stack['name']][3]:.3f} ({time.time() - t0:.0f} s)",
              flush=True)
    camera = {name: name.split()[0] for name in found}  # the fixtures' two cameras: VABD's and EBB's
    v_camera = {c: float(np.median([found[t][3] for t in tune if camera[t] == c])) for c in {camera[t] for t in tune}}
    print(f"\nworking size {args.size} px; V per camera, fitted on {', '.join(tune)}: "
          + ", ".join(f"{c} {v:.3f}" for c, v in sorted(v_camera.items())) + "\n")
    print("| stack | f/N | ref vs shot dB | render, no glare | render, own V | render, camera's V | own V |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, dict[str, list[float]]] = {}
    for name, (prep, rendered, shots, v_own) in found.items():
        v_tuned = v_camera.get(camera[name], 0.0)
        for n, shot in shots.items():
            row = {"ref": psnr(prep["ref"], shot), "none": psnr(veiled(rendered[n], n, 0.0), shot),
                   "own": psnr(veiled(rendered[n], n, v_own), shot),
                   "tuned": psnr(veiled(rendered[n], n, v_tuned), shot)}
            if name not in tune:
                for key, value in row.items():
                    totals.setdefault(camera[name], {}).setdefault(key, []).append(value)
            mark = " (tuning)" if name in tune else ""
            print(f"| {name}{mark} | {n:g} | {row['ref']:.2f} | {row['none']:.2f} | {row['own']:.2f} "
                  f"| {row['tuned']:.2f} | {v_own:.3f} |")
    for cam, cols in sorted(totals.items()):
        means = {key: float(np.mean(v)) for key, v in cols.items()}
        print(f"| {cam}: mean of the {len(cols['ref'])} other shots | | {means['ref']:.2f} | {means['none']:.2f} "
              f"| {means['own']:.2f} | {means['tuned']:.2f} | |")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
