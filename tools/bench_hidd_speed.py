"""HIDD fast + physics before and after the speed-up (issue 22), side by side in one run: seconds and PSNR per image.

    python tools/bench_hidd_speed.py --model PRIOR.safetensors --shards SHARDS128 [--large SHARDS512] \
        [--per-aperture 1] [--baseline 88a52cb] [--extra NAME:KEY=VALUE,KEY=VALUE ...]

Each variant runs in its own worker process that imports defocuskit from its own tree: `before` from the
package as it was at `--baseline` (extracted with `git archive`), the others from this checkout. The
images go round the workers in turn, one image at a time, so every variant sees the same machine load;
seconds are those of `restore_image` alone (the worker has loaded the model and warmed up). Variants:

- `before`: the baseline's code with the former fast settings (`BEFORE`; fast + physics, oracle CoC throughout);
- `exact`: this checkout with the former fast settings (`BEFORE`: 40 steps, sigma_start 0.1, zeta 0.3): only
  the changes that keep the result (fast operator, fused attention, K^T y kept), so its PSNR is `before`'s;
- `new`: this checkout with the fast settings of its packaged recipes (10 steps, sigma_start 0.05, zeta 1);
- `--extra NAME:KEY=VALUE,...`: this checkout with sampler overrides (for tuning; `--split train`).

Images: the first `--per-aperture` test-split pairs of every f-number in SHARDS128, and the first test
pair of `--large` (a larger rendering), each with its oracle (signed) CoC map. Prints a markdown table
with seconds per image, the speed-up over `before`, PSNR and the largest difference from `before`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tool_folders import foreign_results  # tools/, first on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "88a52cb"  # the last commit before the speed-up
BEFORE = {"steps": 40, "sigma_start": 0.1, "zeta": 0.3}  # the fast sampler of issue 8 (the baseline's recipes)
FAST_KEYS = ("name", "steps", "sigma_start", "dc_sigma", "zeta", "consistency", "blur_model", "blur_levels", "cg_steps",
             "linear_light")


def packaged_fast_settings() -> dict[str, Any]:
    """The fast-sampler keys of this checkout's packaged recipes/hidd-tiny.yaml (every HIDD recipe has the same)."""
    import yaml

    sampler = yaml.safe_load((ROOT / "defocuskit" / "recipes" / "hidd-tiny.yaml").read_text())["sampler"]
    return {k: sampler[k] for k in FAST_KEYS}


def worker(tree: str, model_path: str, overrides: dict[str, Any]) -> None:
    """Serve restore jobs from stdin ({"blur", "coc", "out"} .npy paths), one JSON line back per job."""
    sys.path.insert(0, tree)
    import dataclasses

    import torch

    from defocuskit.inference.load import load_model
    from defocuskit.inference.restore import restore_image

    method, recipe, model = load_model(Path(model_path), expect_method="hidd")
    known = {f.name for f in dataclasses.fields(recipe.sampler)}
    cfg = dataclasses.replace(recipe.sampler, **{k: v for k, v in overrides.items() if k in known}).resolved()
    warm = np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)
    restore_image(method, recipe, model, warm, sampler_cfg=dataclasses.replace(cfg, steps=1),
                  coc=np.full((40, 40), 3.0, np.float32), progress=False)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "settings": dataclasses.asdict(cfg),
                      "file": str(Path(sys.modules["defocuskit"].__file__).parent)}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        blur, coc = np.load(job["blur"]), np.load(job["coc"])
        t0 = time.perf_counter()
        out = restore_image(method, recipe, model, blur, sampler_cfg=cfg, coc=coc, progress=False, seed=0)
        seconds = time.perf_counter() - t0
        np.save(job["out"], out)
        print(json.dumps({"seconds": seconds}), flush=True)


def images(shards: Path, per_aperture: int, limit: int | None, split: str = "test") -> list[dict[str, Any]]:
    """The first `per_aperture` `split` pairs of every f-number (at most `limit`), with signed oracle CoC."""
    sys.path.insert(0, str(ROOT))
    from defocuskit.data.reader import iter_samples, signed_coc
    from defocuskit.io.images import to_float

    seen: dict[Any, int] = {}
    out = []
    for s in iter_samples(shards, split=split):
        f = s["meta"].get("f_number")
        if s.get("blur") is None or s.get("coc") is None or seen.get(f, 0) >= per_aperture:
            continue
        seen[f] = seen.get(f, 0) + 1
        out.append({"key": s["key"], "f": f, "blur": to_float(s["blur"]), "sharp": to_float(s["sharp"]),
                    "coc": signed_coc(s).astype(np.float32)})
        if limit is not None and len(out) >= limit:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a HIDD prior (.safetensors)")
    parser.add_argument("--shards", type=Path, help="synthetic shards at 128 px (test split used)")
    parser.add_argument("--large", type=Path, default=None, help="synthetic shards of a larger size (one test pair)")
    parser.add_argument("--per-aperture", type=int, default=1)
    parser.add_argument("--split", default="test", help="split of SHARDS128 scored (train: for tuning settings)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the code before the speed-up")
    parser.add_argument("--extra", nargs="*", default=[], help="NAME:KEY=VALUE,... more variants of this checkout")
    parser.add_argument("--skip", default="", help="comma-separated variants not to run (e.g. before,exact)")
    parser.add_argument("--out", type=Path, default=None, help="write results.json here")
    parser.add_argument("--worker", nargs=3, metavar=("TREE", "MODEL", "OVERRIDES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], json.loads(args.worker[2]))
        return
    if args.model is None or args.shards is None:
        parser.error("--model and --shards are required")
    keys = {"variants", "rows"}
    if args.out is not None and (fault := foreign_results(args.out / "results.json", keys, Path(__file__).name)):
        parser.error(fault)  # one line, exit 2, before any work
    import yaml

    sys.path.insert(0, str(ROOT))
    from defocuskit.eval.metrics import psnr

    work = Path(tempfile.mkdtemp(prefix="bench-hidd-speed-"))
    old_tree = work / "before"
    old_tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "defocuskit"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
    variants: dict[str, tuple[str, dict[str, Any]]] = {"before": (str(old_tree), dict(BEFORE)),
                                                        "exact": (str(ROOT), dict(BEFORE)),
                                                        "new": (str(ROOT), packaged_fast_settings())}
    for item in args.extra:
        name, _, sets = item.partition(":")
        variants[name] = (str(ROOT), {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in sets.split(",") if kv)})
    for name in filter(None, args.skip.split(",")):
        variants.pop(name)
    pics = images(args.shards, args.per_aperture, None, args.split)
    if args.large is not None:
        pics += [dict(p, large=True) for p in images(args.large, 1, 1)]
    for i, p in enumerate(pics):
        np.save(work / f"{i}-blur.npy", p["blur"])
        np.save(work / f"{i}-coc.npy", p["coc"])
    procs, info = {}, {}
    for name, (tree, overrides) in variants.items():
        procs[name] = subprocess.Popen([sys.executable, __file__, "--worker", tree, str(args.model.resolve()), json.dumps(overrides)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=work)
    for name, proc in procs.items():  # started together, so loading overlaps
        info[name] = json.loads(proc.stdout.readline())
        print(f"# {name}: {info[name]['file']}, {info[name]['threads']} threads, "
              f"settings {json.dumps({k: info[name]['settings'][k] for k in sorted(info[name]['settings'])})}",
              flush=True)
    rows: list[dict[str, Any]] = []
    names = list(variants)
    for i, p in enumerate(pics):
        order = names[i % len(names):] + names[: i % len(names)]  # who goes first rotates
        for name in order:
            out = work / f"{i}-{name}.npy"
            procs[name].stdin.write(json.dumps({"blur": str(work / f"{i}-blur.npy"), "coc": str(work / f"{i}-coc.npy"),
                                                "out": str(out)}) + "\n")
            procs[name].stdin.flush()
            seconds = json.loads(procs[name].stdout.readline())["seconds"]
            result = np.clip(np.load(out), 0, 1).astype(np.float64)
            rows.append({"image": p["key"], "f": p["f"], "size": list(p["blur"].shape[:2]), "large": p.get("large", False),
                         "variant": name, "seconds": seconds, "psnr": psnr(result, p["sharp"].astype(np.float64)),
                         "psnr_input": psnr(p["blur"].astype(np.float64), p["sharp"].astype(np.float64))})
            print(json.dumps(rows[-1]), flush=True)
        if "before" in names:
            ref = np.load(work / f"{i}-before.npy")
            for r in rows[-len(names):]:
                r["max_diff"] = float(np.abs(np.load(work / f"{i}-{r['variant']}.npy") - ref).max())
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"variants": {k: info[k] for k in names}, "rows": rows}, indent=1))
    print("\n| variant | images | size | s / image | speed-up | PSNR in | PSNR out | max abs diff from before |")
    print("|---|---|---|---|---|---|---|---|")
    for large in (False, True):
        mine = [r for r in rows if r["large"] == large]
        if not mine:
            continue
        base = {r["image"]: r["seconds"] for r in mine if r["variant"] == "before"}
        for name in names:
            rs = [r for r in mine if r["variant"] == name]
            sec = float(np.mean([r["seconds"] for r in rs]))
            speed = f"{np.mean([base[r['image']] for r in rs]) / sec:.2f}x" if base else "-"
            diff = f"{max(r.get('max_diff', float('nan')) for r in rs):.1e}" if base else "-"
            size = "x".join(str(s) for s in rs[0]["size"][::-1]) if large else f"{rs[0]['size'][1]} px"
            print(f"| {name} | {len(rs)} | {size} | {sec:.1f} | {speed} | {np.mean([r['psnr_input'] for r in rs]):.2f} | "
                  f"{np.mean([r['psnr'] for r in rs]):.2f} | {diff} |")


if __name__ == "__main__":
    main()
