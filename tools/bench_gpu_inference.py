"""Where inference time goes on a GPU, and what bf16, CUDA graphs and a compiled DCNv4 would give (issue 22).

    python tools/bench_gpu_inference.py --out gpu-inference.json [--profile-out rddm-profile.txt]   # one GPU, ~3 min
    python tools/bench_gpu_inference.py --tiny --out tiny.json                                      # CPU smoke run

Every row is measured side by side in one process on random weights (seed 0; timing does not depend on them), the
fastest of --repeat runs after one untimed run of the same shape:

  rddm/fp32, rddm/bf16        paper RDDM, 2 DDIM steps on one 1680x1120 RGB image (`restore_image`, precision=)
  nafnet/fp32, nafnet/bf16    paper NAFNet, one 1536x1024 image, whole (`restore_image`)
  hidd/released-fp32, -bf16   HIDD's released sampler, --hidd-steps steps x 4 NFE on one 256x256 image
  hidd/net-eager, -bf16       one network call of HIDD (256x256, batch 1): ms per call, median of 30
  hidd/net-graph              the same call through diffusion.cuda_graph (a CUDA graph replay; GPU only)
  hidd/{released,fast}-eager  the samplers (released: --hidd-steps steps; fast: 10 NFE; identity consistency) with
  hidd/{...}-graphed          the network's calls eager (DEFOCUSKIT_CUDA_GRAPHS=0) and from CUDA graphs (default)
  dcn/eager, dcn/compiled     RDDM's first DCNv4 layer alone at the size it ran at (compiled: torch.compile of the
                              layer, its compile time beside it; GPU only unless --compile)

Each bf16 row gives the largest difference of its output from the fp32 row's. --profile-out writes torch.profiler's
table of the operators of one fp32 RDDM image, by device time (by CPU time on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from defocuskit.diffusion.cuda_graph import ENV, WARM_UP_CALLS, GraphedScore  # noqa: E402
from defocuskit.inference.restore import resolve_sampler, restore_image  # noqa: E402
from defocuskit.methods import get_method  # noqa: E402
from defocuskit.methods.recipes import load_recipe  # noqa: E402
from defocuskit.models.deform import DCNv4  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fastest(device: str, fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """(fastest seconds of `repeat` timed runs after one untimed run, the last output)."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def network(name: str, device: str) -> tuple[Any, Any, torch.nn.Module]:
    recipe = load_recipe(name)
    method = get_method(recipe.method)
    torch.manual_seed(0)
    return method, recipe, method.build(recipe.model, recipe.objective, False).to(device).eval()


def peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def image_rows(rows: dict, key: str, recipe: str, size: tuple[int, int], args: argparse.Namespace,
               **kw: Any) -> torch.nn.Module:
    """rows[key/fp32], rows[key/bf16]: one image through `restore_image` in each precision."""
    method, rec, model = network(recipe, args.device)
    image = np.random.default_rng(0).random((*size, kw.pop("channels", 3)), dtype=np.float32)
    outputs = {}

    def run(precision: str) -> np.ndarray:
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return restore_image(method, rec, model, image, device=args.device, progress=False, seed=0, **kw)

    for precision in ("fp32", "bf16"):
        reset_peak(args.device)
        seconds, outputs[precision] = fastest(args.device, lambda p=precision: run(p), args.repeat)
        rows[f"{key}/{precision}"] = {"s_per_image": seconds, "peak_mib": peak_mib(args.device),
                                      "what": f"{recipe}, {size[1]}x{size[0]}x{image.shape[2]}"}
    rows[f"{key}/bf16"]["max_abs_diff"] = float(np.abs(outputs["bf16"] - outputs["fp32"]).max())
    rows[f"{key}/bf16"]["speedup"] = rows[f"{key}/fp32"]["s_per_image"] / rows[f"{key}/bf16"]["s_per_image"]
    return model


def hidd_net_rows(rows: dict, model: torch.nn.Module, size: int, device: str) -> None:
    """One network call of HIDD: eager fp32, eager bf16 and (GPU) a CUDA graph replay; median ms of 30."""
    x = torch.rand(1, 1, size, size, device=device)
    sigma = torch.full((1,), 10.0, device=device)

    def median_ms(call: Callable[[], Any]) -> float:
        for _ in range(3):
            call()
        times = []
        for _ in range(30):
            sync(device)
            start = time.perf_counter()
            call()
            sync(device)
            times.append(1000 * (time.perf_counter() - start))
        return statistics.median(times)

    with torch.no_grad():
        rows["hidd/net-eager"] = {"ms_per_call": median_ms(lambda: model(x, sigma))}
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            rows["hidd/net-bf16"] = {"ms_per_call": median_ms(lambda: model(x, sigma))}
        if device.startswith("cuda"):
            score = GraphedScore(model)  # as the samplers call it: warm-up calls, the capture, then replays
            for _ in range(WARM_UP_CALLS + 1):
                score(x, sigma)
            rows["hidd/net-graph"] = {"ms_per_call": median_ms(lambda: score(x, sigma))}
            rows["hidd/net-graph"]["max_abs_diff"] = float((score(x, sigma) - model(x, sigma)).abs().max())


def graph_rows(rows: dict, recipe: Any, model: torch.nn.Module, size: int, args: argparse.Namespace,
               released: Any) -> None:
    """hidd/{released,fast}-{eager,graphed}: the samplers with the score network's calls eager
    (DEFOCUSKIT_CUDA_GRAPHS=0) and replayed from CUDA graphs (the default; eager on a CPU), fp32."""
    method = get_method(recipe.method)
    image = np.random.default_rng(1).random((size, size, 1), dtype=np.float32)
    fast = resolve_sampler(recipe, None, name="fast", sets=["sampler.consistency=identity"])
    for name, cfg in (("released", released), ("fast", fast)):
        outputs = {}
        for label, env in (("eager", "0"), ("graphed", "1")):
            os.environ[ENV] = env
            seconds, outputs[label] = fastest(args.device, lambda c=cfg: restore_image(
                method, recipe, model, image, device=args.device, progress=False, seed=0, sampler_cfg=c), args.repeat)
            rows[f"hidd/{name}-{label}"] = {"s_per_image": seconds, "nfe_per_s": cfg.resolved().nfe() / seconds}
        os.environ.pop(ENV)
        row = rows[f"hidd/{name}-graphed"]
        row["speedup"] = rows[f"hidd/{name}-eager"]["s_per_image"] / row["s_per_image"]
        row["max_abs_diff"] = float(np.abs(outputs["graphed"] - outputs["eager"]).max())


def dcn_rows(rows: dict, layer: torch.nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> None:
    """RDDM's first DCNv4 layer alone at the input shape it ran at: eager, and compiled (torch.compile)."""
    x = torch.randn(shape, device=args.device)
    with torch.no_grad():
        seconds, ref = fastest(args.device, lambda: layer(x), args.repeat)
        rows["dcn/eager"] = {"ms_per_call": 1000 * seconds, "what": f"DCNv4 on {tuple(shape)}"}
        if args.compile:
            try:
                compiled_row(rows, layer, x, ref, args)
            except Exception as exc:  # noqa: BLE001 (the other rows are still worth having)
                rows["dcn/compiled"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


@torch.no_grad()
def compiled_row(rows: dict, layer: torch.nn.Module, x: torch.Tensor, ref: torch.Tensor,
                 args: argparse.Namespace) -> None:
    """dcn/compiled: the layer through torch.compile (its first call's seconds as compile_s)."""
    compiled = torch.compile(layer)
    start = time.perf_counter()
    compiled(x)
    sync(args.device)
    compile_s = time.perf_counter() - start
    seconds, out = fastest(args.device, lambda: compiled(x), args.repeat)
    rows["dcn/compiled"] = {"ms_per_call": 1000 * seconds, "compile_s": compile_s,
                            "max_abs_diff": float((out - ref).abs().max()),
                            "speedup": rows["dcn/eager"]["ms_per_call"] / (1000 * seconds)}


def check_outputs(out: Path | None, profile_out: Path | None) -> str | None:
    """The one-line error for an --out or --profile-out this tool may not write (before any row runs): a folder, a
    path under a file, or a file it did not write (--out: its JSON rows; --profile-out: a profiler table)."""
    for option, path, ours in (("--out", out, _rows_file), ("--profile-out", profile_out, _profile_file)):
        if path is None:
            continue
        if path.is_dir():
            return f"{option} {path}: is a folder; give a file name"
        if not path.parent.is_dir():
            return f"{option} {path}: {path.parent} is not a folder"
        if (path.exists() or path.is_symlink()) and (path.is_symlink() or not ours(path)):
            return f"{option} {path}: exists and was not written by bench_gpu_inference; it is left as it is: give " \
                   "another file name"
    return None


def _rows_file(path: Path) -> bool:
    try:
        return set(json.loads(path.read_text(encoding="utf-8"))) == {"device", "torch", "rows"}
    except (OSError, ValueError, TypeError):
        return False


def _profile_file(path: Path) -> bool:
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return False
    return first.startswith("profiler failed:") or (first.startswith("-") and set(first) <= {"-", " "})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the -tiny recipes at small sizes on the CPU")
    parser.add_argument("--out", type=Path, default=None, help="write the rows here (JSON)")
    parser.add_argument("--profile-out", type=Path, default=None, help="torch.profiler table of one RDDM image")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--hidd-steps", type=int, default=None, help="released sampler steps (GPU 250, tiny 3)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time a compiled DCNv4 too (default: on a GPU)")
    args = parser.parse_args(argv)
    if (fault := check_outputs(args.out, args.profile_out)) is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    tiny = "-tiny" if args.tiny else ""
    args.device = "cpu" if args.tiny else "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible: run on a GPU machine, or --tiny on the CPU", file=sys.stderr)
        return 2
    args.compile = args.device == "cuda" if args.compile is None else args.compile
    steps = args.hidd_steps or (3 if args.tiny else 250)
    sizes = {"rddm": (64, 96), "nafnet": (48, 64), "hidd": 32} if args.tiny else \
        {"rddm": (1120, 1680), "nafnet": (1024, 1536), "hidd": 256}
    rows: dict[str, dict] = {}
    began = time.perf_counter()

    def save() -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {list(rows)[-1]}", file=sys.stderr, flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                                            "torch": torch.__version__, "rows": rows}, indent=1))

    shapes: list[tuple[int, ...]] = []
    rddm = image_rows(rows, "rddm", "rddm" + tiny, sizes["rddm"], args)
    save()
    layer = next(m for m in rddm.modules() if isinstance(m, DCNv4))
    hook = layer.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(inp[0].shape)))
    rddm_recipe = load_recipe("rddm" + tiny)
    rddm_method = get_method(rddm_recipe.method)
    image = np.random.default_rng(0).random((*sizes["rddm"], 3), dtype=np.float32)
    restore_image(rddm_method, rddm_recipe, rddm, image, device=args.device, progress=False)
    hook.remove()
    if args.profile_out is not None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        try:
            with profile(activities=activities) as prof:
                restore_image(rddm_method, rddm_recipe, rddm, image, device=args.device, progress=False)
                sync(args.device)
            key = "device_time_total" if args.device == "cuda" else "cpu_time_total"
            args.profile_out.write_text(prof.key_averages().table(sort_by=key, row_limit=25))
        except Exception as exc:  # noqa: BLE001 (the profile is a side product)
            args.profile_out.write_text(f"profiler failed: {type(exc).__name__}: {exc}\n")
    dcn_rows(rows, layer, shapes[-1], args)
    save()
    del rddm
    image_rows(rows, "nafnet", "nafnet" + tiny, sizes["nafnet"], args)
    save()
    s = sizes["hidd"]
    hidd_recipe = load_recipe("hidd" + tiny)
    cfg = resolve_sampler(hidd_recipe, steps, name="released", sets=["sampler.consistency=identity"])
    hidd = image_rows(rows, "hidd/released", "hidd" + tiny, (s, s), args, channels=1, sampler_cfg=cfg)
    for p in ("fp32", "bf16"):
        rows[f"hidd/released/{p}"]["nfe_per_s"] = cfg.resolved().nfe() / rows[f"hidd/released/{p}"]["s_per_image"]
    save()
    graph_rows(rows, hidd_recipe, hidd, s, args, cfg)
    save()
    hidd_net_rows(rows, hidd, s, args.device)
    save()
    for name, row in rows.items():
        print(f"| {name} | " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in row.items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
