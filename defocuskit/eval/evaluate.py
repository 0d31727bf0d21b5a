"""The by-aperture evaluator: score checkpoints and baselines on a shard split, per f-number, beside the input."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from rich.console import Console

from defocuskit.data.folder import FolderError, shard_folder_state
from defocuskit.eval import metrics, protocols
from defocuskit.eval.bound import bound_notes, check_bound_used
from defocuskit.eval.config import EvalConfig, EvalError, check_options_used
from defocuskit.eval.eta import progress_bar
from defocuskit.eval.merge import merge_parts
from defocuskit.eval.outputs import claim_outputs
from defocuskit.eval.part import score_samples
from defocuskit.eval.report import GROUPING, check_scored, library_versions, print_table, write_report_files
from defocuskit.eval.runners import (
    ACTIVE_BAR,
    Runner,
    _baseline_runner,
    _checkpoint_runner,
    _label,
    _sampler_keys,
    ensembles_per_checkpoint,
    gate_smooth_px,
    gates_per_checkpoint,
    per_checkpoint_settings,
    work_sides_per_checkpoint,
)
from defocuskit.eval.saved import SavedImages, image_names
from defocuskit.eval.scoring import ALIGN_MODES, PSNR_CAP_DB, Scoring, describe_band
from defocuskit.inference.coc_source import CocError, CocSource, camera_notes
from defocuskit.inference.scale import eval_notes
from defocuskit.io.paths import path_argument


def evaluate_samples(
    samples: Iterable[dict[str, Any]],
    runners: dict[str, Runner],
    *,
    scoring: Scoring = Scoring(),
    by_aperture: bool = True,
    stops: bool = False,
    limit: int | None = None,
    save_images: Path | SavedImages | None = None,
    progress: bool = True,
    console: Console | None = None,
    total: int | None = None,
    gather: Callable[[Any], list[Any]] | None = None,
    figure: bool = False,
) -> dict[str, Any]:
    """Score every paired sample with every runner; returns {"rows", "images", "skipped", "notes", "bit_depth",
    "pairs", "figure"}.

    Samples are shard samples ({"key", "sharp", "blur", "coc", "meta"}); sharp-only ones and blur-map ones
    (no sharp reference: CUHK blur detection) are counted in the notes, not scored.
    The blurred input's scores are computed once per sample and stored beside each method's.

    Several processes: each scores its share of the samples, each sample carrying "index", its place in
    the whole split; `gather` (ProcessGroup.gather) collects every process's part, and every process
    returns the merged result, rows in index order: the result of one process scoring them all.
    `total`: the pairs this process scores (the bar's total is that times the runners; default `limit`).
    `figure`: "figure" holds, per f-number group in f-number order (no f-number last), the `figure.figure_row`
    of the group's first pair (in index order) that every method produced an output for; else it is empty.
    """
    console = console or Console(stderr=True)
    gather = gather or (lambda obj: [obj])
    if save_images is not None and not isinstance(save_images, SavedImages):
        save_images = SavedImages(Path(save_images), None)
    try:
        with progress_bar(progress, console) as bar:
            token = ACTIVE_BAR.set(bar)
            try:
                part = score_samples(samples, runners, scoring, stops, by_aperture, limit, save_images, bar,
                                     total if total is not None else limit, figure)
            finally:
                ACTIVE_BAR.reset(token)
    except Exception as exc:
        if save_images is not None and save_images.written:
            save_images.write_manifest(finished=False)  # what this process saved is the next evaluation's to replace
        gather({"error": f"{type(exc).__name__}: {exc}"})  # the other processes stop too, instead of waiting
        raise
    parts = gather(part)
    if save_images is not None:  # every process writes the same list: of all processes' saved images
        save_images.write_manifest({f: sha for p in parts for f, sha in p.get("saved", {}).items()})
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        raise EvalError(f"another eval process failed: {failed[0]}")
    return merge_parts(parts, list(runners), by_aperture)


def _path_arguments(shards: Any, checkpoints: Any, report_dir: Any, save_images: Any) -> list[Any]:
    """The checkpoints as a list, every path argument checked (io.paths.path_argument): "" was the working folder
    (report_dir="" wrote the report there), one checkpoint's name given alone was read letter by letter."""
    path_argument("shards", shards, "the shard folder")
    if isinstance(checkpoints, (str, os.PathLike)):
        raise TypeError(f"checkpoints=: a list of model files, got one {type(checkpoints).__name__}: pass "
                        f"[{str(checkpoints)!r}]")
    checkpoints = list(checkpoints)
    for item in checkpoints:
        path_argument("checkpoints", item, "a model file")
    path_argument("report_dir", report_dir, "the report folder")
    if save_images is not None:
        path_argument("save_images", save_images, "a folder for the saved images")
    return checkpoints


def evaluate(shards: Path, checkpoints: list[Path], baselines: list[str], config: EvalConfig = EvalConfig(),
             console: Console | None = None) -> dict[str, Any]:
    """Score checkpoints and baselines on `config.split` of a shard folder; writes report.json, report.csv,
    aperture.png and, with `config.figure`, figure.png (per f-number group, crops of its first pair: input, each
    method, reference).

    Every check (shard folder, split, models, options) runs before any sample is scored. `config.align`: False,
    True or "ecc" (one warp per sample, from its input, moves input and outputs), "flow" (the reference warped
    onto each output: JDRL's protocol for misaligned test pairs). `config.limit`: the first N paired samples in
    shard order.
    `config.by_source`: the rows per (source, f-number) as well as pooled (report.add_source_rows).

    Under `accelerate launch -m defocuskit eval ...` every process scores its share of the pairs
    (`processes.shard_share`; plain "cuda" becomes the process's own GPU) and the main process writes the
    report, identical to a one-process run's; each process writes its own samples' --save-images files.
    The report's files are written to a staging folder and replace the previous ones together (a full disk
    leaves the previous report as it was). After every check the main process holds the report folder
    (`.eval.lock`): a second evaluation writing the same --report stops at once, naming the first.
    Only files an earlier evaluation wrote are replaced or removed: report.json's "files", the --save-images
    folder's manifest (`saved.SavedImages`); any other file in the way is an EvalError before any work.
    """
    from defocuskit.data.reader import describe_splits, shard_urls
    from defocuskit.eval.processes import count_pairs, pair_keys, process_group, shard_share, share_of
    from defocuskit.io.devices import resolve_device

    c = config
    split, by_aperture, stops, align, limit, steps = c.split, c.by_aperture, c.stops, c.align, c.limit, c.steps
    coc, coc_model, save_images, report_dir, tiling, device = c.coc, c.coc_model, c.save_images, c.report_dir, \
        c.tiling, c.device
    seed, ssim_variant, lpips_weights, by_source, figure, progress = c.seed, c.ssim_variant, c.lpips_weights, \
        c.by_source, c.figure, c.progress
    samplers, sets = c.samplers, c.sets
    checkpoints = _path_arguments(shards, checkpoints, report_dir, save_images)
    group = process_group()
    device = group.device(resolve_device(device))
    console = console or Console()
    shards = Path(shards)
    align_mode = "ecc" if align is True else (align or None)
    if align_mode is not None and align_mode not in ALIGN_MODES:
        raise EvalError(f"unknown alignment '{align}' (known: {', '.join(ALIGN_MODES)})")
    if not checkpoints and not baselines:
        raise EvalError("nothing to evaluate: give at least one --checkpoint or --baseline")
    if ssim_variant not in metrics.SSIM_VARIANTS:
        raise EvalError(f"unknown SSIM variant '{ssim_variant}' (known: {', '.join(metrics.SSIM_VARIANTS)})")
    if c.protocol not in protocols.PROTOCOLS:
        raise EvalError(f"unknown protocol '{c.protocol}' (known: {', '.join(protocols.PROTOCOLS)})")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be positive, got {limit}")
    if c.detail_band is not None and not 0 < c.detail_band < float("inf"):
        raise EvalError(f"--detail-band must be a positive number of pixels, got {c.detail_band}")
    if not shards.is_dir():
        raise EvalError(f"{shards}: not a shard folder")
    try:
        state = shard_folder_state(shards)  # compared again before the report is written
    except FolderError as exc:
        raise EvalError(str(exc)) from None
    try:
        shard_urls(shards, split)
    except FileNotFoundError:
        raise EvalError(f"split '{split}' has no shards in {shards} (available: {describe_splits(shards)})") from None
    try:
        coc_source = CocSource.create(coc, coc_model, device, c.coc_bound, c.camera)
    except CocError as exc:
        raise EvalError(str(exc)) from None
    runners: dict[str, Runner] = {}
    infos: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for path in checkpoints:
        paths[_label(Path(path), set(baselines) | set(paths))] = Path(path)
    gates = gates_per_checkpoint(list(paths), list(c.focus_gates), tuple(dict.fromkeys(baselines)))
    smooth = gate_smooth_px(c.gate_smooth)
    ensembles = ensembles_per_checkpoint(list(paths), list(c.ensembles))
    work_sides, work_from, work_notes = work_sides_per_checkpoint(paths, list(c.work_sides))
    for name in dict.fromkeys(baselines):
        runners[name], infos[name] = _baseline_runner(name, coc_source, gates.get(name), smooth)
    keys = {label: _sampler_keys(path) for label, path in paths.items()}  # each file's metadata read once
    chosen = per_checkpoint_settings(paths, keys, list(samplers or []), list(sets or []))
    steps_for = {label: steps for label in paths}
    if steps is not None:
        with_steps = {lb for lb in paths if "steps" in keys[lb]}
        if not with_steps:  # baselines alone have no sampler: the option would be ignored
            raise EvalError(f"--steps {steps}: no 'steps' setting in the sampler of any model given "
                            f"({', '.join(str(p) for p in checkpoints) or 'baselines only'}); it applies to the "
                            "diffusion methods")
        steps_for = {lb: (steps if lb in with_steps else None) for lb in paths}
    own_maps: dict[str, CocSource] = {}  # the CoC source of the models' own gates, one for every checkpoint
    for label, path in paths.items():
        name, items = chosen[label]
        runners[label], infos[label] = _checkpoint_runner(
            path, steps=steps_for[label], sampler=name, sets=items, tiling=tiling, device=device, seed=seed,
            coc=coc_source, gate_px=gates.get(label), ensemble=ensembles[label], gate_smooth=smooth,
            gate_given=label in gates, own_maps=own_maps, work_side=work_sides[label],
            work_side_from=work_from.get(label, "option"))
    if coc_source is not None and not any(info.get("coc") for info in infos.values()):  # the report named it
        raise EvalError(f"--coc {coc_source.kind}: no method given uses a CoC map (a model whose sampler needs one, a "
                        "focus gate, or the wiener/prox baselines); leave --coc out, or give --focus-gate PX")
    check_options_used(c, len(paths), any(info.get("focus_gate") for info in infos.values()))
    check_bound_used(c.coc_bound, coc_source, shard_urls(shards, split), limit)  # K where no sample has an f-number
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
    saver, pairs_saved = None, None
    if save_images is not None:
        pairs_saved = pair_keys(shard_urls(shards, split))
        saver = SavedImages(Path(save_images), None if pairs_saved is None else image_names(pairs_saved))
    # the main process checks every file an output would replace and holds both folders while it scores and writes;
    # the others wait for it before any work
    with claim_outputs(group, Path(report_dir), saver, runners, pairs_saved, limit):
        protocol = protocols.resolve(c.protocol, list(paths.values()))
        scoring = Scoring(ssim_variant=ssim_variant, align=align_mode, lpips_model=lpips_model,
                          quantize=protocol.quantize, detail_band=c.detail_band)
        urls = shard_urls(shards, split)
        pairs = count_pairs(urls)  # the bar's total, from the tar headers
        mine = None if pairs is None else share_of(min(pairs, limit or pairs), group.rank, group.world)
        progress = progress and group.is_main
        if group.world > 1:
            print(f"eval: process {group.rank} of {group.world} on {device} scores "
                  f"{'its share' if mine is None else mine} of "
                  f"{'the' if pairs is None else min(pairs, limit or pairs)} pairs", file=sys.stderr, flush=True)
        try:
            result = evaluate_samples(protocols.apply(shard_share(urls, group, limit), protocol), runners,
                                      scoring=scoring, by_aperture=by_aperture, stops=stops,
                                      save_images=saver, progress=progress, total=mine,
                                      console=Console(stderr=True) if progress else console,
                                      gather=group.gather, figure=figure)
        except CocError as exc:
            raise EvalError(str(exc)) from None
        tallies = group.gather({"ran": {label: dict(run.ran) for label, run in runners.items() if hasattr(run, "ran")},
                                "coc": coc_source.tally() if coc_source is not None else None})
        for label in infos:
            if infos[label]["kind"] == "checkpoint":
                counts: dict[str, int] = {}
                for part in tallies:
                    for how, n in part["ran"].get(label, {}).items():
                        counts[how] = counts.get(how, 0) + n
                infos[label]["ran"] = dict(sorted(counts.items()))  # images per way the network ran
        if result["pairs"] == 0 and not result["skipped"]:
            raise EvalError(f"split '{split}' of {shards} has no paired samples (with blur.png and sharp.png) to score")
        check_scored(result, list(runners), f"split '{split}' of {shards}")
        protocol_entries = {
            "split": split,
            "shards": str(shards),
            "limit": limit,
            "psnr": metrics.PSNR_DESCRIPTION + f"; an output identical to its reference counts as {PSNR_CAP_DB:g} dB",
            "ssim": metrics.SSIM_VARIANTS[ssim_variant],
            "ssim_variant": ssim_variant,
            "mae": metrics.MAE_DESCRIPTION,
            "lpips": lpips_desc,
            "bit_depth": result["bit_depth"],
            **protocol.describe(),  # protocol, its description, quantization, crop
            "align": align_mode,  # None, "ecc" or "flow"
            "alignment": ALIGN_MODES[align_mode] if align_mode else "none: outputs scored as produced, pixel for pixel",
            **describe_band(c.detail_band),
            "grouping": ("full stops (defocuskit.imaging.optics.full_stop)" if stops else GROUPING)
                        if by_aperture else "none (--no-by-aperture): one 'all' row per method",
            "coc": coc_source.describe([part["coc"] for part in tallies]) if coc_source is not None else
                   "no --coc: Wiener uses the shard's coc.png where present, else the f-number; no model needed one",
            "methods": infos,
            "libraries": library_versions(),
        }
        if coc_source is not None and coc_source.kind == "fnumber":  # the camera values that were defaults
            result["notes"] += camera_notes(protocol_entries["coc"]["camera"])
        result["notes"] += bound_notes(c.coc_bound, coc_source, result["images"])  # samples K did not bound
        result["notes"] += eval_notes({lb: p for lb, p in paths.items() if work_sides[lb] is None}, urls)  # too large
        result["notes"] += work_notes  # a model's own work side that its file could not run
        report = {"protocol": protocol_entries, "rows": result["rows"], "images": result["images"],
                  "skipped": result["skipped"], "notes": result["notes"]}
        if not group.is_main:  # one process writes; every process has the gathered report
            return report
        if shard_folder_state(shards) != state:  # an ingest re-planned the folder while it was read: two datasets
            raise EvalError(f"{shards}: its shards changed while they were scored (another ingest wrote the folder); "
                            "nothing was written: run the evaluation again")
        write_report_files(report, Path(report_dir), result["figure"] if figure else None, by_aperture, by_source)
        print_table(report, console)
        return report
