"""The by-aperture evaluator: score checkpoints and baselines on a shard split, per f-number, beside the input."""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from rich.console import Console

from defocuskit.coc_source import CocError, CocSource
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
    align: str | bool | None = None  # None, "ecc" (True: output registered onto the GT), "flow" (GT onto the output)
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


ALIGN_MODES = {
    "ecc": "each output, and the blurred input, registered to the sharp reference before scoring "
           "(defocuskit.data.register.align, ECC affine, reflected borders)",
    "flow": "JDRL's protocol on misaligned test pairs (Li et al.; liyucs/JDRL test_model.py): the sharp reference "
            "warped onto each output, and onto the blurred input, by dense optical flow (defocuskit.flow, OpenCV "
            "DIS on luminance, bilinear; where the flow leaves the frame the reference is kept as is) before scoring",
}


def _prepare(out: np.ndarray, ref: np.ndarray, depth: int, align: str | bool | None) -> tuple[np.ndarray, np.ndarray]:
    """(output, reference) as scored: the output rounded to the reference's bit depth (as written); with
    align "ecc" the output registered onto the reference, with "flow" the reference warped onto the output."""
    if out.shape[:2] != ref.shape[:2]:
        raise ValueError(f"output is {out.shape[1]}x{out.shape[0]}, reference {ref.shape[1]}x{ref.shape[0]}")
    if not np.isfinite(out).all():
        raise ValueError("output has non-finite values (NaN or inf)")
    unit = metrics.to_unit(from_float(np.clip(out, 0.0, 1.0), depth))
    if align is True or align == "ecc":
        from defocuskit.data.register import align as register

        unit, _ = register(unit, ref, method="ecc", motion="affine")
        return np.asarray(unit, np.float64), ref
    if align == "flow":
        return unit, flow_aligned_reference(unit, ref)
    return unit, ref


def flow_aligned_reference(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`ref` (H, W, C) warped onto `out`'s grid by dense optical flow; pixels whose flow leaves the frame keep `ref`."""
    import torch

    from defocuskit.flow import in_frame_mask, warp_onto

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32).transpose(2, 0, 1))[None]

    warped, flow = warp_onto(tensor(out), tensor(ref))
    inside = in_frame_mask(flow)
    moved = (warped * inside)[0].numpy().transpose(1, 2, 0).astype(np.float64)
    keep = 1.0 - inside[0, 0].numpy()[..., None].astype(np.float64)
    return moved + keep * ref


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

    Samples are shard samples ({"key", "sharp", "blur", "coc", "meta"}); sharp-only ones and blur-map ones
    (no sharp reference: CUHK blur detection) are counted in the notes, not scored.
    The blurred input's scores are computed once per sample and stored beside each method's.
    """
    console = console or Console(stderr=True)
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    notes: list[str] = []
    depths: dict[str, set[int]] = {}
    n_pairs = n_sharp_only = n_blur_map = n_no_f = 0
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
            if sample.get("sharp") is None:
                n_blur_map += 1
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
                inp_scores = _score(*_prepare(blur_f, ref, depth, scoring.align), scoring)
            except (ValueError, RegistrationError) as exc:
                skipped.append({"key": key, "method": None, "reason": f"blurred input: {exc}"})
                continue
            for name, run in runners.items():
                if bar is not None:
                    bar.update(task, description=f"{name}: {key}")
                try:
                    out = run(blur_f, sample)
                    # The input baseline returns the input itself: its scores are the input's, computed once.
                    scores = inp_scores if out is blur_f else _score(*_prepare(out, ref, depth, scoring.align), scoring)
                except CocError:
                    raise  # a CoC source that cannot serve (e.g. --coc oracle without coc.png) stops the run
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
    if n_blur_map:
        notes.append(f"{n_blur_map} blur-map sample(s) (no sharp.png reference) were not scored")
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


def _checkpoint_runner(path: Path, *, steps: int | None, sampler: str | None, sets: list[str], tile: int | None,
                       overlap: int | None, batch: int, device: str, seed: int,
                       coc: CocSource | None) -> tuple[Runner, dict[str, Any]]:
    """Load an exported model once; a Runner that deblurs one image with it, and what the report says of it."""
    from defocuskit.infer import resolve_overlap, resolve_sampler, restore_image, sampler_settings
    from defocuskit.train.export import load_model

    try:
        method, recipe, model = load_model(path, device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{path}: "):  # already names the file and the fault
            raise EvalError(str(exc)) from exc
        raise EvalError(f"{path}: cannot be read as a defocuskit model ({exc})") from exc
    if method.output != "image":
        raise EvalError(f"{path}: a '{method.name}' model estimates {method.output.replace('_', ' ')}s; eval scores images")
    try:
        sampler_cfg = method.resolve_sampler(resolve_sampler(recipe, steps, name=sampler, sets=sets))
        info = sampler_settings(method, sampler_cfg, recipe.objective)
        size = int(tile or recipe.data.image_size)
        overlap = resolve_overlap(size, overlap)
    except ValueError as exc:
        hint = (f" (--steps {steps} goes to every model with steps; give each its own with "
                "--set LABEL:sampler.steps=N)") if steps is not None else ""
        raise EvalError(f"{path}: {exc}{hint}") from exc
    needs_coc = "coc" in info["needs"]
    if needs_coc and coc is None:
        raise EvalError(f"{path}: this model (its sampler or network) needs a CoC map: --coc map --coc-model FILE | "
                        "--coc oracle | --coc fnumber")
    model.eval()

    def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
        coc_map = coc(blur, sample.get("meta"), sample.get("coc"), name=sample["key"]) if needs_coc and coc else None
        return restore_image(method, recipe, model, blur, tile=size, overlap=overlap, batch=batch, seed=seed,
                             device=device, progress=False, sampler_cfg=sampler_cfg, coc=coc_map)

    desc = {"kind": "checkpoint", "path": str(path), "method": method.name, "sampler": info["settings"],
            "nfe": info["nfe"], "timesteps": info.get("timesteps"), "coc": coc.describe() if needs_coc and coc else None,
            "tile": size, "overlap": overlap, "batch": batch, "seed": seed, "channels": recipe.data.channels}
    return run, desc


def _baseline_runner(name: str, coc: CocSource | None = None) -> tuple[Runner, dict[str, Any]]:
    from defocuskit import baselines

    if name == "input":
        return (lambda blur, sample: baselines.input_baseline(blur)), {"kind": "baseline", "description": "the blurred input"}
    if name in ("wiener", "prox"):
        restore = baselines.wiener_baseline if name == "wiener" else baselines.prox_baseline

        def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
            meta = dict(sample.get("meta") or {}, key=sample["key"])
            coc_map = coc(blur, meta, sample.get("coc"), name=sample["key"]) if coc is not None else sample.get("coc")
            return restore(blur, meta, coc_map)

        desc = baselines.WIENER_ASSUMPTIONS if name == "wiener" else baselines.PROX_DESCRIPTION
        return run, {"kind": "baseline", "description": desc, "coc": coc.describe() if coc is not None else None}
    raise EvalError(f"unknown baseline '{name}' (known: {', '.join(baselines.BASELINES)})")


def split_label(item: str, labels: set[str], option: str) -> tuple[str | None, str]:
    """`LABEL:rest` -> (LABEL, rest) for a known label; `rest` alone -> (None, rest); an unknown label is an error."""
    head, sep, rest = item.partition(":")
    if not sep or "=" in head:
        return None, item
    if head not in labels:
        raise EvalError(f"{option} {item}: no checkpoint is labelled '{head}' (labels: {', '.join(sorted(labels)) or 'none'})")
    return head, rest


def _sampler_keys(path: Path) -> set[str]:
    """The sampler keys of the model in `path`, from the file's metadata alone (no tensors are read)."""
    import json

    from safetensors import safe_open

    from defocuskit.methods import get_method

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
        method = get_method(str(json.loads(meta["recipe"]).get("method")))
    except Exception as exc:  # unreadable file, missing or foreign metadata, unknown method
        raise EvalError(f"{path}: cannot be read as a defocuskit model ({exc})") from exc
    return {f.name for f in dataclasses.fields(method.SamplerConfig)}


def per_checkpoint_settings(paths: dict[str, Path], keys: dict[str, set[str]], samplers: list[str], sets: list[str]
                            ) -> dict[str, tuple[str | None, list[str]]]:
    """For each checkpoint label, its `--sampler` NAME and `--set` items.

    A `LABEL:` prefix aims an item at one checkpoint; an item without it goes to every checkpoint
    whose sampler has that key (`name` for --sampler), and is an error when none has.
    """
    chosen: dict[str, tuple[str | None, list[str]]] = {label: (None, []) for label in paths}
    for item in samplers:
        label, name = split_label(item, set(paths), "--sampler")
        targets = [label] if label else [lb for lb in paths if "name" in keys[lb]]
        if not targets:
            raise EvalError(f"--sampler {item}: no model given has named samplers")
        for lb in targets:
            chosen[lb] = (name, chosen[lb][1])
    for item in sets:
        label, rest = split_label(item, set(paths), "--set")
        key = rest.partition("=")[0].strip().removeprefix("sampler.")
        targets = [label] if label else [lb for lb in paths if key in keys[lb]]
        if not targets:
            raise EvalError(f"--set {item}: no model given has a sampler key '{key}'")
        for lb in targets:
            chosen[lb][1].append(rest)
    return chosen


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
    align: bool | str = False,
    limit: int | None = None,
    steps: int | None = None,
    samplers: list[str] | None = None,
    sets: list[str] | None = None,
    coc: str | None = None,
    coc_model: Path | None = None,
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

    Every check (shard folder, split, models, options) runs before any sample is scored. `align`: False,
    True or "ecc" (outputs registered onto the reference), "flow" (the reference warped onto each output:
    JDRL's protocol for misaligned test pairs).
    """
    from defocuskit.data.shards import iter_samples, shard_urls
    from defocuskit.eval.plots import plot_aperture

    console = console or Console()
    shards = Path(shards)
    align_mode = "ecc" if align is True else (align or None)
    if align_mode is not None and align_mode not in ALIGN_MODES:
        raise EvalError(f"unknown alignment '{align}' (known: {', '.join(ALIGN_MODES)})")
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
    try:
        coc_source = CocSource.create(coc, coc_model, device)
    except CocError as exc:
        raise EvalError(str(exc)) from None
    runners: dict[str, Runner] = {}
    infos: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(baselines):
        runners[name], infos[name] = _baseline_runner(name, coc_source)
    paths: dict[str, Path] = {}
    for path in checkpoints:
        paths[_label(Path(path), set(runners) | set(paths))] = Path(path)
    keys = {label: _sampler_keys(path) for label, path in paths.items()}  # each file's metadata read once
    chosen = per_checkpoint_settings(paths, keys, list(samplers or []), list(sets or []))
    steps_for = {label: steps for label in paths}
    if steps is not None:
        with_steps = {lb for lb in paths if "steps" in keys[lb]}
        if checkpoints and not with_steps:
            raise EvalError(f"--steps {steps}: no 'steps' setting in the sampler of any model given "
                            f"({', '.join(str(p) for p in checkpoints)}); it applies to the diffusion methods")
        steps_for = {lb: (steps if lb in with_steps else None) for lb in paths}
    for label, path in paths.items():
        name, items = chosen[label]
        runners[label], infos[label] = _checkpoint_runner(
            path, steps=steps_for[label], sampler=name, sets=items, tile=tile, overlap=overlap, batch=batch,
            device=device, seed=seed, coc=coc_source)
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
    scoring = Scoring(ssim_variant=ssim_variant, align=align_mode, lpips_model=lpips_model)
    try:
        result = evaluate_samples(iter_samples(shards, split), runners, scoring=scoring, by_aperture=by_aperture,
                                  stops=stops, limit=limit, save_images=save_images, progress=progress,
                                  console=Console(stderr=True) if progress else console)
    except CocError as exc:
        raise EvalError(str(exc)) from None
    if result["pairs"] == 0 and not result["skipped"]:
        raise EvalError(f"split '{split}' of {shards} has no paired samples (with blur.png and sharp.png) to score")
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
        "alignment": ALIGN_MODES[align_mode] if align_mode else "none: outputs scored as produced, pixel for pixel",
        "grouping": ("full stops (defocuskit.optics.full_stop)" if stops else "f_number rounded to 0.1")
                    if by_aperture else "none (--no-by-aperture): one 'all' row per method",
        "coc": coc_source.describe() if coc_source is not None else
               "no --coc: Wiener uses the shard's coc.png where present, else the f-number; no model needed one",
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
