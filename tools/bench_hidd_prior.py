"""Train a small HIDD score prior on the built-in synthetic set for a bounded time, then deblur held-out images.

    python tools/bench_hidd_prior.py [--minutes 10] [--size 128] [--steps 100] [--f-numbers 1.4,5.6]
                                     [--samplers consistency,paper,predictor] [--model MODEL]

Reports PSNR/SSIM of the blurred input and of the sampler's output on the synthetic test split at two
apertures, for the sampler settings of the paper's ablation: "consistency" (predictor + data
consistency), "paper" (predictor + corrector + data consistency; 4x the network evaluations) and
"predictor" (the predictor alone). `--model` scores an already trained prior instead of training one.
Prints a markdown table with the machine, the training steps reached and the seconds per image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from defocuskit.data.ingest import run_ingest  # noqa: E402
from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.data.sample import IngestOptions  # noqa: E402
from defocuskit.eval.metrics import psnr, ssim  # noqa: E402
from defocuskit.inference.load import load_model  # noqa: E402
from defocuskit.inference.restore import restore_image  # noqa: E402
from defocuskit.io.images import to_float  # noqa: E402
from defocuskit.methods.recipes import load_recipe  # noqa: E402
from defocuskit.train.loop import train  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "hidd-tiny.yaml"
# A small prior (not the tiny test one): 64 px, nf 32, three levels.
SMALL_PRIOR = (
    "data.image_size=64", "model.image_size=64", "data.batch_size=8", "data.augment=true",
    "model.nf=32", "model.ch_mult=[1,2,2]", "model.num_res_blocks=1", "model.attn_resolutions=[16]",
    "optim.warmup_steps=200", "train.ema_decay=0.999", "train.log_every=50",
    "train.max_steps=1000000", "train.checkpoint_every=1000000",
)
SAMPLERS = {
    "consistency": ("predictor + consistency", dict(name="pc", corrector=False)),
    "paper": ("predictor + corrector + consistency (paper)", dict(name="pc", corrector=True)),
    "predictor": ("predictor alone", dict(name="pc", corrector=False, weights=(0.0, 0.0))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-hidd-prior"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training time")
    parser.add_argument("--size", type=int, default=128, help="longer side of the synthetic scenes")
    parser.add_argument("--steps", type=int, default=100, help="reverse-diffusion steps")
    parser.add_argument("--f-numbers", default="1.4,5.6", help="the two apertures to report")
    parser.add_argument("--per-aperture", type=int, default=2, help="held-out images per aperture")
    parser.add_argument("--samplers", default="consistency,paper,predictor", help=", ".join(SAMPLERS))
    parser.add_argument("--model", type=Path, default=None, help="an exported prior to score (skips training)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    unknown = set(args.samplers.split(",")) - set(SAMPLERS)
    if unknown:
        parser.error(f"unknown samplers {sorted(unknown)}; known: {', '.join(SAMPLERS)}")
    f_numbers = [float(x) for x in args.f_numbers.split(",")]

    shards = args.out / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(shards), synthetic_size=args.size), progress=False)
    if args.model is None:
        recipe = load_recipe(RECIPE, [*SMALL_PRIOR, f"data.train={shards}", f"output_dir={args.out / 'hidd'}",
                                      f"train.max_minutes={args.minutes}", "sampler.name=pc"])
        model_path = train(recipe, resume=False)
    else:
        model_path = args.model
    method, recipe, model = load_model(model_path, device=args.device, expect_method="hidd")
    last = (Path(recipe.output_dir) / "metrics.jsonl").read_text().strip().splitlines()[-1]
    trained_steps = json.loads(last)["step"]

    picked: dict[float, list[dict]] = {f: [] for f in f_numbers}
    for s in iter_samples(shards, split="test"):
        f = s["meta"]["f_number"]
        if s["blur"] is not None and f in picked and len(picked[f]) < args.per_aperture:
            picked[f].append(s)

    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {args.device}"
    print(f"\nmachine: {machine}; {model_path}: trained for train.max_minutes={recipe.train.max_minutes} "
          f"({trained_steps} steps of batch {recipe.data.batch_size}, {recipe.data.image_size}px, gray); {args.steps} sampler steps; "
          f"synthetic test scenes at {args.size}px\n")
    print("| sampler | f/N | n | PSNR input | SSIM input | PSNR output | SSIM output | s/image |")
    print("|---|---|---|---|---|---|---|---|")
    for name, kw in (SAMPLERS[k] for k in args.samplers.split(",")):
        cfg = dataclasses.replace(recipe.sampler, steps=args.steps, **kw)
        for f, samples in picked.items():
            rows, t1 = [], time.time()
            for i, s in enumerate(samples):
                blur, sharp = to_float(s["blur"]).astype(np.float64), to_float(s["sharp"]).astype(np.float64)
                out = restore_image(method, recipe, model, blur.astype(np.float32), sampler_cfg=cfg, seed=i,
                                    device=args.device, progress=False).astype(np.float64)
                rows.append((psnr(blur, sharp), ssim(blur, sharp), psnr(out, sharp), ssim(out, sharp)))
            m = np.mean(rows, axis=0)
            per = (time.time() - t1) / max(len(samples), 1)
            print(f"| {name} | {f:g} | {len(samples)} | {m[0]:.2f} | {m[1]:.4f} | {m[2]:.2f} | {m[3]:.4f} | {per:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
