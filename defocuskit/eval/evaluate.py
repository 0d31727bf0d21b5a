"""The by-aperture evaluator: score checkpoints and baselines on a shard split, per f-number, beside the input."""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from rich.console import Console

from defocuskit.data.register import RegistrationError
from defocuskit.eval import metrics
from defocuskit.eval.report import aggregate, group_of, print_table, write_report
from defocuskit.images import from_float, to_float, write_image

PSNR_CAP_DB = 100.0  # per-image PSNR of identical images (inf) is reported as this, so means stay finite

# A runner turns one sample's blurred input (float32 (H, W, 3) in [0, 1]) into the method's output.
Runner = Callable[[np.ndarray, dict[str, Any]], np.ndarray]


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message names the file, split or key."""


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How outputs are scored (the evaluation protocol's choices)."""

    ssim_variant: str = "uniform7"
    align: bool = False
    lpips_model: Any = None  # an eval.lpips.LPIPSAlex, or None: LPIPS unavailable


def _score(out: np.ndarray, ref: np.ndarray, scoring: Scoring) -> dict[str, float | None]:
    lp = None
    if scoring.lpips_model is not None:
        from defocuskit.eval.lpips import lpips_distance

        lp = lpips_distance(scoring.lpips_model, out, ref)
    return {
        "psnr": metrics.psnr(out, ref, max_db=PSNR_CAP_DB),
        "ssim": metrics.ssim(out, ref, scoring.ssim_variant),
        "mae": metrics.mae(out, ref),
        "lpips": lp,
    }


def _prepare(out: np.ndarray, ref: np.ndarray, depth: int, align: bool) -> np.ndarray:
    """The output as scored: rounded to the reference's bit depth (as written), registered to it with --align."""
    if out.shape[:2] != ref.shape[:2]:
        raise ValueError(f"output is {out.shape[1]}x{out.shape[0]}, reference {ref.shape[1]}x{ref.shape[0]}")
    if not np.isfinite(out).all():
        raise ValueError("output has non-finite values (NaN or inf)")
    unit = metrics.to_unit(from_float(np.clip(out, 0.0, 1.0), depth))
    if align:
        from defocuskit.data.register import align as register

        unit, _ = register(unit, ref, method="ecc", motion="affine")
        unit = np.asarray(unit, np.float64)
    return unit


def _safe_name(key: str) -> str:
    return key.replace("/", "_").replace(os.sep, "_")


def evaluate_samples(
    samples: Iterable[dict[str, Any]],
    runners: dict[str, Runner],
    *,
    scoring: Scoring = Scoring(),
    by_aperture: bool = True,
    stops: bool = False,
    limit: int | None = None,
    save_images: Path | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score every paired sample with every runner; returns {"rows", "images", "skipped", "notes", "bit_depth"}.

    Samples are shard samples ({"key", "sharp", "blur", "coc", "meta"}); sharp-only ones are ignored.
    The blurred input's scores are computed once per sample and stored beside each method's.
    """
    console = console or Console(stderr=True)
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    notes: list[str] = []
    depths: dict[str, set[int]] = {}
    n_pairs = n_sharp_only = n_no_f = 0
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar_cm: Any = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               console=console, transient=True)
    else:
        bar_cm = nullcontext(None)
    with bar_cm as bar:
        task = bar.add_task("scoring", total=limit) if bar else None
        for sample in samples:
            if limit is not None and n_pairs >= limit:
                break
            key, meta = sample["key"], dict(sample.get("meta") or {})
            if sample.get("blur") is None:
                n_sharp_only += 1
                continue
            sharp, blur = sample["sharp"], sample["blur"]
            if sharp.shape != blur.shape:
                skipped.append({"key": key, "method": None, "reason": f"blur is {blur.shape[1]}x{blur.shape[0]}, "
                                f"sharp is {sharp.shape[1]}x{sharp.shape[0]} (width x height)"})
                continue
            n_pairs += 1
            depth = 16 if sharp.dtype == np.uint16 else 8
            depths.setdefault(str(meta.get("source") or "unknown"), set()).add(depth)
            f_number = meta.get("f_number")
            group = group_of(f_number, stops) if by_aperture else None
            n_no_f += f_number is None
            ref = metrics.to_unit(sharp)
            blur_f = to_float(blur)
            try:
                inp_scores = _score(_prepare(blur_f, ref, depth, scoring.align), ref, scoring)
            except (ValueError, RegistrationError) as exc:
                skipped.append({"key": key, "method": None, "reason": f"blurred input: {exc}"})
                continue
            for name, run in runners.items():
                if bar is not None:
                    bar.update(task, description=f"{name}: {key}")
                try:
                    out = run(blur_f, sample)
                    # The input baseline returns the input itself: its scores are the input's, computed once.
                    scores = inp_scores if out is blur_f else _score(_prepare(out, ref, depth, scoring.align), ref, scoring)
                except (ValueError, RegistrationError) as exc:  # a reported skip for this method and sample
                    skipped.append({"key": key, "method": name, "reason": str(exc)})
                    continue
                images.append({
                    "key": key, "method": name, "source": meta.get("source"), "f_number": group,
                    "f_number_recorded": f_number, **scores,
                    **{f"{m}_input": v for m, v in inp_scores.items()},
                })
                if save_images is not None:
                    dest = Path(save_images) / _safe_name(name) / f"{_safe_name(key)}.png"
                    write_image(dest, from_float(np.clip(out, 0.0, 1.0), depth))
            if bar is not None:
                bar.advance(task)
    if n_sharp_only:
        notes.append(f"{n_sharp_only} sharp-only sample(s) (no blur.png) were not scored")
    if by_aperture and n_pairs and n_no_f == n_pairs:
        notes.append("no sample has an f_number: --by-aperture falls back to one 'all' row per method")
    elif by_aperture and n_no_f:
        notes.append(f"{n_no_f} sample(s) without an f_number are counted only in the 'all' rows")
    for s in skipped:
        notes.append(f"skipped {s['key']}" + (f" ({s['method']})" if s["method"] else "") + f": {s['reason']}")
    return {
        "rows": aggregate(images, list(runners), by_aperture),
        "images": images,
        "skipped": skipped,
        "notes": notes,
        "bit_depth": {k: sorted(v) for k, v in sorted(depths.items())},
        "pairs": n_pairs,
    }


def _available_splits(folder: Path) -> str:
    from defocuskit.data.shards import ShardError, read_manifest

    try:
        counts = read_manifest(folder)["counts"]["by_split"]
        found = {str(k): int(v) for k, v in counts.items()}
    except (FileNotFoundError, ShardError, KeyError, TypeError, ValueError):
        found = {}
        for tar in folder.glob("*-*.tar"):
            found.setdefault(tar.name.rsplit("-", 1)[0], 0)
    if not found:
        return "none"
    return ", ".join(f"{k} ({v} samples)" if v else k for k, v in sorted(found.items()))


def _checkpoint_runner(path: Path, *, steps: int | None, tile: int | None, overlap: int | None, batch: int,
                       device: str, seed: int) -> tuple[Runner, dict[str, Any]]:
    """Load an exported model once; a Runner that deblurs one image with it, and what the report says of it."""
    from defocuskit.infer import resolve_overlap, resolve_sampler, restore_image
    from defocuskit.train.export import load_model
    from defocuskit.train.recipe import recipe_to_dict

    try:
        method, recipe, model = load_model(path, device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise EvalError(f"{path}: cannot be read as a defocuskit model ({exc})") from exc
    if method.output != "image":
        raise EvalError(f"{path}: a '{method.name}' model estimates {method.output.replace('_', ' ')}s; eval scores images")
    if not hasattr(recipe.sampler, "steps"):
        steps = None  # --steps applies to the sampling methods; a one-pass model beside them runs as it is
    try:
        sampler = resolve_sampler(recipe, steps)
    except ValueError as exc:
        raise EvalError(f"{path}: {exc}") from exc
    size = int(tile or recipe.data.image_size)
    try:
        overlap = resolve_overlap(size, overlap)
    except ValueError as exc:
        raise EvalError(f"{path}: {exc}") from exc
    model.eval()

    def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
        return restore_image(method, recipe, model, blur, tile=size, overlap=overlap, batch=batch, seed=seed,
                             device=device, progress=False, sampler_cfg=sampler)

    sampler_dict = recipe_to_dict(recipe).get("sampler")
    if dataclasses.is_dataclass(sampler):
        sampler_dict = {f.name: getattr(sampler, f.name) for f in dataclasses.fields(sampler)}
    info = {"kind": "checkpoint", "path": str(path), "method": method.name, "sampler": sampler_dict,
            "tile": size, "overlap": overlap, "batch": batch, "seed": seed, "channels": recipe.data.channels}
    return run, info


def _baseline_runner(name: str) -> tuple[Runner, dict[str, Any]]:
    from defocuskit import baselines

    if name == "input":
        return (lambda blur, sample: baselines.input_baseline(blur)), {"kind": "baseline", "description": "the blurred input"}
    if name == "wiener":
        def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
            return baselines.wiener_baseline(blur, dict(sample.get("meta") or {}, key=sample["key"]), sample.get("coc"))

        return run, {"kind": "baseline", "description": baselines.WIENER_ASSUMPTIONS}
    raise EvalError(f"unknown baseline '{name}' (known: {', '.join(baselines.BASELINES)})")


def _label(path: Path, taken: set[str]) -> str:
    base = path.parent.name if path.stem == "model" and path.parent.name else path.stem
    label, i = base, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    return label


def _libraries() -> dict[str, str]:
    import cv2
    import skimage
    import torch

    import defocuskit

    return {"numpy": np.__version__, "scikit-image": skimage.__version__, "torch": torch.__version__,
            "opencv": cv2.__version__, "defocuskit": defocuskit.__version__}


def evaluate(
    shards: Path,
    checkpoints: list[Path],
    baselines: list[str],
    split: str = "test",
    by_aperture: bool = True,
    stops: bool = False,
    align: bool = False,
    limit: int | None = None,
    steps: int | None = None,
    save_images: Path | None = None,
    report_dir: Path = Path("report"),
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 4,
    device: str = "cpu",
    seed: int = 0,
    ssim_variant: str = "uniform7",
    lpips_weights: list[Path] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score checkpoints and baselines on `split` of a shard folder; writes report.json, report.csv, aperture.png.

    Every check (shard folder, split, models, options) runs before any sample is scored.
    """
    from defocuskit.data.shards import iter_samples, shard_urls
    from defocuskit.eval.plots import plot_aperture

    console = console or Console()
    shards = Path(shards)
    if not checkpoints and not baselines:
        raise EvalError("nothing to evaluate: give at least one --checkpoint or --baseline")
    if ssim_variant not in metrics.SSIM_VARIANTS:
        raise EvalError(f"unknown SSIM variant '{ssim_variant}' (known: {', '.join(metrics.SSIM_VARIANTS)})")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be positive, got {limit}")
    if not shards.is_dir():
        raise EvalError(f"{shards}: not a shard folder")
    try:
        shard_urls(shards, split)
    except FileNotFoundError:
        raise EvalError(f"split '{split}' has no shards in {shards} (available: {_available_splits(shards)})") from None
    runners: dict[str, Runner] = {}
    infos: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(baselines):
        runners[name], infos[name] = _baseline_runner(name)
    for path in checkpoints:
        label = _label(Path(path), set(runners))
        runners[label], infos[label] = _checkpoint_runner(Path(path), steps=steps, tile=tile, overlap=overlap,
                                                          batch=batch, device=device, seed=seed)
    sampled = [label for label, info in infos.items() if "steps" in (info.get("sampler") or {})]
    if steps is not None and checkpoints and not sampled:
        raise EvalError(f"--steps {steps}: no 'steps' setting in the sampler of any model given "
                        f"({', '.join(str(p) for p in checkpoints)}); it applies to the diffusion methods")
    lpips_model, lpips_desc = None, None
    from defocuskit.eval.lpips import ENV_VAR, load_lpips

    if lpips_weights or os.environ.get(ENV_VAR):
        try:
            lpips_model = load_lpips(lpips_weights, device=device)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise EvalError(f"LPIPS weights: {exc}") from exc
        lpips_desc = "LPIPS v0.1 (AlexNet, linear heads), Zhang et al. 2018, inputs in [0,1] mapped to [-1,1]"
    else:
        lpips_desc = (f"unavailable: no LPIPS-alex weights given (--lpips-weights or ${ENV_VAR}); "
                      "the lpips package is not installed and nothing is downloaded")
    scoring = Scoring(ssim_variant=ssim_variant, align=align, lpips_model=lpips_model)
    result = evaluate_samples(iter_samples(shards, split), runners, scoring=scoring, by_aperture=by_aperture,
                              stops=stops, limit=limit, save_images=save_images, progress=progress,
                              console=Console(stderr=True) if progress else console)
    if result["pairs"] == 0 and not result["skipped"]:
        raise EvalError(f"split '{split}' of {shards} has no paired samples (with blur.png) to score")
    protocol = {
        "split": split,
        "shards": str(shards),
        "limit": limit,
        "psnr": metrics.PSNR_DESCRIPTION + f"; an output identical to its reference counts as {PSNR_CAP_DB:g} dB",
        "ssim": metrics.SSIM_VARIANTS[ssim_variant],
        "ssim_variant": ssim_variant,
        "mae": metrics.MAE_DESCRIPTION,
        "lpips": lpips_desc,
        "bit_depth": result["bit_depth"],
        "quantization": "references and inputs at their stored bit depth; outputs rounded to the reference's "
                        "bit depth (as saved) before scoring",
        "alignment": ("each output, and the blurred input, registered to the sharp reference before scoring "
                      "(defocuskit.data.register.align, ECC affine, reflected borders)") if align
                     else "none: outputs scored as produced, pixel for pixel",
        "grouping": ("full stops (defocuskit.optics.full_stop)" if stops else "f_number rounded to 0.1")
                    if by_aperture else "none (--no-by-aperture): one 'all' row per method",
        "methods": infos,
        "libraries": _libraries(),
    }
    report = {"protocol": protocol, "rows": result["rows"], "images": result["images"],
              "skipped": result["skipped"], "notes": result["notes"]}
    report_dir = Path(report_dir)
    write_report(report, report_dir)
    figure = report_dir / "aperture.png"
    figure.unlink(missing_ok=True)  # never leave an earlier run's figure beside this report
    if by_aperture and plot_aperture(report["rows"], figure) is None:
        report["notes"].append("aperture.png not written: no f-number groups")
        write_report(report, report_dir)
    print_table(report, console)
    return report
