"""What eval runs on each sample: an exported model loaded once, or a baseline; and which sampler settings go to
which checkpoint."""

from __future__ import annotations

import dataclasses
import functools
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable

import numpy as np

from defocuskit.config.typed import did_you_mean
from defocuskit.data.reader import signed_coc
from defocuskit.eval.config import EvalError
from defocuskit.eval.work_side import WORK_SIDE_DESCRIPTION, work_sample
from defocuskit.imaging.focus_gate import GATE_SMOOTH_PX, check_smooth_px, focus_gate, gate_and_map, resolve_gate
from defocuskit.inference.coc_source import CocSource
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.hub import file_sha256

# A runner turns one sample's blurred input (float32 (H, W, 3) in [0, 1]) into the method's output.
Runner = Callable[[np.ndarray, dict[str, Any]], np.ndarray]

GATE_DESCRIPTION = ("the model's change weighed per pixel by min(1, |CoC| / full_px) of the --coc map: the input "
                    "where the map reads focus, the output from full_px of blur; the change's low-pass (a Gaussian of "
                    "smooth_px; 0: none) kept everywhere (imaging.focus_gate)")


def gate_record(gate_px: float | None, smooth_px: float, origin: str = "option") -> dict[str, Any] | None:
    """What the report says of a focus gate (None: not gated); `origin`: "option" (--focus-gate) or "recipe" (the
    model's own, its recipe's inference.focus_gate)."""
    if gate_px is None:
        return None
    return {"full_px": gate_px, "smooth_px": smooth_px, "from": origin, "description": GATE_DESCRIPTION}


ENSEMBLE_DESCRIPTION = ("geometric self-ensemble (inference.ensemble; Lim et al. 2017): the mean of the outputs for "
                        "the image under flips (4) or flips and transposes (8), each turned back")

# eval's progress bar while a sample is scored: a model runner adds its tiles / steps tasks to it
ACTIVE_BAR: ContextVar[Any] = ContextVar("defocuskit_eval_bar", default=None)


def _checkpoint_runner(path: Path, *, steps: int | None, sampler: str | None, sets: list[str], tiling: TilingOptions,
                       device: str, seed: int, coc: CocSource | None, gate_px: float | None = None,
                       ensemble: int = 1, gate_smooth: float = GATE_SMOOTH_PX, gate_given: bool = False,
                       own_maps: dict[str, CocSource] | None = None, work_side: int | str | None = None,
                       work_side_from: str = "option") -> tuple[Runner, dict[str, Any]]:
    """Load an exported model once; `model_runner` of it (the options are its), and what the report says of it."""
    from defocuskit.inference.load import load_model
    from defocuskit.inference.restore import resolve_sampler, sampler_settings
    from defocuskit.inference.scale import trained_blur
    from defocuskit.inference.tiling import check_tiling

    try:
        method, recipe, model = load_model(path, device=device)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise model_error(path, exc) from exc
    if method.output != "image":
        raise EvalError(f"{path}: a '{method.name}' model estimates {method.output.replace('_', ' ')}s; eval scores images")
    try:
        sampler_cfg = resolve_sampler(recipe, steps, name=sampler, sets=sets).resolved()
        sampler_settings(sampler_cfg, recipe.objective)
        check_tiling(method, recipe, model, tiling)
    except ValueError as exc:
        hint = (f" (--steps {steps} goes to every model with steps; give each its own with "
                "--set LABEL:sampler.steps=N)") if steps is not None else ""
        raise EvalError(f"{path}: {exc}{hint}") from exc
    try:
        run, desc = model_runner(method, recipe, model, sampler_cfg, tiling=tiling, device=device, seed=seed, coc=coc,
                                 gate_px=gate_px, ensemble=ensemble, gate_smooth=gate_smooth, gate_given=gate_given,
                                 own_maps=own_maps, work_side=work_side, work_side_from=work_side_from,
                                 train_blur=trained_blur(path) if work_side == "auto" else None)
    except EvalError as exc:
        raise EvalError(f"{path}: {exc}") from None
    return run, {"kind": "checkpoint", "path": str(path), **desc, "origin": model_origin(path),
                 "sha256": file_sha256(path)}  # the file scored: a model card takes these scores for this file alone


def model_runner(method: Any, recipe: Any, model: Any, sampler_cfg: Any, *, tiling: TilingOptions, device: str,
                 seed: int, coc: CocSource | None, gate_px: float | None = None, ensemble: int = 1,
                 gate_smooth: float = GATE_SMOOTH_PX, gate_given: bool = False,
                 own_maps: dict[str, CocSource] | None = None, work_side: int | str | None = None,
                 train_blur: float | None = None, work_side_from: str = "option") -> tuple[Runner, dict[str, Any]]:
    """A Runner that deblurs one image with `model` (its Method and Recipe; the resolved `sampler_cfg`), and what the
    report says of how (from "method" to "channels"): eval's for a model file, and training's validation's.
    `gate_px`: the model's change weighed by the CoC map (imaging.focus_gate, full weight from gate_px pixels, the
    change's low-pass of `gate_smooth` px kept); unless `gate_given` (--focus-gate named this model; None then: no
    gate), the model's own gate (its recipe's inference.focus_gate), by the edge estimate where no --coc is given
    (from `own_maps`, shared by the checkpoints of one run, so each image's map is estimated once);
    `ensemble`: the geometric self-ensemble's size (inference.ensemble; 1: off); `work_side`: images deblurred at
    that long side ("auto": where their blur reads as wide as the training inputs', `train_blur` px) and given back
    at their own (eval.work_side, inference.scale.work_side_restore; `work_side_from`: "option" or "recipe", the
    model's own inference.work_side). EvalError
    (without the file's name) where the model needs a CoC map and `coc` is None.

    The runner's noise is seeded per sample from (seed, sample key) (`processes.sample_seed`); its `ran`
    attribute counts how the network ran per image (`Tiling.describe`: whole image or tiles of a size).
    """
    from collections import Counter

    from defocuskit.data.postprocess import max_side_size
    from defocuskit.eval.processes import sample_seed
    from defocuskit.inference.bands import band_pixels, plan_bands, restore_in_bands
    from defocuskit.inference.restore import restore_image, sampler_settings
    from defocuskit.inference.scale import side_for, work_side_restore
    from defocuskit.inference.tiling import DEFAULT_MAX_TILE_PIXELS, plan_tiling, resolve_overlap

    tile, overlap, max_tile_pixels = tiling.tile, tiling.overlap, tiling.max_tile_pixels
    info = sampler_settings(sampler_cfg, recipe.objective)
    if not gate_given:
        gate_px, own_map = gate_and_map(None, recipe.inference.focus_gate, coc is not None, "coc" in info["needs"])
        if own_map:
            shared = {} if own_maps is None else own_maps
            coc = shared.setdefault(own_map, CocSource.create(own_map))
    needs_coc = "coc" in info["needs"] or gate_px is not None
    if needs_coc and coc is None:
        what = "--focus-gate needs" if gate_px is not None else "this model (its sampler or network) needs"
        raise EvalError(f"{what} a CoC map: --coc map --coc-model FILE | --coc edge | --coc oracle | --coc fnumber")
    band_pixels()  # a bad $DEFOCUSKIT_BAND_PIXELS fails before any sample
    model.eval()
    ran: Counter[str] = Counter()

    def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
        side = side_for(work_side, blur, train_blur)
        size = max_side_size(*blur.shape[:2], side)  # (width, height) deblurred at, where smaller
        if size is None:
            return run_at(blur, sample)
        small = work_sample(sample, blur.shape, size)  # its CoC maps in the smaller image's pixels
        return work_side_restore(lambda x: run_at(x, small), blur, side)

    def run_at(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
        coc_png, first = signed_coc(sample), sample_seed(seed, sample["key"])

        def restore_band(band: np.ndarray, index: int, r0: int, r1: int) -> np.ndarray:
            coc_map = coc(blur, sample.get("meta"), coc_png, name=sample["key"], rows=(r0, r1)) \
                if needs_coc and coc else None
            out = restore_image(method, recipe, model, band, tiling=tiling, seed=first + index, device=device,
                                progress=ACTIVE_BAR.get() or False, sampler_cfg=sampler_cfg,
                                coc=coc_map if "coc" in info["needs"] else None, ensemble=ensemble)
            return out if gate_px is None else focus_gate(band, out, coc_map, gate_px, gate_smooth)

        # by bands of rows above the API's budget, as DeblurModel.deblur and `deblur`: the image they give is scored
        bands = len(plan_bands(*blur.shape[:2], band_pixels()))
        ran[plan_tiling(method, recipe, model, *blur.shape[:2], tiling).describe()
            + (f" in {bands} bands of rows" if bands > 1 else "")] += 1
        return restore_in_bands(blur, lambda rows: rows, restore_band, lambda out: out)

    run.ran = ran  # type: ignore[attr-defined]
    whole = tile is None and method.whole_image
    size = None if whole else int(tile or recipe.data.image_size)
    budget = (DEFAULT_MAX_TILE_PIXELS if max_tile_pixels is None else int(max_tile_pixels)) if whole else None
    desc = {"method": method.name, "sampler": info["settings"], "nfe": info["nfe"], "timesteps": info.get("timesteps"),
            "coc": coc.describe() if needs_coc and coc else None,
            "tile": size, "overlap": overlap if size is None else resolve_overlap(size, overlap),
            "max_tile_pixels": budget,
            "inference": (f"whole image, reflect-padded to a multiple of {method.pad_multiple(model)}, while it has at "
                          f"most {budget} pixels; larger images in the largest tiles within that" if whole else
                          f"tiles of {size}x{size} px" + ("" if tile else " (the training size: what its context "
                                                           "was learnt on)")),
            "focus_gate": gate_record(gate_px, gate_smooth, "option" if gate_given else "recipe"),
            "ensemble": None if ensemble == 1 else {"size": ensemble, "description": ENSEMBLE_DESCRIPTION},
            "work_side": None if work_side is None else {"work_px": work_side, "train_blur_px": train_blur,
                                                         "from": work_side_from, "description": WORK_SIDE_DESCRIPTION},
            "batch": tiling.batch, "seed": seed, "seeds": "sampler noise per sample, seeded from (seed, sample key)",
            "channels": recipe.data.channels}
    return run, desc


def model_origin(path: Path) -> dict[str, Any]:
    """Where a model file's weights come from (io.modelfile.weights_origin of its metadata)."""
    from defocuskit.io.modelfile import read_metadata, weights_origin

    return weights_origin(read_metadata(path))


def _baseline_runner(name: str, coc: CocSource | None = None, gate_px: float | None = None,
                     gate_smooth: float = GATE_SMOOTH_PX) -> tuple[Runner, dict[str, Any]]:
    """The runner of a baseline and what the report says of it; `gate_px` as for a checkpoint (wiener, prox)."""
    from defocuskit.eval import baselines

    if gate_px is not None and (name == "input" or coc is None):
        raise EvalError(f"--focus-gate {name}:{gate_px:g}: " + ("the input has no change to weigh" if name == "input"
                        else "needs a CoC map (--coc map --coc-model FILE | --coc edge | --coc oracle | --coc fnumber)"))
    if name == "input":
        return (lambda blur, sample: baselines.input_baseline(blur)), {"kind": "baseline", "description": "the blurred input"}
    if name in baselines.WIENER_VARIANTS or name in baselines.PROX_VARIANTS:
        wiener = name in baselines.WIENER_VARIANTS
        psf, noise = ("disc", baselines.WIENER_VARIANTS[name]) if wiener else baselines.PROX_VARIANTS[name]
        restore = (functools.partial(baselines.wiener_baseline, noise=noise) if wiener
                   else functools.partial(baselines.prox_baseline, psf=psf, noise=noise))

        def run(blur: np.ndarray, sample: dict[str, Any]) -> np.ndarray:
            meta = dict(sample.get("meta") or {}, key=sample["key"])
            coc_map = coc(blur, meta, signed_coc(sample), name=sample["key"]) if coc is not None else signed_coc(sample)
            out = restore(blur, meta, coc_map)
            return out if gate_px is None else focus_gate(blur, out, coc_map, gate_px, gate_smooth)

        desc = baselines.wiener_description(noise) if wiener else baselines.prox_description(psf, noise)
        return run, {"kind": "baseline", "description": desc, "coc": coc.describe() if coc is not None else None,
                     "focus_gate": gate_record(gate_px, gate_smooth)}
    raise EvalError(f"unknown baseline '{name}' (known: {', '.join(baselines.BASELINES)})"
                    f"{did_you_mean(name, baselines.BASELINES)}")


def gates_per_checkpoint(labels: list[str], items: list[str], baselines: tuple[str, ...] = ()
                         ) -> dict[str, float | None]:
    """`--focus-gate [LABEL:]PX` items -> the full-weight CoC in pixels (None: not gated, PX 0) of each checkpoint
    label and baseline (by name: `prox:3`) they name; an item without a label goes to every checkpoint, a labelled one
    (later) to its checkpoint or baseline alone. A label no item names is absent (a checkpoint: its model's own
    gate; a baseline: none)."""
    known = {*labels, *baselines}
    gates: dict[str, float | None] = {}
    given: dict[Any, tuple[Any, str]] = {}
    for item in _labelled_last(items, known, "--focus-gate"):
        label, text = split_label(item, known, "--focus-gate")
        try:
            px = resolve_gate(float(text), None)
        except ValueError:
            raise EvalError(f"--focus-gate {item}: expected [LABEL:]PX, a number of pixels > 0 (0: no gate)") from None
        _once(given, label, px, item, "--focus-gate")
        for lb in [label] if label else labels:
            gates[lb] = px
    if any(split_label(it, known, "--focus-gate")[0] is None for it in items) and not labels:
        raise EvalError("--focus-gate PX without a label weighs every checkpoint's change: give a --checkpoint, or "
                        "name a baseline (--focus-gate prox:PX)")
    return gates


def gate_smooth_px(smooth_px: float | None) -> float:
    """`--gate-smooth PX` checked: a finite number of pixels >= 0; not given (None), GATE_SMOOTH_PX."""
    try:
        return check_smooth_px(GATE_SMOOTH_PX if smooth_px is None else float(smooth_px))
    except (TypeError, ValueError):
        raise EvalError(f"--gate-smooth {smooth_px}: expected a number of pixels >= 0 (0: gate the whole "
                        "change)") from None


def ensembles_per_checkpoint(labels: list[str], items: list[str]) -> dict[str, int]:
    """`--ensemble [LABEL:]N` items -> the self-ensemble size of each checkpoint label (1: off); an item without a
    label goes to every checkpoint, a labelled one (later) to its checkpoint alone."""
    from defocuskit.inference.ensemble import check_ensemble

    sizes = dict.fromkeys(labels, 1)
    if items and not labels:
        raise EvalError("--ensemble is for models: give a --checkpoint")
    given: dict[Any, tuple[Any, str]] = {}
    for item in _labelled_last(items, set(labels), "--ensemble"):
        label, text = split_label(item, set(labels), "--ensemble")
        try:
            n = check_ensemble(int(text))
        except ValueError as exc:
            raise EvalError(f"--ensemble {item}: " + (str(exc) if text.strip().lstrip("-").isdigit()
                                                      else "expected [LABEL:]N, N one of 1, 4, 8")) from None
        _once(given, label, n, item, "--ensemble")
        for lb in [label] if label else labels:
            sizes[lb] = n
    return sizes


def work_sides_per_checkpoint(paths: dict[str, Path], items: list[str]
                              ) -> tuple[dict[str, int | str | None], dict[str, str], list[str]]:
    """`--work-side [LABEL:]PX|trained|auto|0` items -> each checkpoint label's work side in pixels or "auto" (None:
    its images' own size), where it comes from ("option", or "recipe": not given, the model's own
    inference.work_side) and the notes of models whose own could not run; an item without a label goes to every
    checkpoint, a labelled one (later) to its checkpoint alone; "trained" is each model file's training images' long
    side (inference.scale.trained_long_side), "auto" each image's blur-matched side (inference.scale
    .blur_matched_side), 0 the images' own size."""
    from defocuskit.inference.scale import own_work_side, recipe_work_side, trained_blur, trained_long_side

    sides: dict[str, int | str | None] = dict.fromkeys(paths)
    if items and not paths:
        raise EvalError("--work-side is for models: give a --checkpoint")
    given: dict[Any, tuple[Any, str]] = {}
    texts: dict[str, tuple[str, str]] = {}  # label -> (the item, its value)
    for item in _labelled_last(items, set(paths), "--work-side"):
        label, text = split_label(item, set(paths), "--work-side")
        _once(given, label, text.strip().lower(), item, "--work-side")
        texts.update({lb: (item, text) for lb in ([label] if label else list(paths))})
    origin: dict[str, str] = {}
    notes: list[str] = []
    for lb, path in paths.items():
        item, text = texts.get(lb, (None, None))
        own = None if item is not None else recipe_work_side(path)
        if item is None and own is None:
            continue
        try:
            sides[lb], note = own_work_side(text, own, trained_long_side(path), trained_blur(path), str(path))
        except (TypeError, ValueError) as exc:
            raise EvalError(f"--work-side {item}: {exc}") from None
        notes += [f"{lb}: {note}"] if note else []
        if sides[lb] is not None:
            origin[lb] = "option" if item is not None else "recipe"
    return sides, origin, notes


def _once(given: dict[Any, tuple[Any, str]], where: Any, value: Any, item: str, option: str) -> None:
    """Refuse (EvalError naming both) a second item that sets what an earlier one set (the same label, or both
    without one) to another value: which one runs would be a guess."""
    first_value, first = given.setdefault(where, (value, item))
    if first_value != value:
        raise EvalError(f"{option} {first} and {option} {item} disagree; give it once")


def split_label(item: str, labels: set[str], option: str) -> tuple[str | None, str]:
    """`LABEL:rest` -> (LABEL, rest) for a known label (the longest that fits: a run folder named `a:b` is a label
    too); `rest` alone -> (None, rest); an unknown label is an error."""
    fits = [lb for lb in labels if lb and item.startswith(f"{lb}:")]
    if fits:
        label = max(fits, key=len)
        return label, item[len(label) + 1:]
    head, sep, rest = item.partition(":")
    if not sep or "=" in head:
        return None, item
    if head not in labels:
        raise EvalError(f"{option} {item}: no checkpoint is labelled '{head}' (labels: {', '.join(sorted(labels)) or 'none'})"
                        f"{did_you_mean(head, labels)}")
    return head, rest


def _sampler_keys(path: Path) -> set[str]:
    """The sampler keys of the model in `path`, from the file's metadata alone (no tensors are read)."""
    from defocuskit.io.modelfile import read_model_metadata
    from defocuskit.methods import get_method

    try:  # the checks and messages of loading the model (deblur's): a folder, a file no model was exported to
        method = get_method(str(read_model_metadata(path)["recipe"].get("method")))
    except Exception as exc:  # unreadable file, missing or foreign metadata, unknown method
        raise model_error(path, exc) from exc
    return {f.name for f in dataclasses.fields(method.SamplerConfig)}


def model_error(path: Path, exc: Exception) -> EvalError:
    """The one-line EvalError of a model file that cannot be loaded: the loader's own message where it names the
    file (as `deblur` gives it), else this one naming it."""
    message = str(exc).strip()
    if isinstance(exc, (ValueError, OSError)) and str(path) in message and "\n" not in message:
        return EvalError(message)
    return EvalError(f"{path}: cannot be read as a defocuskit model ({message or type(exc).__name__})")


def _labelled_last(items: list[str], labels: set[str], option: str) -> list[str]:
    """`items` in the order given, those with a label after those without (applied last, so they win)."""
    return sorted(items, key=lambda item: split_label(item, labels, option)[0] is not None)


def per_checkpoint_settings(paths: dict[str, Path], keys: dict[str, set[str]], samplers: list[str], sets: list[str]
                            ) -> dict[str, tuple[str | None, list[str]]]:
    """For each checkpoint label, its `--sampler` NAME and `--set` items.

    A `LABEL:` prefix aims an item at one checkpoint, over an item without it (given before or after), which goes
    to every checkpoint whose sampler has that key (`name` for --sampler) and is an error when none has.
    """
    chosen: dict[str, tuple[str | None, list[str]]] = {label: (None, []) for label in paths}
    given: dict[Any, tuple[Any, str]] = {}
    samplers, sets = _labelled_last(samplers, set(paths), "--sampler"), _labelled_last(sets, set(paths), "--set")
    for item in samplers:
        label, name = split_label(item, set(paths), "--sampler")
        _once(given, label, name.strip(), item, "--sampler")
        targets = [label] if label else [lb for lb in paths if "name" in keys[lb]]
        if not targets:
            raise EvalError(f"--sampler {item}: no model given has named samplers")
        for lb in targets:
            chosen[lb] = (name, chosen[lb][1])
    for item in sets:
        label, rest = split_label(item, set(paths), "--set")
        key = _set_key(rest)
        _once(given, (label, "--set", key), rest.partition("=")[2].strip(), item, "--set")
        targets = [label] if label else [lb for lb in paths if key in keys[lb]]
        if not targets:
            raise EvalError(f"--set {item}: no model given has a sampler key '{key}'")
        for lb in targets:  # one item a key: a labelled one replaces the one every checkpoint got
            chosen[lb][1][:] = [*(it for it in chosen[lb][1] if _set_key(it) != key), rest]
    return chosen


def _set_key(item: str) -> str:
    return item.partition("=")[0].strip().removeprefix("sampler.")


def _label(path: Path, taken: set[str]) -> str:
    base = path.parent.name if path.stem == "model" and path.parent.name else path.stem
    label, i = base, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    return label
