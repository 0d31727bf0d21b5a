"""How much of a leave-one-scene-out model's gain on renders of its held-out scene carries over to the real shots.

    python tools/in_domain_gain.py LOSO_OUT [--folds 0001,0002,0003] [--k 0001:16.6,0002:34.3,0003:5.6]

For each VABD fold of a finished `tools/loso_real.py` run (FOLD/run/model.safetensors, FOLD/report and
FOLD/report-detail, the real shots' scores): the held-out scene's f/16 reference, depth map and focal mask are
rendered by `ingest --render` at the test size (`--size`, 512 as loso_real's `--test-size`) and the real stack's
apertures, at the CoC scale k fitted to that scene's own real shots (`--k`, px at f/1 at that size; the defaults are
`tools/calibrate_renderer.py --size 512`'s: a diagnostic that knows the test scene's blur, not a test), with the
veiling glare of the recipe's renders (`--veil`); once with the sensor noise on, as the training renders have it,
and once without (the gain then is deblurring alone). Each is scored as loso_real scores the real shots: the model
raw (`run`) and gated by the edge map at 3 px (`run#2`), in all bands and in the detail band (`--detail-band`).

Prints per fold, f-number and band the gain (dB over the input) on noisy renders, on quiet renders and on the real
shots side by side; what is in the renders and not carried over to the real shots is the domain gap, and what the
quiet renders' gain leaves of the input's loss is what the model cannot undo even where the blur is the renderer's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loso_real import SCENES, link, run  # same folder: its folder linking and logged command runner
from tool_args import finite, whole

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
CALIBRATED_K = "0001:16.6,0002:34.3,0003:5.6"  # calibrate_renderer --size 512, each stack's own k (px at f/1)
F_NUMBERS = "1.8,2.8,8"


def scene_folder(held: str, out: Path) -> Path:
    """The held-out VABD scene's reference, depth map and focal mask as an `ingest --render` folder."""
    root = FIXTURES / "VABD" / "train"
    for sub, src_sub in (("image", "input"), ("depth", "depth"), ("focal", "focal")):
        (src,) = list((root / src_sub).glob(f"{held}.*"))
        link(src, out / sub / f"vabd-{held}{src.suffix}")
    return out


IDENTICAL_DB = 50.0  # an input this close to its reference was not blurred at all (CoC under 1 px everywhere)


def gains(report: Path) -> dict[tuple[str, float], float | None]:
    """{(method, f-number): PSNR gain} of an eval report folder; None where the input is its reference."""
    rows = json.loads((report / "report.json").read_text())["rows"]
    return {(r["method"], r["f_number"]): None if r["psnr_input"] > IDENTICAL_DB else r["psnr_gain"]
            for r in rows if r["f_number"] is not None}


def check_folds(args: argparse.Namespace) -> dict[str, str]:
    """{fold: k} of --folds and --k; SystemExit in one line for a fold that cannot be scored, before any is: not a
    VABD scene, given twice, no k, no model, or real-shot reports without the model raw and gated (loso_real
    without --focus-gate) or without the detail band (loso_real --detail-band 0)."""
    k: dict[str, str] = {}
    for item in args.k.split(","):
        fold, _, px = item.partition(":")
        try:
            ok = float(px) > 0 and float(px) < float("inf")
        except ValueError:
            ok = False
        if not ok:
            sys.exit(f"error: --k {args.k}: {item!r} is not FOLD:PX with PX a positive number")
        k[fold] = px
    folds = args.folds.split(",")
    for held in folds:
        fold = args.loso / held
        why = ("not a VABD fold (" + ", ".join(SCENES) + ")" if held not in SCENES else
               "given twice" if folds.count(held) > 1 else f"no --k for it ({args.k})" if held not in k else
               f"no {fold / 'run' / 'model.safetensors'}" if not (fold / "run" / "model.safetensors").is_file()
               else None)
        for report in ("report", "report-detail"):
            try:
                rows = gains(fold / report) if why is None else {}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                why = f"{fold / report / 'report.json'}: {str(exc).splitlines()[0]}"
                break
            lacking = [f"{m} f/{n}" for m in ("run", "run#2") for n in F_NUMBERS.split(",")
                       if (m, float(n)) not in rows]
            if why is None and lacking:
                why = f"{fold / report / 'report.json'} has no {lacking[0]} row (a loso_real run with --focus-gate)"
                break
        if why is not None:
            sys.exit(f"error: --folds {args.folds}: {held}: {why}")
    return k


def cell(gain: float | None) -> str:
    return "n/a" if gain is None else f"{gain:+.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("loso", type=Path, help="a finished tools/loso_real.py --out folder")
    ap.add_argument("--folds", default="0001,0002,0003")
    ap.add_argument("--k", default=CALIBRATED_K, help="FOLD:PX,...: the CoC scale of each scene's renders")
    ap.add_argument("--size", type=whole(16), default=512)
    ap.add_argument("--veil", type=finite(), default=0.125, help="the renders' glare (nafnet-cpu's: 0.125)")
    ap.add_argument("--gate", type=finite(0.0, True), default=3.0, help="eval --focus-gate run#2:PX with --coc edge")
    ap.add_argument("--detail-band", type=finite(0.0, True), default=16.0)
    ap.add_argument("--rescore", action="store_true", help="print the table of folds already scored, running nothing")
    args = ap.parse_args()
    k = check_folds(args)
    exe, env = [sys.executable, "-m", "defocuskit"], dict(os.environ)
    table = []
    for held in args.folds.split(","):
        fold = args.loso / held
        model = fold / "run" / "model.safetensors"
        if not model.is_file() or held not in k:
            sys.exit(f"{fold}: no run/model.safetensors, or no --k for fold {held}")
        work = fold / "in-domain"
        if work.exists() != args.rescore:
            sys.exit(f"{work}: exists; remove it to score again, or --rescore to print it" if work.exists() else
                     f"{work}: not scored yet; run without --rescore")
        photos = work / "photo" if args.rescore else scene_folder(held, work / "photo")
        scored: dict[str, dict[tuple[str, float], float | None]] = {}
        for noise in ("noisy", "quiet"):
            shards = work / f"{noise}-shards"
            if args.rescore:
                scored.update({f"{noise}-{band}": gains(work / f"report-{noise}-{band}") for band in ("all", "detail")})
                continue
            run([*exe, "ingest", "--render", str(photos), "--out", str(shards), "--max-side", str(args.size),
                 "--render-coc-scale", k[held], "--render-f-numbers", F_NUMBERS, "--split-by", "test",
                 "--workers", "1", f"--render-veil={args.veil:g}",
                 *(["--no-render-noise"] if noise == "quiet" else [])], work / f"ingest-{noise}.log", env)
            for band in ("all", "detail"):
                report = work / f"report-{noise}-{band}"
                run([*exe, "eval", "--shards", str(shards), "--checkpoint", str(model), "--focus-gate", "run:0",
                     "--checkpoint", str(model), "--focus-gate", f"run#2:{args.gate:g}", "--coc", "edge",
                     "--baseline", "input", "--by-aperture", "--report", str(report),
                     *(["--detail-band", f"{args.detail_band:g}"] if band == "detail" else [])],
                    work / f"eval-{noise}-{band}.log", env)
                scored[f"{noise}-{band}"] = gains(report)
        scored["real-all"] = gains(fold / "report")
        scored["real-detail"] = gains(fold / "report-detail")
        for band in ("all", "detail"):
            for method in ("run", "run#2"):
                cells = []
                for where in ("noisy", "quiet", "real"):
                    got = scored[f"{where}-{band}"]
                    cells.append(" / ".join(cell(got[(method, float(n))]) for n in F_NUMBERS.split(",")))
                table.append(f"| {held} | {band} | {method} | " + " | ".join(cells) + " |")
    print(f"gain (dB) at f/{' / f/'.join(F_NUMBERS.split(','))}; renders at the scenes' own k ({args.k})\n")
    print("| fold | band | model | renders, noise on | renders, no noise | real shots |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))
    print(f"\nn/a: the render's input is its reference to within {IDENTICAL_DB:g} dB (no pixel's CoC reaches 1 px)")


if __name__ == "__main__":
    main()
