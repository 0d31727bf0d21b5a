"""Eval seconds per 1536x1024 image of one NAFNet: the default (the whole image in one pass) against --tile 32.

    python tools/bench_eval_tiles.py [--recipe recipes/nafnet-tiny.yaml] [--images 3] [--tile 32] [--threads 2]
                                     [--repeat 1]
    python tools/bench_eval_tiles.py --memory recipes/nafnet.yaml --sizes 256,512,1024

Timing: the EBB! pairs of ../shared/fixtures/real (1536x1024; input/ is the f/16 reference, target/ the f/1.8
shot) are written as they are into a test shard (no registration: the timing does not depend on the scores;
--synthetic: random images of that size instead). The recipe's NAFNet is built with random weights (seed 0)
and exported once; `defocuskit.eval.evaluate` then scores the same shard with the same model file twice,
in one process: the default, then --tile (--repeat: alternating, the fastest run of each reported). Printed:
a markdown table of seconds per image (wall clock of evaluate divided by the images: loading, inference and
scoring), the tiling that ran and the mean PSNR; then `restore_image` alone on the first image, per mode.

--memory RECIPE: the peak resident memory that one whole-image pass of that recipe's network (random weights)
adds, at each --sizes side (square images), each size in a fresh process (Linux ru_maxrss).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.tiling import TilingOptions
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "EBB"


def machine() -> str:
    """CPU model, cores, threads used, torch version, date."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {datetime.date.today().isoformat()}")


def write_pairs(folder: Path, images: int, synthetic: bool) -> int:
    """A test shard of `images` 1536x1024 pairs (EBB fixtures, or random); returns how many were written."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members
    from defocuskit.io.images import read_image

    pairs = []
    if not synthetic:
        stems = sorted((FIXTURES / "test" / "input").glob("*.jpg")) + sorted((FIXTURES / "train" / "input").glob("*.jpg"))
        for sharp in stems[:images]:
            blur = sharp.parent.parent / "target" / sharp.name
            pairs.append((f"ebb/{sharp.stem}", read_image(sharp), read_image(blur)))
    if not pairs:
        rng = np.random.default_rng(0)
        for i in range(images):
            sharp = rng.integers(0, 256, (1024, 1536, 3), dtype=np.uint8)
            pairs.append((f"random/{i}", sharp, (sharp // 2 + 64).astype(np.uint8)))
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / "test-%06d.tar"), maxcount=100, verbose=0) as sink:
        for key, sharp, blur in pairs:
            meta = {"source": key.split("/")[0], "f_number": 1.8}
            sink.write({"__key__": key, **encode_members(sharp, blur, None, meta)})
    return len(pairs)


def export(recipe_path: Path, dest: Path) -> int:
    """Export the recipe's network with random weights (seed 0) like `defocuskit train` does; its parameter count."""
    from defocuskit.io.modelfile import save_model

    recipe = load_recipe(recipe_path)
    torch.manual_seed(0)
    model = get_method(recipe.method).build(recipe.model, recipe.objective, False)
    save_model(dest, model.state_dict(), recipe.method, recipe_to_dict(recipe))
    return sum(p.numel() for p in model.parameters())


def time_eval(args: argparse.Namespace) -> None:
    from rich.console import Console

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    work = Path(tempfile.mkdtemp(prefix="bench_eval_tiles-"))
    n = write_pairs(work / "shards", args.images, args.synthetic)
    model = work / "nafnet" / "model.safetensors"
    parameters = export(args.recipe, model)
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    modes = (("default", None), (f"--tile {args.tile}", args.tile))
    best: dict[str, float] = {}
    rows = []
    for _ in range(args.repeat):  # the modes alternate, so a busy spell of a shared machine hits both
        rows = []
        for label, tile in modes:
            start = time.perf_counter()
            report = evaluate(work / "shards", [model], [], EvalConfig(split="test",
                                                                       report_dir=work / f"report-{tile}",
                                                                       progress=False,
                                                                       tiling=TilingOptions(tile=tile)), console=quiet)
            best[label] = min(best.get(label, float("inf")), (time.perf_counter() - start) / n)
            info = report["protocol"]["methods"]["nafnet"]
            psnr = next(r["psnr"] for r in report["rows"] if r["f_number"] is None)
            rows.append((label, best[label], ", ".join(f"{k} ({v} images)" for k, v in info["ran"].items()), psnr))
    print(f"machine: {machine()}")
    print(f"model: {args.recipe}, {parameters:,} parameters (random weights, seed 0); {n} images of 1536x1024 "
          f"({'random' if args.synthetic or not FIXTURES.is_dir() else 'EBB! fixtures'})\n")
    print(f"fastest of {args.repeat} run(s) per mode\n")
    print("| eval | s / image | ran | PSNR (dB) |")
    print("|---|---|---|---|")
    for label, per_image, ran, psnr in rows:
        print(f"| {label} | {per_image:.2f} | {ran} | {psnr:.2f} |")
    print(f"\nspeed-up of the default over {rows[1][0]}: {rows[1][1] / rows[0][1]:.1f}x")
    inference = time_restore(model, work / "shards", modes, args.repeat)
    print(f"\n`restore_image` alone on the first image (no reading, no scoring), fastest of {args.repeat}:")
    for label, seconds in inference.items():
        print(f"- {label}: {seconds:.2f} s")
    print(f"- speed-up: {inference[rows[1][0]] / inference['default']:.1f}x")


def time_restore(model_file: Path, shards: Path, modes: tuple, repeat: int) -> dict[str, float]:
    """Seconds of `restore_image` alone on the shard's first blurred image, per mode (alternating, fastest)."""
    from defocuskit.data.reader import iter_samples
    from defocuskit.inference.load import load_model
    from defocuskit.inference.restore import restore_image
    from defocuskit.io.images import to_float

    method, recipe, net = load_model(model_file)
    blur = to_float(next(s for s in iter_samples(shards, "test") if s["blur"] is not None)["blur"])
    best: dict[str, float] = {}
    for _ in range(repeat):
        for label, tile in modes:
            start = time.perf_counter()
            restore_image(method, recipe, net, blur, progress=False, tiling=TilingOptions(tile=tile))
            best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
    return best


def memory_child(recipe_path: Path, side: int) -> None:
    """One whole-image pass at side x side; prints the peak resident memory it added, in MiB."""
    from defocuskit.inference.restore import restore_image

    recipe = load_recipe(recipe_path)
    method = get_method(recipe.method)
    torch.manual_seed(0)
    model = method.build(recipe.model, recipe.objective, False).eval()
    image = np.random.default_rng(0).random((side, side, 3), dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    restore_image(method, recipe, model, image, progress=False, tiling=TilingOptions(max_tile_pixels=side * side))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"side": side, "added_mib": round((peak - before) / 1024), "seconds": round(seconds, 1)}))


def memory(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(f"model: {args.memory} (random weights); one whole-image pass, fresh process per size\n")
    print("| image | pixels | peak memory added (MiB) | MiB / Mpx | s |")
    print("|---|---|---|---|---|")
    for side in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--memory-child",
                               str(args.memory), str(side)], capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        mpx = side * side / 1e6
        print(f"| {side}x{side} | {side * side:,} | {row['added_mib']} | {row['added_mib'] / mpx:.0f} | {row['seconds']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("recipes/nafnet-tiny.yaml"))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode, alternating; the fastest is reported")
    parser.add_argument("--synthetic", action="store_true", help="random 1536x1024 images instead of the EBB fixtures")
    parser.add_argument("--memory", type=Path, default=None, help="a recipe: peak memory of whole-image passes")
    parser.add_argument("--sizes", default="256,512,1024", help="--memory: square image sides")
    parser.add_argument("--memory-child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(Path(args.memory_child[0]), int(args.memory_child[1]))
    elif args.memory is not None:
        memory(args)
    else:
        time_eval(args)


if __name__ == "__main__":
    main()
