"""Leave-one-scene-out on real aperture stacks: train a `*-cpu` recipe on renders of the other photographs, score
it on the held-out scene's real shots.

For each held-out VABD scene (fixtures VABD/train 0001-0003), through the README's commands:

1. training photos: the f/16 references of every fixture stack except the held-out one (the other VABD scenes
   and EBB train + test), with their depth maps and focal masks, linked into one `--render` folder;
2. `defocuskit ingest --render` at `--size` (long side), once per CoC scale of `--k-fractions` (x the long
   side; the real stacks' fitted scales span 0.011-0.10, docs/benchmarks.md "Renderer calibration"), f-numbers
   `--render-f-numbers`, focus from the focal masks, sensor noise on;
   with `--builtin` the built-in synthetic stacks too (`ingest --synthetic builtin`);
   with `--extra-photos DIR` the photos of another `--render` folder join the training photos of every fold
   (e.g. the built-in scenes written by tools/export_builtin_photos.py);
3. `defocuskit train RECIPE data.train=[...]`, one process, `--minutes` at most;
4. the held-out scene's real stack (f/1.8, f/2.8, f/8 against its f/16 reference) ingested with `--vabd` at
   `--test-size` (0: their own 1536 px; registered and gain-matched as ingest does) and scored with `defocuskit
   eval --by-aperture` (`--work-side auto`: each shot deblurred where its blur reads as the renders' did)
   beside the input; the outputs are kept under FOLD/images to look at.

Prints per fold and f-number the input PSNR and the model's gain, then the mean, min and max gain over the
folds, the VABD folds apart from fold `ebb`. Everything is written under `--out` (which must not exist yet).

Fold `ebb` (`--folds ebb`) holds out the EBB test photographs instead: trained on renders of the VABD and EBB
train references, scored on the real EBB test pairs (f/1.8 against the f/16 reference, not registered at
ingest) with JDRL's protocol: the reference warped onto each output by optical flow before scoring (`eval
--align --align-by flow`), as JDRL's evaluation of misaligned pairs does.

    python tools/loso_real.py --out /tmp/loso [--recipe nafnet-cpu] [--minutes 25] [--folds 0001,0002,0003]
    python tools/loso_real.py --out /tmp/loso-jdrl --recipe jdrl-cpu --minutes 45 --folds 0001,ebb
    python tools/loso_real.py --out /tmp/loso-gate --focus-gate 3      # the model, and the model gated (run#2)
    python tools/loso_real.py --out /tmp/loso-full --test-size 0 --work-side auto  # the shots at their own size
    python tools/loso_real.py --out /tmp/loso-map --focus-gate 3 --gate-map learned   # gated by a fold's estimator
    python tools/loso_real.py --out /tmp/loso-hidd --recipe hidd-cpu --minutes 45 --gate-map learned --focus-gate 3
    python tools/loso_real.py --out /tmp/loso-rddm --recipe rddm-cpu --minutes 30 --focus-gate 3 --real-pairs 4 ...

A recipe whose method trains with a defocus-map model (rddm-cpu: `model.map_checkpoint`) gets the fold's estimator,
trained first on the same renders (as `--gate-map learned` trains it).
`--gate-map learned` gates by a defocus-map estimator (`recipes/defocus-map-tiny.yaml`, `--map-steps` steps,
`--map-set` overrides) trained per fold on the same renders, so it has not seen the held-out scene either
(`eval --coc map --coc-model FOLD/map/model.safetensors`); the default, `edge`, is the training-free map.
`--real-pairs N` adds the real pairs of the stacks that are not held out (the other VABD scenes, the EBB train
pairs; registered and gain-matched by ingest, `--local-gain F` per region) to the renders, weighted N times.
`--real-arg=ARG` / `--test-arg=ARG` pass ARG to the ingest of the real training pairs / of the held-out shots
(e.g. `--test-arg=--refine-warp=0.047`: the smooth residual warp after the rigid fit; it, `--local-gain`,
`--min-align-score` and `--bracket-fit` are not passed to fold `ebb`, whose shots are not registered: `--register
none`). `--prox` scores the
proximal-step baseline with the same map beside them. `--ensemble 8` scores every model as a geometric
self-ensemble (`eval --ensemble 8`: the outputs for the 8 flips and transposes, turned back, averaged).
A recipe whose sampler needs a CoC map (hidd-cpu's physics step) is scored with the `--gate-map` map.
The row `run` is always the model's raw output (`eval --focus-gate run:0`: a recipe's own gate, nafnet-cpu's
`inference.focus_gate`, is off there); `run#2` is the gated one. Every fold is scored twice: as is (FOLD/report) and
in the detail band (`--detail-band 16`, FOLD/report-detail: the low-pass of output and shot replaced by the
reference's, since most of a real shot's difference from its reference is glare and tone, not blur).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from tool_args import finite, number_list, whole  # same folder
from tool_folders import not_new_folder

from defocuskit.config.typed import layered_overrides  # the user's --set / --map-set replace the tool's own

SCENES = ("0001", "0002", "0003")
APERTURE_FOLDERS = ("input", "1_8", "2_8", "8")


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def photo_sets(fixtures: Path) -> list[tuple[str, Path]]:
    """(name prefix, folder holding input/ depth/ focal/) of every fixture set with references and depth."""
    return [("vabd", fixtures / "VABD" / "train"), ("ebb-train", fixtures / "EBB" / "train"),
            ("ebb-test", fixtures / "EBB" / "test")]


def render_folder(fixtures: Path, held: str, out: Path, extra: Path | None = None) -> int:
    """Link every reference photo, depth map and focal mask except the held-out VABD scene's (fold "ebb": the
    EBB test photographs) into `out`, and every photo of `extra` (a `--render` folder: image/ depth/ focal/)."""
    n = 0
    sets = photo_sets(fixtures) + ([("extra", extra)] if extra is not None else [])
    for prefix, root in sets:
        if held == "ebb" and prefix == "ebb-test":
            continue
        photos = root / "image" if (root / "image").is_dir() else root / "input"  # as `ingest --render` reads it
        for image in sorted(photos.iterdir()):
            stem = image.stem
            if prefix == "vabd" and stem == held:
                continue
            name = f"{prefix}-{stem}"
            link(image, out / "image" / f"{name}{image.suffix}")
            for sub in ("depth", "focal"):
                found = [p for p in (root / sub).glob(f"{stem}.*")]
                if found:
                    link(found[0], out / sub / f"{name}{found[0].suffix}")
            n += 1
    return n


def test_folder(fixtures: Path, held: str, out: Path) -> None:
    """The held-out scene's real VABD stack alone, in VABD's layout (as a test split); fold "ebb": the EBB test
    pairs in EBB's layout."""
    if held == "ebb":
        for sub in ("input", "target"):
            for src in sorted((fixtures / "EBB" / "test" / sub).iterdir()):
                link(src, out / "test" / sub / src.name)
        return
    root = fixtures / "VABD" / "train"
    for sub in APERTURE_FOLDERS:
        (src,) = list((root / sub).glob(f"{held}.*"))
        link(src, out / "test" / sub / src.name)


def real_pairs_folder(fixtures: Path, held: str, out: Path) -> None:
    """The real stacks that are not held out, in their own layouts: out/vabd (the other VABD scenes; fold "ebb":
    all three) and out/ebb (the EBB train pairs)."""
    root = fixtures / "VABD" / "train"
    for sub in APERTURE_FOLDERS:
        for src in sorted((root / sub).iterdir()):
            if src.stem != held:
                link(src, out / "vabd" / "train" / sub / src.name)
    for sub in ("input", "target"):
        for src in sorted((fixtures / "EBB" / "train" / sub).iterdir()):
            link(src, out / "ebb" / "train" / sub / src.name)


def run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.time() - t0


def check_args(args: argparse.Namespace) -> None:
    """Exit with one line for arguments no fold can run with: fixtures without the VABD stacks, an unknown recipe,
    a fold that is neither a VABD scene nor `ebb`, a time limit that is not positive."""
    from defocuskit.config.recipe import find_recipe
    from defocuskit.config.typed import RecipeError

    if not (args.fixtures / "VABD" / "train" / "input").is_dir():
        sys.exit(f"error: --fixtures {args.fixtures}: no VABD/train/input/ (the real fixture stacks)")
    lacking = next((root for _, root in photo_sets(args.fixtures) if not (root / "input").is_dir()), None)
    if lacking is not None:  # every fold renders every set's references
        sys.exit(f"error: --fixtures {args.fixtures}: no {lacking.relative_to(args.fixtures)}/input/")
    extra = args.extra_photos
    if extra is not None and not ((extra / "image").is_dir() or (extra / "input").is_dir()):
        sys.exit(f"error: --extra-photos {extra}: no image/ or input/ folder (an `ingest --render` folder)")
    for name in (args.recipe, args.map_recipe):
        try:
            find_recipe(name)
        except (RecipeError, FileNotFoundError) as exc:
            sys.exit(f"error: {exc}")
    unknown = [f for f in args.folds.split(",") if f not in (*SCENES, "ebb")]
    if unknown:
        sys.exit(f"error: --folds {args.folds}: {', '.join(unknown)} is not a fold (known: {', '.join(SCENES)}, ebb)")
    folds = args.folds.split(",")
    if len(set(folds)) < len(folds):
        sys.exit(f"error: --folds {args.folds}: a fold given twice")
    side = args.work_side
    if side is not None and side not in ("trained", "auto", "0") and not (side.isdigit() and int(side) >= 8):
        sys.exit(f"error: --work-side {side}: give a long side of at least 8 px, trained, auto or 0 (own size)")
    if 0 < args.test_size < 16:
        sys.exit(f"error: --test-size {args.test_size}: give at least 16 px, or 0 for the shots' own size")
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        sys.exit(f"error: --minutes {args.minutes:g}: give a positive time limit")


def layered(base: list[str], extra: list[str]) -> list[str]:
    """`base` (option, value pairs of this tool's command line) without the options `extra` gives, then `extra`: the
    user's arguments replace the tool's own (defocuskit refuses a single-value option given twice)."""
    given = {arg.split("=", 1)[0] for arg in extra if arg.startswith("--")}
    kept = [pair for pair in zip(base[::2], base[1::2]) if pair[0] not in given]
    return [arg for pair in kept for arg in pair] + list(extra)


# ingest refuses them with --register none (nothing registered): given but not used
REGISTRATION_ONLY = ("--refine-warp", "--local-gain", "--min-align-score", "--bracket-fit")


def without_registration(extra: list[str]) -> tuple[list[str], list[str]]:
    """The ingest arguments `extra` less REGISTRATION_ONLY options (as --opt=V or --opt V), and those left out: the
    EBB fold's shots are ingested with `--register none`, which a --test-arg=--refine-warp=S must not reach."""
    kept, dropped, skip = [], [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            dropped.append(arg)
        elif arg.split("=", 1)[0] in REGISTRATION_ONLY:
            dropped.append(arg)
            skip = "=" not in arg and i + 1 < len(extra)
        else:
            kept.append(arg)
    return kept, dropped


def needs_coc(recipe: str, overrides: list[str]) -> bool:
    """Whether the recipe's sampler needs a CoC map at inference (hidd-cpu's physics step)."""
    from defocuskit.methods.recipes import load_recipe

    return "coc" in load_recipe(recipe, overrides).sampler.resolved().needs()


def map_companion(recipe: str, overrides: list[str]) -> str | None:
    """The recipe key that names a defocus-map model the method trains with (rddm-cpu's model.map_checkpoint)."""
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import load_recipe

    method = get_method(load_recipe(recipe, overrides).method)
    return next((c.key for c in method.companions if c.method == "defocus-map"), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real")
    ap.add_argument("--recipe", default="nafnet-cpu")
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--folds", default=",".join(SCENES))
    ap.add_argument("--size", type=whole(16), default=384)
    ap.add_argument("--test-size", type=whole(0), default=512, help="the held-out shots' long side (0: their own)")
    ap.add_argument("--work-side", default=None, help="eval --work-side for every model (PX | trained | auto | 0; "
                    "default: each recipe's own inference.work_side)")
    ap.add_argument("--k-fractions", type=number_list(0.0, True, 1.0), default="0.02,0.043,0.09")
    ap.add_argument("--render-f-numbers", type=number_list(), default="1.8,2.8,4,5.6,8")
    ap.add_argument("--builtin", action="store_true", help="train on the built-in synthetic stacks too")
    ap.add_argument("--extra-photos", type=Path, default=None,
                    help="a --render folder (image/ depth/ focal/) whose photos join every fold's training photos, "
                         "e.g. tools/export_builtin_photos.py's")
    ap.add_argument("--render-arg", dest="render_args", action="append", default=[],
                    help="extra `ingest --render` argument, e.g. --render-arg=--no-render-noise (repeatable)")
    ap.add_argument("--render-set", dest="render_sets", action="append", default=[],
                    help="one more set of renders per CoC scale, with these extra `ingest --render` arguments (one "
                         "quoted string, e.g. --render-set='--no-render-noise --render-f-numbers 5.6,8,11'); "
                         "repeatable; without it one set with --render-arg")
    ap.add_argument("--focus-gate", type=finite(), default=None,
                    help="also score the model gated by the --gate-map defocus map (`eval --coc edge --focus-gate "
                         "run#2:PX`: its change weighed by min(1, CoC / PX)), beside it as `run#2`")
    ap.add_argument("--gate-smooth", type=finite(), default=None,
                    help="eval --gate-smooth PX with --focus-gate (default: eval's, 16; 0: gate the whole change)")
    ap.add_argument("--ensemble", type=int, choices=(1, 4, 8), default=1,
                    help="score every model as a geometric self-ensemble of N flips / transposes (`eval --ensemble N`)")
    ap.add_argument("--gate-map", choices=("edge", "learned"), default="edge",
                    help="the CoC map of --focus-gate, --prox and a sampler that needs one (hidd-cpu's physics step): "
                         "the training-free edge estimate, or a defocus-map estimator trained on this fold's renders")
    ap.add_argument("--map-recipe", default="defocus-map-tiny")
    ap.add_argument("--map-steps", type=whole(1), default=2000)
    ap.add_argument("--map-set", dest="map_overrides", action="append", default=[],
                    help="override of the estimator's recipe KEY=VALUE, e.g. objective.quantile=0.5")
    ap.add_argument("--prox", action="store_true", help="score the proximal-step baseline with the same map")
    ap.add_argument("--real-pairs", type=whole(0), default=0, metavar="N",
                    help="also train on the real pairs of the stacks not held out (VABD scenes, EBB train), ingested "
                         "at --size, their shard folder listed N times in data.train (its weight); 0: renders only")
    ap.add_argument("--local-gain", type=finite(), default=0.0,
                    help="ingest those real pairs with `--local-gain F` (exposure and colour matched per region)")
    ap.add_argument("--real-arg", dest="real_args", action="append", default=[],
                    help="an extra `ingest` argument for the real training pairs, e.g. --real-arg=--refine-warp=0.047")
    ap.add_argument("--test-arg", dest="test_args", action="append", default=[],
                    help="an extra `ingest` argument for the held-out real shots, e.g. --test-arg=--refine-warp=0.047")
    ap.add_argument("--detail-band", type=finite(), default=16.0,
                    help="also score in the detail band (`eval --detail-band PX`: the low-pass of output and shot "
                         "replaced by the reference's, so photometry does not count); 0: not")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    args = ap.parse_args()
    why = not_new_folder(args.out)
    if why is not None:
        sys.exit(f"error: --out {why}")
    check_args(args)  # before --out is made
    exe = [sys.executable, "-m", "defocuskit"]
    env = dict(os.environ)
    model_coc = needs_coc(args.recipe, args.overrides)
    companion = map_companion(args.recipe, args.overrides)
    results: dict[str, dict] = {}
    for held in args.folds.split(","):
        fold = args.out / held
        photos = fold / "photos"
        n_photos = render_folder(args.fixtures, held, photos, args.extra_photos)
        test_folder(args.fixtures, held, fold / "real")
        shards, real, t_ingest = [], [], 0.0  # real: the real pairs, apart (they carry no coc.png for the map)
        render_sets = [s.split() for s in args.render_sets] or [[]]
        for frac, (i, extra) in itertools.product((float(x) for x in args.k_fractions.split(",")),
                                                  enumerate(render_sets)):
            name = f"k{frac:g}" + (f"-set{i}" if len(render_sets) > 1 else "")
            dst = fold / f"render-{name}"
            own = ["--max-side", str(args.size), "--render-coc-scale", f"{frac * args.size:.3f}", "--render-f-numbers",
                   args.render_f_numbers, "--split-by", "train", "--seed", str(int(frac * 1000) + 7 * i), "--workers", "1"]
            t_ingest += run([*exe, "ingest", "--render", str(photos), "--out", str(dst),
                             *layered(own, [*args.render_args, *extra])], fold / f"ingest-{name}.log", env)
            shards.append(str(dst))
        if args.real_pairs:
            real_pairs_folder(args.fixtures, held, fold / "real-pairs")
            dst = fold / "real-shards"
            t_ingest += run([*exe, "ingest", "--vabd", str(fold / "real-pairs" / "vabd"), "--ebb",
                             str(fold / "real-pairs" / "ebb"), "--out", str(dst), *layered(
                                 ["--max-side", str(args.size), "--local-gain", f"{args.local_gain:g}", "--workers",
                                  "1"], args.real_args)], fold / "ingest-real.log", env)
            real = [str(dst)] * args.real_pairs
        if args.builtin:
            dst = fold / "builtin"
            t_ingest += run([*exe, "ingest", "--synthetic", "builtin", "--out", str(dst), "--split-by", "train",
                             "--workers", "1"], fold / "ingest-builtin.log", env)
            shards.append(str(dst))
        test = fold / "test-shards"
        source = ["--ebb", str(fold / "real"), "--register", "none"] if held == "ebb" else ["--vabd", str(fold / "real")]
        own = (["--max-side", str(args.test_size)] if args.test_size else []) + ["--workers", "1"]
        test_args, dropped = without_registration(args.test_args) if held == "ebb" else (args.test_args, [])
        if dropped:
            print(f"fold ebb: {' '.join(dropped)} not passed: its shots are ingested with --register none")
        run([*exe, "ingest", *source, "--out", str(test), *layered(own, test_args)], fold / "ingest-test.log", env)
        t_map = 0.0
        map_dir = fold / "map"
        learned = args.gate_map == "learned" and (args.focus_gate is not None or args.prox or model_coc)
        if companion or learned:
            own = [f"data.train=[{', '.join(shards)}]", f"output_dir={map_dir}", f"train.max_steps={args.map_steps}",
                   "train.checkpoint_every=1000000"]
            t_map = run([*exe, "train", args.map_recipe, *layered_overrides(own, args.map_overrides)],
                        fold / "train-map.log", env)
        coc = ["--coc", "map", "--coc-model", str(map_dir / "model.safetensors")] if learned else ["--coc", "edge"]
        run_dir = fold / "run"
        uses_map = [f"{companion}={map_dir / 'model.safetensors'}"] if companion else []  # trained on the same renders
        own = [f"data.train=[{', '.join(shards + real)}]", f"output_dir={run_dir}", f"train.max_minutes={args.minutes}",
               *uses_map]
        t_train = run([*exe, "train", args.recipe, *layered_overrides(own, args.overrides)], fold / "train.log", env)
        report = fold / "report"
        model = str(run_dir / "model.safetensors")
        gate = [] if args.focus_gate is None else ["--checkpoint", model, "--focus-gate", f"run#2:{args.focus_gate:g}",
                                                   *([] if args.gate_smooth is None else
                                                     ["--gate-smooth", f"{args.gate_smooth:g}"])]
        extra = gate + (["--baseline", "prox"] if args.prox else [])
        ungated = ["--focus-gate", "run:0"]  # the model's raw output, its recipe's own gate off (nafnet-cpu's)
        scoring = [*exe, "eval", "--shards", str(test), "--checkpoint", model, *ungated, *extra,
                   *(coc if extra or model_coc else []), "--baseline", "input", "--by-aperture",
                   *(["--ensemble", str(args.ensemble)] if args.ensemble > 1 else []),
                   *(["--work-side", args.work_side] if args.work_side else []),
                   *(["--align", "--align-by", "flow"] if held == "ebb" else [])]
        run([*scoring, "--report", str(report), "--save-images", str(fold / "images")], fold / "eval.log", env)
        rows = json.loads((report / "report.json").read_text())["rows"]
        results[held] = {"photos": n_photos, "ingest_s": round(t_ingest), "train_s": round(t_train),
                         "map_train_s": round(t_map), "gate_map": args.gate_map, "ensemble": args.ensemble,
                         "real_pairs": args.real_pairs, "local_gain": args.local_gain,
                         "real_args": args.real_args, "test_args": args.test_args,
                         "rows": [r for r in rows if r["f_number"] is not None]}
        if args.detail_band > 0:  # the same, the photometric part left out (docs/benchmarks.md, "the detail band")
            run([*scoring, "--detail-band", f"{args.detail_band:g}", "--report", str(fold / "report-detail")],
                fold / "eval-detail.log", env)
            detail = json.loads((fold / "report-detail" / "report.json").read_text())["rows"]
            results[held]["detail_band"] = args.detail_band
            results[held]["detail_rows"] = [r for r in detail if r["f_number"] is not None]
        for key, band in (("rows", ""), ("detail_rows", " (detail band)")):
            for r in (r for r in results[held].get(key, []) if r["method"] != "input"):
                print(f"{held} f/{r['f_number']:g}{band}: input {r['psnr_input']:.2f} dB, {r['method']} "
                      f"{r['psnr'] - r['psnr_input']:+.2f} dB (train {t_train:.0f} s)", flush=True)
    (args.out / "loso.json").write_text(json.dumps(results, indent=1))
    print("\n" + "\n".join(summary_lines(results, args.detail_band)))


def held_out_set(held: str) -> str:
    """The test set a fold is scored on: the VABD stacks (one shot per aperture), or the EBB test photographs (fold
    `ebb`: another camera, the reference flow-aligned onto each output)."""
    return "EBB test" if held == "ebb" else "VABD"


def summary_lines(results: dict[str, dict], detail_band: float) -> list[str]:
    """The markdown table of each model's gain per band, held-out set and f-number: mean, min and max over the folds
    of that set (a VABD fold's f/1.8 and fold ebb's are two rows, never one mean)."""
    gains: dict[tuple[str, str, str, float], list[float]] = {}
    for held, res in results.items():
        for key, band in (("rows", "all"), ("detail_rows", f"detail {detail_band:g} px")):
            for r in (r for r in res.get(key, []) if r["method"] != "input"):
                gains.setdefault((r["method"], band, held_out_set(held), r["f_number"]), []).append(
                    r["psnr"] - r["psnr_input"])
    lines = ["| model | band | held out | f-number | folds | mean gain dB | min | max |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for (method, band, test_set, f), g in sorted(gains.items()):
        lines.append(f"| {method} | {band} | {test_set} | f/{f:g} | {len(g)} | {sum(g) / len(g):+.2f} | {min(g):+.2f} "
                     f"| {max(g):+.2f} |")
    return lines


if __name__ == "__main__":
    main()
