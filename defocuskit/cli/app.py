"""The `defocuskit` command line: thin wrappers, one function call per command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defocuskit.cli.ingest import INGEST_EXAMPLE, ingest_cmd
from defocuskit.cli.options import (
    DEVICE_HELP,
    WORKERS_HELP,
    AlignBy,
    Baseline,
    DeblurCoc,
    EvalCoc,
    EvalProtocolChoice,
    Preset,
    Ssim,
    exit_before_torch,
    hide_flag_types,
    one_line_usage_errors,
    pick,
    print_version,
    run_reporting_disk_full,
    set_threads,
    value,
)
from defocuskit.cli.recipes import recipes_app
from defocuskit.cli.train import TRAIN_EXAMPLE, train_cmd
from defocuskit.cli.weights import IMPORT_EXAMPLE, import_weights_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Single-image defocus deblurring research toolkit.",
                  epilog="Example: defocuskit demo --steps-scale 0.3  (the whole pipeline on synthetic data); each command's "
                  "--help shows its own example.")
hide_flag_types()
one_line_usage_errors()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                 help="Print defocuskit's version (and torch's) and exit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of every command, at most the "
                                          "cores (also $DEFOCUSKIT_THREADS; default: cores / processes, never more)."),
) -> None:
    """Single-image defocus deblurring research toolkit."""
    set_threads(threads)


app.command("ingest", epilog=INGEST_EXAMPLE)(ingest_cmd)


@app.command("inspect", epilog="Example: defocuskit inspect shards/ --n 8  (writes shards/contact_sheet.png)")
def inspect_cmd(
    folder: Path = typer.Argument(..., help="A shard folder written by `defocuskit ingest`."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Contact sheet PNG (default FOLDER/contact_sheet.png)."),
    n: int = typer.Option(6, "--n", help="Samples on the contact sheet (1 to 64), one row each: exactly N (fewer "
                          "only if the shards hold fewer), distinct source / split / f-number first."),
    coc_bound: bool = typer.Option(False, "--coc-bound", help="Also print each split's largest CoC x f-number / long "
                                   "side (reads every coc.png): the K of `eval --coc-bound K` for a camera like these."),
) -> None:
    """Print a shard folder's manifest and write a contact sheet of a few pairs."""
    from rich.console import Console

    from defocuskit.data.inspect import MAX_ROWS, check_sheet, inspect_shards, manifest_table
    from defocuskit.data.reader import ShardError, read_manifest

    exit_before_torch(not 1 <= n <= MAX_ROWS, f"--n {n}: samples on the contact sheet, 1 to {MAX_ROWS}")
    console = Console()
    try:
        manifest = read_manifest(folder)
        check_sheet(folder, sheet)  # before the table and the --coc-bound scan of every coc.png
        console.print(manifest_table(manifest, title=f"{folder}: defocuskit {manifest.get('version', '?')}, "
                                                            f"{manifest.get('created', '?')}"))
        if coc_bound:
            from defocuskit.data.coc_bound import describe_bounds

            console.print(describe_bounds(folder, list(manifest.get("counts", {}).get("by_split", {}))), soft_wrap=True)
        path = inspect_shards(folder, sheet, n)
    except (FileNotFoundError, ValueError, ShardError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"contact sheet: {path}", soft_wrap=True)


app.command("train", context_settings={"allow_interspersed_args": True}, epilog=TRAIN_EXAMPLE)(train_cmd)

app.add_typer(recipes_app, name="recipes")
app.command("import-weights", epilog=IMPORT_EXAMPLE)(import_weights_cmd)


@app.command("deblur", epilog="Example: defocuskit deblur photos/ 'raw/*.NEF' --checkpoint "
             "runs/nafnet-tiny/model.safetensors --out sharp/")
def deblur_cmd(
    inputs: list[Path] = typer.Argument(..., help="Images (PNG 8/16-bit, JPEG, TIFF or camera RAW), folders of them, "
                                        "or quoted glob patterns such as 'shots/*.NEF'."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="An exported model (.safetensors from `defocuskit train`)."),
    out: str = typer.Option(..., "--out", help="Output folder: <stem>.png at the input's size (or --max-side's) and "
                            "bit depth."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (diffusion methods)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Sampler by name (hidd: released | pc | fast)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Sampler setting sampler.KEY=VALUE (repeatable)."),
    coc: Optional[DeblurCoc] = typer.Option(
        None, "--coc", parser=pick(DeblurCoc), help="CoC map for physics consistency: map (--coc-model) | fnumber (the "
        "shot's optics) | edge (training-free, from edge blur)."),
    coc_model: Optional[Path] = typer.Option(None, "--coc-model", help="Defocus-map model for --coc map."),
    coc_bound: Optional[float] = typer.Option(
        None, "--coc-bound", min=0.0, help="K: an estimated map (--coc map | edge) reads at most K x the long side / N "
        "pixels at f/N where the f-number is known (the thin lens: CoC at f/N = CoC at f/1 / N), refused where no "
        "input has one; 0: no bound. "
        "Default: the --coc-model's own inference.coc_bound (recipes/defocus-map-tiny.yaml: its training data's)."),
    f_number: Optional[float] = typer.Option(
        None, "--f-number", help="The shot's f-number for --coc fnumber and an estimated map's bound (--coc-bound, "
        "or the map model's own) (default: EXIF); refused where nothing uses it."),
    sensor_width: Optional[float] = typer.Option(
        None, "--sensor-width", help="MM: the camera's sensor width for --coc fnumber, spanned by the photo's long "
                                   "side, portrait or landscape (default: from EXIF, else 36)."),
    focal_length: Optional[float] = typer.Option(
        None, "--focal-length", help="MM: the lens's focal length for --coc fnumber (default: EXIF, else 50)."),
    focus_distance: Optional[float] = typer.Option(
        None, "--focus-distance", help="M: the focus distance for --coc fnumber (default: EXIF, else 2)."),
    focus_gate: Optional[float] = typer.Option(
        None, "--focus-gate", help="PX: weigh the model's change per pixel by min(1, CoC / PX) of the --coc map, so "
        "regions it reads as in focus stay as shot (e.g. --coc edge --focus-gate 3); 0: none. Default: the model's "
        "own (its recipe's inference.focus_gate, by --coc edge unless another map is given; nafnet-cpu: 3)."),
    gate_smooth: Optional[float] = typer.Option(
        None, "--gate-smooth", min=0.0, help="PX: the change's low-pass (a Gaussian of PX) that --focus-gate keeps "
        "everywhere, so only the detail is gated (default 16; 0: the whole change, regions in focus exactly as shot); "
        "refused where no focus gate runs."),
    ensemble: int = typer.Option(
        1, "--ensemble", help="N: geometric self-ensemble, the outputs for the image under 4 flips (N=4) or flips and "
        "transposes (N=8) turned back and averaged, at N times the cost (1: off)."),
    tile: Optional[int] = typer.Option(
        None, "--tile", help="Tile size. Default: convolutional models run the whole image (up to --max-tile-pixels); "
        "attention models (hidd, defocus-map) tiles of their training size."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tile overlap in pixels (default: min(32, tile/4))."),
    max_tile_pixels: Optional[int] = typer.Option(
        None, "--max-tile-pixels", help="Memory budget of one pass of a convolutional model: images with more pixels "
        "run in the largest tiles within it (default 4194304 = 2048x2048)."),
    batch: int = typer.Option(4, "--batch", help="Tiles per forward pass."),
    device: str = typer.Option("auto", "--device", help=f"{DEVICE_HELP}."),
    seed: int = typer.Option(0, "--seed", help="Seed of the samplers' noise (per tile batch)."),
    max_side: Optional[int] = typer.Option(
        None, "--max-side", help="PX: downscale each input (INTER_AREA, as ingest --max-side) so its long side is at "
        "most PX before deblurring; the output is written at that size. Defocus is measured in pixels: give the "
        "model's training scale (the note deblur prints for an input over twice its training images' long side)."),
    work_side: Optional[str] = typer.Option(
        None, "--work-side", help="PX | trained | auto: deblur each input at PX on its long side (trained: the "
        "model's training images', from its file; auto: where its blur reads as wide as the training inputs') "
        "and write it at its own size, the model's change upsampled onto it: the "
        "defocus at the width in pixels the model learnt, the photo's own detail kept (docs/benchmarks.md). "
        "Default: the model's own (its recipe's inference.work_side; nafnet-cpu: auto); 0: its own size."),
) -> None:
    """Deblur images of any size: whole or in overlapping tiles (a defocus-map model writes <stem>_coc.png maps)."""
    import sys

    exit_before_torch(str(checkpoint).endswith(".safetensors") and not checkpoint.exists(),
                      f"model file not found: {checkpoint}")
    from defocuskit.inference.coc_source import CAMERA_OPTIONS
    from defocuskit.inference.coc_source import checked_camera as camera
    from defocuskit.inference.files import deblur_files
    from defocuskit.inference.tiling import TilingOptions

    try:
        lens = camera({"sensor_width_mm": sensor_width, "focal_length_mm": focal_length,
                       "focus_distance_m": focus_distance}, CAMERA_OPTIONS)
        written = deblur_files(list(inputs), checkpoint, out, steps=steps, sampler=sampler, sets=list(set_ or []),
                               coc=value(coc), coc_model=coc_model, coc_bound=coc_bound, f_number=f_number,
                               camera=lens, focus_gate=focus_gate,
                               gate_smooth=gate_smooth, tiling=TilingOptions(tile, overlap, max_tile_pixels, batch),
                               device=device, seed=seed, ensemble=ensemble, max_side=max_side,
                               work_side=work_side)
    except KeyboardInterrupt:
        print(f"interrupted: the images written so far are listed in {Path(out) / 'deblur.json'}; run the same "
              "command again to finish", file=sys.stderr)
        raise typer.Exit(130) from None
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(f"provenance: {Path(out) / 'deblur.json'}", err=True)


@app.command("eval", epilog="Example: defocuskit eval --shards shards/ --checkpoint runs/nafnet-tiny/model.safetensors "
             "--baseline input --baseline wiener --report report/")
def eval_cmd(
    shards: Path = typer.Option(Path("shards"), "--shards", help="Shard folder written by `defocuskit ingest`."),
    checkpoint: Optional[list[Path]] = typer.Option(None, "--checkpoint", help="Exported model (repeatable)."),
    baseline: Optional[list[Baseline]] = typer.Option(
        None, "--baseline", parser=pick(Baseline), help="A baseline to score (repeatable): input (the blurred photo) | "
        "wiener | prox (disc-PSF deconvolution) | prox-gaussian (Gaussian kernels), each weighed against the "
        "photo's own noise | wiener-plain | prox-plain (not weighed)."),
    split: str = typer.Option("test", "--split", help="Which split of the shards to score."),
    by_aperture: bool = typer.Option(True, "--by-aperture/--no-by-aperture", help="One row per f-number."),
    by_source: bool = typer.Option(False, "--by-source", help="Rows per source too (each with its total): table, "
                                   "report.json, report.csv."),
    stops: bool = typer.Option(False, "--stops", help="Group by full stops instead of the recorded f-number."),
    align: bool = typer.Option(False, "--align", help="Register input and outputs to the reference before scoring (misaligned sets)."),
    align_by: AlignBy = typer.Option(
        "ecc", "--align-by", parser=pick(AlignBy), help="With --align: ecc (one warp per sample, fitted "
        "from its input, moves the input and every output onto the reference) | flow (the reference warped onto "
        "each output by optical flow: JDRL's protocol)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score at most N pairs."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (every model whose sampler has steps)."),
    sampler: Optional[list[str]] = typer.Option(
        None, "--sampler", help="[LABEL:]NAME: sampler by name for every model with named samplers, or the one labelled."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="[LABEL:]sampler.KEY=VALUE (repeatable); LABEL is the checkpoint's run-folder name."),
    coc: Optional[EvalCoc] = typer.Option(
        None, "--coc", parser=pick(EvalCoc), help="CoC map for physics consistency and baselines: map (--coc-model) | "
        "oracle (the shards' coc.png) | fnumber (the shots' optics) | edge (training-free, from edge blur)."),
    coc_model: Optional[Path] = typer.Option(None, "--coc-model", help="Defocus-map model for --coc map."),
    coc_bound: Optional[float] = typer.Option(
        None, "--coc-bound", min=0.0, help="K: an estimated map (--coc map | edge) reads at most K x the long side / N "
        "pixels at f/N where the f-number is known (the thin lens: CoC at f/N = CoC at f/1 / N), refused where no "
        "input has one; 0: no bound. "
        "Default: the --coc-model's own inference.coc_bound (recipes/defocus-map-tiny.yaml: its training data's)."),
    sensor_width: Optional[float] = typer.Option(
        None, "--sensor-width", help="MM: the camera's sensor width for --coc fnumber, spanned by each image's long "
        "side as deblur's, used over every sample's metadata value (default: the metadata's, the width its image "
        "covers, across its width; else 36 across the long side)."),
    focal_length: Optional[float] = typer.Option(
        None, "--focal-length", help="MM: the lens's focal length for --coc fnumber, over the metadata's (default: "
        "the metadata's, else 50)."),
    focus_distance: Optional[float] = typer.Option(
        None, "--focus-distance", help="M: the focus distance for --coc fnumber, over the metadata's (default: the "
        "metadata's, else 2)."),
    focus_gate: Optional[list[str]] = typer.Option(
        None, "--focus-gate", help="[LABEL:]PX: weigh each model's change per pixel by min(1, CoC / PX) of the --coc "
        "map, so regions it reads as in focus stay as shot; LABEL a checkpoint's or a baseline's (prox:3) (repeatable; "
        "the same --checkpoint twice compares); PX 0: none. A checkpoint not named: its model's own gate (its recipe's "
        "inference.focus_gate, by --coc edge unless --coc is given; nafnet-cpu: 3)."),
    gate_smooth: Optional[float] = typer.Option(
        None, "--gate-smooth", min=0.0, help="PX: the change's low-pass (a Gaussian of PX) every --focus-gate keeps "
        "everywhere, so only the detail is gated (default 16; 0: the whole change, regions in focus exactly as shot); "
        "refused where no method is gated."),
    ensemble: Optional[list[str]] = typer.Option(
        None, "--ensemble", help="[LABEL:]N: geometric self-ensemble, each model's outputs for the image under 4 flips "
        "(N=4) or flips and transposes (N=8) turned back and averaged, at N times the cost (repeatable)."),
    work_side: Optional[list[str]] = typer.Option(
        None, "--work-side", help="[LABEL:]PX | [LABEL:]trained | [LABEL:]auto: each model deblurs the images at PX on "
        "their long side (trained: its training images', from its file; auto: per image, where its blur reads as "
        "wide as the training inputs') and is scored at the shards' size, its change upsampled "
        "onto the input (repeatable; the same --checkpoint twice compares). Default: each model's own (its "
        "recipe's inference.work_side; nafnet-cpu: auto); 0: the images' own size."),
    save_images: Optional[Path] = typer.Option(
        None, "--save-images", help="Write every output under DIR/<method>/ (listed in "
        "DIR/.defocuskit-eval-images.json; replaces only files listed there)."),
    report: Path = typer.Option(Path("report"), "--report", help="Folder for report.json, report.csv, aperture.png."),
    tile: Optional[int] = typer.Option(
        None, "--tile", help="Tile size for every model. Default: convolutional models run whole images (up to "
        "--max-tile-pixels); attention models (hidd) tiles of their training size."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tile overlap (default: min(32, tile/4))."),
    max_tile_pixels: Optional[int] = typer.Option(
        None, "--max-tile-pixels", help="Memory budget of one pass of a convolutional model: larger images run in the "
        "largest tiles within it (default 4194304 = 2048x2048)."),
    batch: int = typer.Option(4, "--batch", help="Tiles per forward pass."),
    device: str = typer.Option("auto", "--device", help=f"{DEVICE_HELP}."),
    seed: int = typer.Option(0, "--seed"),
    ssim: Ssim = typer.Option("uniform7", "--ssim", parser=pick(Ssim),
                              help="uniform7 (skimage default) | gaussian11 (Wang et al.)."),
    lpips_weights: Optional[list[Path]] = typer.Option(
        None, "--lpips-weights", help="LPIPS-alex weight file(s); also $DEFOCUSKIT_LPIPS_WEIGHTS. Absent: LPIPS not reported."),
    protocol: EvalProtocolChoice = typer.Option(
        "default", "--protocol", parser=pick(EvalProtocolChoice), help="default (16-bit sources as 16-bit, outputs "
        "rounded to the reference's depth) | dpdd8 (the published DPDD tables': images as cv2.imread reads them, "
        "8-bit / 255, cropped to the releases' multiple, outputs clipped and scored unrounded)."),
    detail_band: Optional[float] = typer.Option(
        None, "--detail-band", help="PX: score the detail only: every output's and the input's low-pass (a Gaussian of "
        "PX) replaced by the reference's, so the slow part of exposure, tone, vignetting and glare differences between a "
        "real shot and its reference does not count (16 at 512 px: well above the CoC). Off by default."),
    figure: bool = typer.Option(
        False, "--figure", help="Also write REPORT/figure.png: per f-number, crops of its first pair (input, each "
        "method's output as scored, reference) with their PSNR on the crop. With --align-by ecc the input and "
        "outputs are shown registered; with --align-by flow the crops are unaligned."),
) -> None:
    """Score models and baselines on a shard split, per f-number, beside the blurred input (several processes:
    `accelerate launch -m defocuskit eval ...`)."""
    import os
    import sys

    exit_before_torch(not align and value(align_by) != "ecc",  # scored unregistered, exit 0, before
                      f"--align-by {value(align_by)}: how --align registers; without --align it would not be used")
    exit_before_torch(not shards.is_dir(), f"{shards}: {'not a folder' if shards.exists() else 'no such folder'}: give "
                      "--shards DIR, a folder `defocuskit ingest --out DIR` wrote (default: ./shards)")
    from defocuskit.data.reader import ShardError
    from defocuskit.eval.config import EvalConfig, EvalError
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.inference.coc_source import CAMERA_OPTIONS
    from defocuskit.inference.coc_source import checked_camera as camera
    from defocuskit.inference.tiling import TilingOptions

    checkpoints, baselines = list(checkpoint or []), [value(b) for b in baseline or []]
    if not checkpoints and not baselines:
        baselines = ["input", "wiener"]
        print("no --checkpoint or --baseline given: evaluating the input and wiener baselines", file=sys.stderr)
    try:
        lens = camera({"sensor_width_mm": sensor_width, "focal_length_mm": focal_length,
                       "focus_distance_m": focus_distance}, CAMERA_OPTIONS)
        config = EvalConfig(split=split, by_aperture=by_aperture, stops=stops, align=align and value(align_by),
                            limit=limit, steps=steps, samplers=list(sampler or []), sets=list(set_ or []),
                            coc=value(coc), coc_model=coc_model, coc_bound=coc_bound, camera=lens,
                            focus_gates=list(focus_gate or []),
                            gate_smooth=gate_smooth, ensembles=list(ensemble or []), work_sides=list(work_side or []),
                            save_images=save_images,
                            report_dir=report,
                            tiling=TilingOptions(tile, overlap, max_tile_pixels, batch), device=device, seed=seed,
                            ssim_variant=value(ssim), lpips_weights=lpips_weights, by_source=by_source, figure=figure,
                            protocol=value(protocol) or "default", detail_band=detail_band)
        evaluate(shards, checkpoints, baselines, config)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"interrupted: {report} holds the previous report, if any, as it was; run the same command again",
                  file=sys.stderr)
        raise typer.Exit(130) from None
    except (EvalError, ShardError, ValueError, FileNotFoundError) as exc:
        from defocuskit.cli.once import fail

        fail(str(exc), 2)  # once under `accelerate launch` where the main process stopped with it too
    if os.environ.get("RANK", "0") == "0":  # once under `accelerate launch`: the main process wrote the report
        plot, crops = report / "aperture.png", report / "figure.png"
        typer.echo(f"report: {report / 'report.json'}, {report / 'report.csv'}"
                   + (f"; plot: {plot}" if plot.exists() else "") + (f"; figure: {crops}" if figure and crops.exists() else ""))


@app.command("demo", epilog="Example: defocuskit demo --out demo-out/  (--steps-scale 0.2 for a quicker, weaker run)")
def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's shards, runs and report."),
    minutes: float = typer.Option(30.0, "--minutes", help="Safety cap on the training time of all models together "
                                  "(each trains a fixed number of steps; a run the cap stops is named); at least 0.5 "
                                  "(misaligned: 0.4): about 5 s of it is kept for each model's setup and export."),
    steps_scale: float = typer.Option(1.0, "--steps-scale", help="Multiply every model's training steps (0.01: a smoke run)."),
    size: int = typer.Option(128, "--size", help="Longer side of the synthetic scenes."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help=f"Ingest: {WORKERS_HELP}."),
    device: str = typer.Option("auto", "--device", help=f"Evaluation device: {DEVICE_HELP}."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score at most N test pairs."),
    preset: Preset = typer.Option(
        "default", "--preset", parser=pick(Preset), help="default (defocus-map, NAFNet, RDDM, HIDD) | misaligned (JDRL "
        "vs NAFNet on misaligned and aligned pairs) | baselines (DnCNN, FFDNet, CycleGAN, HIDD)."),
) -> None:
    """Run the whole pipeline on the built-in synthetic set: ingest, train the preset's models, evaluate by aperture."""
    import sys

    from defocuskit.cli.demo import run_demo
    from defocuskit.data.reader import ShardError
    from defocuskit.data.sample import IngestError
    from defocuskit.train.checks import TrainingError

    try:
        run_demo(out=out, minutes=minutes, steps_scale=steps_scale, size=size, workers=workers, device=device, limit=limit, preset=value(preset))
    except (ValueError, FileNotFoundError, IngestError, TrainingError, ShardError) as exc:  # a damaged shard: one line
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.command("pseudo-coc", epilog="Example: defocuskit pseudo-coc --checkpoint runs/jdrl/model.safetensors "
             "--shards shards/ --out shards-coc/  (then: defocuskit train defocus-map-tiny data.train=shards-coc/)")
def pseudo_coc_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A trained JDRL model (.safetensors)."),
    shards: Path = typer.Option(..., "--shards", help="Shard folder with paired samples."),
    out: Path = typer.Option(..., "--out", help="New shard folder: the same samples with a pseudo coc.png."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split (default: all)."),
    device: str = typer.Option("auto", "--device", help=f"{DEVICE_HELP}."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace another dataset's shard folder at --out "
                                   "(only the files its manifest and records list are removed)."),
) -> None:
    """Pairs into triplets: write the JDRL reblurring module's blur map as coc.png (for defocus-map training)."""
    import sys

    exit_before_torch(not checkpoint.exists(), f"model file not found: {checkpoint}")
    exit_before_torch(not shards.exists(), f"--shards {shards}: no such shard folder or file")
    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data.folder import FolderError
    from defocuskit.data.reader import ShardError

    try:
        manifest = write_pseudo_coc(checkpoint, shards, out, split=split, device=device, overwrite=overwrite)
    except KeyboardInterrupt:
        print("interrupted: completed shards are kept; run the same command again to finish", file=sys.stderr)
        raise typer.Exit(130) from None
    except (ShardError, FolderError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    typer.echo(f"{manifest['counts']['samples']} samples with pseudo coc.png in {out}")


def main() -> None:
    """Console-script entry point; a full disk anywhere is one line naming the path and its disk (exit 1)."""
    run_reporting_disk_full(app)
