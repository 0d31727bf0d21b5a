"""Deblurring image files with an exported model (`defocuskit deblur`): inputs named by files, folders or
patterns, every check before the first image, outputs at the input's size (or --max-side's), bit depth and channels
(gray, RGB, either with the input's alpha), and deblur.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from defocuskit.data.metadata import F_NUMBER_RANGE
from defocuskit.data.postprocess import max_side_size
from defocuskit.data.shards import encode_coc
from defocuskit.imaging.focus_gate import focus_gate as gate
from defocuskit.imaging.focus_gate import gate_and_map, resolve_smooth
from defocuskit.inference.bands import band_pixels, plan_bands, restore_in_bands
from defocuskit.inference.coc_source import (
    CocSource,
    check_camera_use,
    unbounded_note,
    unused_bound,
    unused_f_number,
)
from defocuskit.inference.ensemble import check_ensemble
from defocuskit.inference.inputs import check_inputs, exif_optics, expand_inputs, f_number_meta, implausible
from defocuskit.inference.keywords import real
from defocuskit.inference.load import load_model
from defocuskit.inference.outputs import (
    RUN_LOCK,
    check_destinations,
    check_out_folder,
    destination,
    file_signature,
    previous_records,
    write_output,
)
from defocuskit.inference.restore import (
    resolve_sampler,
    restore_in_channels,
    sampler_settings,
)
from defocuskit.inference.scale import (
    check_max_side,
    downscaled,
    own_work_side,
    read_at_side,
    scale_note,
    side_for,
    trained_blur,
    trained_long_side,
    work_side_restore,
)
from defocuskit.inference.tiling import TilingOptions, check_tiling, plan_tiling
from defocuskit.io import locks
from defocuskit.io.atomic import (
    NEXT_TEMPORARY,
    new_token,
    remove_named_next,
    write_naming_next,
)
from defocuskit.io.devices import resolve_device
from defocuskit.io.icc import png_with_icc, read_icc
from defocuskit.io.images import (
    bit_depth,
    encode_image,
    from_float,
    png_is_gray,
    read_image_channels,
    to_float,
)
from defocuskit.io.paths import path_argument


def deblur_files(
    inputs: list[Path],
    checkpoint: Path,
    out: str | Path,
    *,
    steps: int | None = None,
    sampler: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    coc: str | None = None,
    coc_model: Path | None = None,
    coc_bound: float | None = None,
    f_number: float | None = None,
    camera: Mapping[str, float] | None = None,
    tiling: TilingOptions = TilingOptions(),
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    focus_gate: float | None = None,
    ensemble: int = 1,
    gate_smooth: float | None = None,
    max_side: int | None = None,
    work_side: int | str | None = None,
) -> list[Path]:
    """Deblur each input with the exported model; writes out/<stem>.png (the input's size, bit
    depth and channels: gray stays gray, an alpha channel is carried through unchanged, a PNG's tRNS transparency
    as an alpha channel: gray + alpha for a gray PNG, RGBA for a palette or RGB one) and out/deblur.json.

    `inputs`: image files, folders of images or glob patterns (`expand_inputs`).

    A defocus-map model writes out/<stem>_coc.png instead: 16-bit, CoC diameter in pixels x 256.
    `sampler`/`sets`/`steps` change the sampler (checked like recipe keys); `coc` names where the CoC
    map of physics consistency comes from (coc_source.COC_SOURCES); `focus_gate` (pixels) weighs the model's change
    by that map (imaging.focus_gate: the input where it reads focus, the change's low-pass of `gate_smooth` px kept
    everywhere, default GATE_SMOOTH_PX; 0: none); not given, the model's own (its recipe's inference.focus_gate, by
    the edge estimate where no `coc` is given); 0: no gate. `ensemble` 4 or 8 averages the outputs for
    the image's flips (and transposes) (inference.ensemble). `max_side`: each input downscaled (INTER_AREA, as ingest's
    --max-side) so its long side is at most that before it is deblurred, its CoC map (--coc fnumber's thin lens, map,
    edge) made for it as deblurred, and its output written at that size. `work_side` (pixels, "trained": the
    model's training images' long side, or "auto": where its blur reads as wide as the model's training inputs',
    inference.scale.blur_matched_side): deblurred at that size, CoC map and gate there too, and written at the
    input's (or `max_side`'s) size with the model's change upsampled (inference.scale.work_side_restore); not given,
    the model's own (its recipe's inference.work_side; deblur.json: work_side_from); 0: its own size. An input
    deblurred at more than twice the long side of the model's training images (its metadata's train_long_side_px)
    is said once per run on stderr (inference.scale) and noted in its record. deblur.json records, per input,
    the output, method, checkpoint, resolved sampler settings, NFE per tile, CoC source, how the
    network ran (`Tiling.record`: whole image or tiles of a size, under `tiling.max_tile_pixels`; `bands`: an image
    above $DEFOCUSKIT_BAND_PIXELS is restored by bands of rows, band k seeded seed + k, as the Python API restores it)
    and seconds.
    Every check (checkpoint, sampler, CoC source, tiling, input files, destinations) runs before any image
    is processed: an input that is missing, empty, unreadable or corrupt stops the run with every bad file
    named; an output that would replace an input, or a file in `out` that no earlier deblur wrote, is
    refused (`check_destinations`), as is `f_number` or `gate_smooth` where nothing in the run uses it, and
    `coc_bound` K > 0 where no input has an f-number to bound at (some without one: a note, and `bound_note`).
    deblur.json keeps the records of earlier runs into `out` that this run does not redo.
    """
    check_ensemble(ensemble)  # a bad value fails before any work
    max_side = check_max_side(max_side)
    if isinstance(inputs, (str, os.PathLike)):  # one name was read letter by letter
        raise TypeError(f"inputs=: a list of image files, folders or patterns, got one {type(inputs).__name__}: "
                        f"pass [{str(inputs)!r}]")
    inputs = list(inputs)
    for item in inputs:  # "" was the working folder: its photos deblurred
        path_argument("inputs", item, "an image file, folder or pattern")
    path_argument("out", out, "the output folder")  # "" wrote into the working folder
    path_argument("checkpoint", checkpoint, "a model file")
    f_number = real("f_number", f_number)  # '2' was a comparison's TypeError
    check_out_folder(out)
    check_camera_use(camera, coc)
    low, high = F_NUMBER_RANGE
    if f_number is not None and not low <= f_number <= high:  # NaN fails too; inf was written to deblur.json
        raise ValueError(f"--f-number {f_number:g}: not an f-number a lens has (f/{low:g} to f/{high:g})")
    device = resolve_device(device)
    own = frozenset((Path(out) / Path(r["output"]).name).resolve() for r in previous_records(Path(out)))
    inputs = expand_inputs(inputs, own)  # `deblur photos/ --out photos/` again: its outputs are not photos
    if not inputs:
        raise ValueError("no input images given")
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise ValueError(f"{p} and {stems[p.stem]} would both be written as {p.stem}.png; rename one")
        stems[p.stem] = p
    method, recipe, model = load_model(Path(checkpoint), device=device)
    trained, said = trained_long_side(checkpoint), False  # the training images' scale; the note said once per run
    blur = trained_blur(checkpoint)  # how wide its training inputs' blur reads (--work-side auto)
    given_side = work_side
    work_side, side_note = own_work_side(work_side, recipe.inference.work_side, trained, blur,
                                         str(checkpoint))  # not given: the model's own (a map model: reads its map)
    if side_note:
        print(f"note: {side_note}", file=sys.stderr)
    sampler_cfg = resolve_sampler(recipe, steps, name=sampler, sets=sets).resolved()
    info = sampler_settings(sampler_cfg, recipe.objective)
    if coc == "oracle":
        raise ValueError("--coc oracle reads the true CoC of synthetic shards (coc.png): use it with "
                         "`defocuskit eval`; for photographs use --coc map, --coc edge or --coc fnumber")
    given_gate = focus_gate
    has_map = coc is not None or coc_model is not None
    focus_gate, own_map = gate_and_map(focus_gate, recipe.inference.focus_gate, has_map,
                                       "coc" in info["needs"])  # a bad value fails here
    coc = own_map or coc
    defocus_map = method.output == "defocus_map"
    if defocus_map and has_map:  # its own map is what it writes: --coc was ignored, deblur.json said coc: null
        raise ValueError(f"{'--coc' if coc is not None else '--coc-model'}: {checkpoint} is a '{method.name}' model, "
                         "which writes its own CoC map; --coc gives a deblurring model its map (--f-number N "
                         "bounds this model's map)")
    source = CocSource.create(coc, coc_model, device, None if defocus_map and coc is None else coc_bound,
                              camera)  # fnumber: recorded in deblur.json's coc.camera.given, as eval's
    # a defocus-map model's own maps: bounded by its inference.coc_bound (or --coc-bound) where the f-number is known
    own_k = recipe.inference.resolved_bound if coc_bound is None else float(coc_bound) or None  # 0: none
    own_bound = CocSource("map", bound=own_k) if defocus_map else None
    uses_coc = "coc" in info["needs"] or focus_gate is not None
    if has_map and not uses_coc and not defocus_map:  # as the API refuses coc= there: it was silently ignored
        raise ValueError(f"--coc: {checkpoint} ('{method.name}') uses no CoC map and has no focus gate; leave --coc "
                         "out, or give --focus-gate PX to weigh its change by the map")
    if uses_coc and source is None:
        what = "--focus-gate needs" if "coc" not in info["needs"] else "this model (its sampler or network) needs"
        raise ValueError(f"{checkpoint}: {what} a CoC map: --coc map --coc-model FILE, --coc edge or --coc fnumber "
                         "[--f-number N]")
    gate_smooth = resolve_smooth(gate_smooth, focus_gate)  # given where no gate runs: refused, not dropped
    if focus_gate is not None:
        if method.output != "image":
            raise ValueError(f"--focus-gate weighs a deblurred image; {checkpoint} is a '{method.name}' model")
    check_inputs(inputs)
    optics_of: dict[Path, dict[str, Any]] = {}
    bound_note = None  # --coc-bound K given, and some inputs have no f-number: said once, and in their records
    bounded = (source is not None and uses_coc and source.bound is not None) or (own_bound and own_bound.bound)
    if (source is not None and source.kind == "fnumber" and uses_coc) or bounded:
        exifs = {p: exif_optics(p) for p in inputs}
        optics_of = {p: f_number_meta(p, f_number, camera, exifs[p]) for p in inputs}
        missing = [p for p, meta in optics_of.items() if meta["f_number"] is None]
        named = [f"{p} ({why})" if (why := implausible(exifs[p])) else str(p) for p in missing]
        if missing and source is not None and source.kind == "fnumber":  # f/0.5 from a corrupt tag was used
            raise ValueError(f"--coc fnumber: no f-number in the EXIF of {', '.join(named)}; give --f-number N")
        if bounded and coc_bound:  # K given: where no input has an f-number it was dropped (coc_bound: null), exit 0
            if len(missing) == len(inputs):
                raise unused_bound(coc_bound, "input", "no EXIF FNumber, no --f-number",
                                   "give --f-number N, or leave --coc-bound out")
            bound_note = unbounded_note(coc_bound, named, len(inputs), "input")
            if bound_note:
                print(f"note: {bound_note}", file=sys.stderr)
    elif f_number is not None:  # no fnumber map and no bound: it was dropped (deblur.json said f_number null)
        raise unused_f_number(f_number)
    check_tiling(method, recipe, model, tiling)
    band_pixels()  # a bad $DEFOCUSKIT_BAND_PIXELS fails before any image
    out = Path(out)
    check_destinations(inputs, out, defocus_map, locked=False)  # inputs and foreign files: refused before the lock
    with contextlib.ExitStack() as held:
        stale = locks.read_holder(out / RUN_LOCK)  # a killed run's names its first deblur.json's temporary
        first = new_token()  # this run's, where it writes the first deblur.json: named before it is made
        try:  # one deblur at a time writes a folder: another one's begun images are not a killed run's
            held.enter_context(locks.hold(out / RUN_LOCK, "deblur", f"{out}: another deblur is writing this folder",
                                          **{NEXT_TEMPORARY: first}))
        except locks.LockedError as exc:
            raise ValueError(f"{exc}; wait for it to finish or give another --out") from None
        dests = [destination(out, p, defocus_map) for p in inputs]
        seen = {d: file_signature(d) for d in dests}  # as checked: each is looked at again just before it is written
        earlier = check_destinations(inputs, out, defocus_map)  # all of it, under the lock
        log = out / "deblur.json"  # written through the temporary its last version names: a killed write's removed
        remove_named_next(log, stale)  # held now: the run that wrote it has ended
        earlier_log = json.loads(log.read_text(encoding="utf-8")) if log.is_file() else None  # ours: checked above
        token = {"next": remove_named_next(log, earlier_log) if earlier_log is not None else first}
        model.eval()
        out.mkdir(parents=True, exist_ok=True)
        written, records = [], []
        rewritten = {destination(out, p, defocus_map).name for p in inputs}
        kept = [r for r in earlier if Path(r["output"]).name not in rewritten]  # still listed: still ours
        for p in inputs:
            started = time.perf_counter()
            arr = read_image_channels(p)  # gray, RGB or RGBA: written back in the same channels
            read_size = [int(arr.shape[1]), int(arr.shape[0])]
            arr = downscaled(arr, max_side)  # --max-side: deblurred, its CoC made and written at that size
            alpha = arr[:, :, 3:] if arr.shape[2] == 4 else None
            gray_alpha = alpha is not None and png_is_gray(p)  # gray + alpha, or a tRNS value: gray + alpha out
            image = to_float(arr[:, :, :1] if gray_alpha else arr[:, :, :3])
            side = side_for(work_side, image, blur)  # the long side it is deblurred at (--work-side), None: its own
            work = max_side_size(*arr.shape[:2], side)  # (width, height) deblurred at, where smaller
            note = scale_note(str(p), max(work or arr.shape[:2]), trained) if work_side != "auto" else None
            if note and not said:
                print(f"note: {note}", file=sys.stderr)
                said = True

            def restore_whole(image: np.ndarray, p: Path = p) -> np.ndarray:  # at the input's size or the work side
                colour = np.repeat(image, 3, axis=2) if image.shape[2] == 1 and source is not None and uses_coc \
                    else image

                def restore_band(band: np.ndarray, index: int, r0: int, r1: int) -> np.ndarray:
                    coc_map = None
                    if source is not None and uses_coc:  # CoC sources read colour: gray as RGB
                        coc_map = source(colour, optics_of.get(p), name=str(p), sensor_px=max(image.shape[:2]),
                                         rows=(r0, r1))  # a camera's sensor width: its long side, which a photo's
                        # long side spans, portrait (EXIF-turned or not) or landscape
                    out = restore_in_channels(  # gray in, gray out, as the Python API's deblur
                        method, recipe, model, band, tiling=tiling, seed=seed + index, device=device,
                        progress=progress, sampler_cfg=sampler_cfg, coc=coc_map if "coc" in info["needs"] else None,
                        ensemble=ensemble,
                    )
                    return out if focus_gate is None else gate(band, out, coc_map, focus_gate, gate_smooth)

                # by bands of rows above the API's budget, as DeblurModel.deblur: the same image from both
                return restore_in_bands(image, lambda rows: rows, restore_band, lambda out: out)

            ran = (work[1], work[0]) if work else image.shape[:2]  # the size the network ran at
            plan = plan_tiling(method, recipe, model, *ran, tiling)
            if defocus_map:  # read at the work side, written at the input's size in its pixels
                result = read_at_side(lambda x: restore_whole(x)[:, :, 0], image, side)[:, :, None]
            else:
                result = work_side_restore(restore_whole, image, side)
            dest = destination(out, p, defocus_map)
            if defocus_map:
                estimate = own_bound.bounded(np.clip(result[:, :, 0], 0.0, None), optics_of.get(p))
                data = encode_image(dest, encode_coc(estimate))  # 16-bit PNG, pixels x 256, as coc.png in the shards
            else:
                pixels = from_float(np.clip(result, 0.0, 1.0), bit_depth(arr))
                pixels = pixels[:, :, 0] if alpha is None and pixels.shape[2] == 1 else pixels
                pixels = pixels if alpha is None else np.concatenate([pixels, alpha], axis=2)
                data = png_with_icc(encode_image(dest, pixels), read_icc(p), pixels.shape[2] if pixels.ndim == 3 else 1)
            sha = hashlib.sha256(data).hexdigest()

            def listed(temporary: str, p: Path = p, dest: Path = dest, sha: str = sha) -> None:
                # listed before it is filled, with its temporary (made just now: never a file that was there) and the
                # SHA-256 of what it will hold: a run killed in between leaves files the next run knows as its own,
                # and a file put there since as not its own
                begun = {"images": kept + records + [{"input": str(p), "output": str(dest), "pending": True,
                                                      "partial": temporary, "sha256": sha}]}
                token["next"] = write_naming_next(log, begun, token["next"])

            if file_signature(dest) != seen[dest]:  # put there, or an earlier output changed, while this run worked
                raise ValueError(f"{dest}: put there or changed while this deblur ran; it is left as it is: move it "
                                 "and run the same command again to finish")
            write_output(dest, data, listed)
            written.append(dest)
            records.append({
                "input": str(p), "output": str(dest), "method": method.name, "checkpoint": str(checkpoint),
                "sampler": info["settings"], "nfe": info["nfe"], "timesteps": info.get("timesteps"), "seed": seed,
                **plan.record(), "bands": len(plan_bands(*ran, band_pixels())),
                "coc": source.describe() if source is not None and uses_coc else None, "focus_gate": focus_gate,
                "f_number": optics_of.get(p, {}).get("f_number"),  # the bound applies only where it is known
                "camera": {k: v for k, v in optics_of.get(p, {}).items() if k != "f_number"}
                if source is not None and source.kind == "fnumber" and uses_coc else None,
                "coc_bound": (own_bound.bound if own_bound else
                              source.bound if source is not None and uses_coc else None)
                if optics_of.get(p, {}).get("f_number") else None,
                "bound_note": bound_note if bound_note and not optics_of[p]["f_number"] else None,
                "gate_smooth": gate_smooth if focus_gate is not None else None,
                "focus_gate_from": None if focus_gate is None else ("option" if given_gate else "recipe"),
                "ensemble": ensemble, "max_side": max_side, "work_side": work_side, "work_px": side,
                "work_side_from": None if work_side is None else ("option" if given_side is not None else "recipe"),
                "work_side_note": side_note,
                "input_size": read_size,
                "size": [int(arr.shape[1]), int(arr.shape[0])], "train_long_side_px": trained, "scale_note": note,
                "seconds": round(time.perf_counter() - started, 3), "sha256": sha,
            })
            token["next"] = write_naming_next(log, {"images": kept + records}, token["next"])
        return written
