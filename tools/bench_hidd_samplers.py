"""The HIDD samplers side by side, in one run: quality per f-number, network evaluations and seconds per image.

    python tools/bench_hidd_samplers.py --model PRIOR.safetensors --map-model MAP.safetensors \
        --synthetic SHARDS --fixtures ../shared/fixtures/real --out /tmp/bench/samplers

PRIOR is a HIDD prior (e.g. `recipes/hidd-small.yaml`), MAP a defocus-map estimator
(`recipes/defocus-map-tiny.yaml` or larger) for the `map` CoC source, SHARDS the built-in synthetic set
(`defocuskit ingest --synthetic builtin`). The real VABD / EBB fixtures are ingested at `--real-size`
(EBB pairs are not pixel-aligned: they are scored with --align, as `defocuskit eval --align`).

Variants: the input; Wiener and the proximal step alone (`prox`), both with the CoC source of the
block; `released` and `pc` (full length: 1000 steps x 4 NFE, run on `--full-per-aperture` images per
f-number because of their cost); `fast+identity` and `fast+physics` (the recipe's fast settings) on
`--per-aperture` images. Writes OUT/results.json and prints a markdown table; `--save-images` keeps every output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tool_folders import foreign_results  # noqa: E402  (tools/, first on sys.path when run as a script)

from defocuskit.data.ingest import run_ingest  # noqa: E402
from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.data.sample import IngestOptions  # noqa: E402
from defocuskit.eval import baselines  # noqa: E402
from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.scoring import Scoring  # noqa: E402
from defocuskit.inference.coc_source import CocSource  # noqa: E402
from defocuskit.inference.load import load_model  # noqa: E402
from defocuskit.inference.restore import restore_image  # noqa: E402
from defocuskit.inference.tiling import TilingOptions, resolve_overlap, tile_starts  # noqa: E402

FULL = ("released", "pc")


def pick(samples: list[dict], per_aperture: int) -> list[dict]:
    """The first `per_aperture` paired samples of every f-number."""
    seen: dict[Any, int] = defaultdict(int)
    out = []
    for s in samples:
        f = s["meta"].get("f_number")
        if s.get("blur") is not None and seen[f] < per_aperture:
            seen[f] += 1
            out.append(s)
    return out


def variants(recipe: Any, full_steps: int) -> dict[str, Any]:
    """The sampler configs compared: released and pc at `full_steps`, fast (its default steps) with each consistency.

    Every other key comes from the prior's recipe, so a prior whose recipe names 1000 steps does not hand
    them to the fast sampler.
    """
    base = recipe.sampler
    return {
        "released": dataclasses.replace(base, name="released", steps=full_steps, consistency="identity"),
        "pc": dataclasses.replace(base, name="pc", steps=full_steps, consistency="identity"),
        "fast+identity": dataclasses.replace(base, name="fast", steps=None, consistency="identity"),
        "fast+physics": dataclasses.replace(base, name="fast", steps=None, consistency="physics"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the HIDD prior (.safetensors)")
    parser.add_argument("--map-model", type=Path, required=True, help="defocus-map estimator for --coc map")
    parser.add_argument("--synthetic", type=Path, required=True, help="synthetic shards (test split scored)")
    parser.add_argument("--fixtures", type=Path, default=None, help="../shared/fixtures/real (VABD, EBB)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-hidd-samplers"))
    parser.add_argument("--real-size", type=int, default=256, help="longer side of the ingested real fixtures")
    parser.add_argument("--per-aperture", type=int, default=4, help="images per f-number (cheap variants)")
    parser.add_argument("--full-per-aperture", type=int, default=1, help="images per f-number for released / pc")
    parser.add_argument("--full-per-aperture-real", type=int, default=0,
                        help="images per f-number for released / pc on the real fixtures (0: skip them there)")
    parser.add_argument("--full-steps", type=int, default=1000, help="steps of released / pc (paper: 1000)")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: the prior's training size)")
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    parser.add_argument("--blocks", default="", help="comma-separated blocks to run (default: all)")
    parser.add_argument("--save-images", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    keys = {"machine", "args", "sampler", "rows"}
    if args.out is not None and (fault := foreign_results(args.out / "results.json", keys, Path(__file__).name)):
        parser.error(fault)  # one line, exit 2, before any work
    method, recipe, model = load_model(args.model, device=args.device, expect_method="hidd")
    tile = int(args.tile or recipe.data.image_size)
    overlap = resolve_overlap(tile, None)
    configs = variants(recipe, args.full_steps)
    only = set(filter(None, args.only.split(",")))

    blocks: list[tuple[str, list[dict], str, bool]] = []  # (name, samples, coc source, align)
    synthetic = list(iter_samples(args.synthetic, split="test"))
    blocks += [("synthetic, oracle CoC", synthetic, "oracle", False), ("synthetic, map CoC", synthetic, "map", False)]
    if args.fixtures is not None:
        real = args.out / "real-shards"
        run_ingest({"vabd": args.fixtures / "VABD", "ebb": args.fixtures / "EBB"},
                   IngestOptions(out=str(real), workers=0, max_side=args.real_size, split_by="test"), progress=False)
        reals = [s for split in ("train", "test") for s in iter_samples(real, split=split)]
        for source, align in (("vabd", False), ("ebb", True)):
            mine = [s for s in reals if s["meta"].get("source") == source]
            blocks += [(f"{source.upper()}, map CoC", mine, "map", align),
                       (f"{source.upper()}, f-number CoC", mine, "fnumber", align)]
    wanted_blocks = set(filter(None, args.blocks.split(",")))
    coc_free_done: dict[tuple[str, str], list[dict]] = {}  # (dataset, variant) -> rows of variants that need no CoC
    results = []
    for block, samples, coc_kind, align in blocks:
        if wanted_blocks and block not in wanted_blocks:
            continue
        dataset = block.split(",")[0]
        coc = CocSource.create(coc_kind, args.map_model if coc_kind == "map" else None, args.device)
        runners: dict[str, tuple[Callable, int]] = {}

        def model_runner(cfg: Any, needs_coc: bool) -> Callable:
            def run(blur: np.ndarray, sample: dict) -> np.ndarray:
                coc_map = coc(blur, sample["meta"], sample.get("coc"), name=sample["key"]) if needs_coc else None
                return restore_image(method, recipe, model, blur, device=args.device, progress=False, sampler_cfg=cfg,
                                     coc=coc_map, seed=0, tiling=TilingOptions(tile=tile, overlap=overlap))
            return run

        def baseline_runner(fn: Callable) -> Callable:
            def run(blur: np.ndarray, sample: dict) -> np.ndarray:
                return fn(blur, dict(sample["meta"], key=sample["key"]),
                          coc(blur, sample["meta"], sample.get("coc"), name=sample["key"]))
            return run

        runners["input"] = (lambda blur, sample: blur, args.per_aperture)
        runners["wiener"] = (baseline_runner(baselines.wiener_baseline), args.per_aperture)
        runners["prox"] = (baseline_runner(baselines.prox_baseline), args.per_aperture)
        full_per = args.full_per_aperture if dataset == "synthetic" else args.full_per_aperture_real
        for name, cfg in configs.items():
            runners[name] = (model_runner(cfg, cfg.needs() != frozenset()),
                             full_per if name in FULL else args.per_aperture)
        for name, (run, per) in runners.items():
            if (only and name not in only) or per < 1:
                continue
            needs_coc = name in ("wiener", "prox") or (name in configs and configs[name].needs())
            if not needs_coc and (dataset, name) in coc_free_done:  # same result as in the other CoC block
                continue
            chosen = pick(samples, per)
            seconds: list[float] = []

            def timed(blur: np.ndarray, sample: dict, run: Callable = run) -> np.ndarray:
                t0 = time.perf_counter()
                out = run(blur, sample)
                seconds.append(time.perf_counter() - t0)
                return out

            save = args.out / "images" / block.replace(", ", "_").replace(" ", "-") if args.save_images else None
            res = evaluate_samples(chosen, {name: timed}, scoring=Scoring(align=align), progress=False,
                                   save_images=save)
            h, w = chosen[0]["blur"].shape[:2] if chosen else (0, 0)
            tiles = len(tile_starts(max(h, tile), tile, overlap)) * len(tile_starts(max(w, tile), tile, overlap))
            per_tile = configs[name].resolved().nfe() if name in configs else 0
            nfe_image = per_tile * tiles * (3 // recipe.data.channels)
            for row in res["rows"]:
                settings = dataclasses.asdict(configs[name].resolved()) if name in configs else None
                rec = {"block": block if needs_coc else f"{dataset}, any CoC", "variant": name, **row,
                       "settings": settings,
                       "nfe_per_tile": per_tile, "nfe_per_image": nfe_image,
                       "s_per_image": float(np.mean(seconds)) if seconds else None, "skipped": len(res["skipped"])}
                results.append(rec)
                print(json.dumps(rec), flush=True)
            if not needs_coc:
                coc_free_done[(dataset, name)] = res["rows"]
    args.out.mkdir(parents=True, exist_ok=True)
    machine = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
               f"{args.device}, {torch.get_num_threads()} threads")
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                                                       "sampler": dataclasses.asdict(recipe.sampler),
                                                       "rows": results}, indent=1))
    print(f"\nmachine: {machine}; prior {args.model}; tile {tile}\n")
    print("| data | variant | f/N | n | PSNR in | PSNR out | gain | SSIM in | SSIM out | NFE/tile | NFE/image | s/image |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        f = "all" if r["f_number"] is None else f"{r['f_number']:g}"
        s = "" if r["s_per_image"] is None else f"{r['s_per_image']:.1f}"
        print(f"| {r['block']} | {r['variant']} | {f} | {r['n']} | {r['psnr_input']:.2f} | {r['psnr']:.2f} | "
              f"{r['psnr_gain']:+.2f} | {r['ssim_input']:.3f} | {r['ssim']:.3f} | {r['nfe_per_tile']} | "
              f"{r['nfe_per_image']} | {s} |")


if __name__ == "__main__":
    main()
