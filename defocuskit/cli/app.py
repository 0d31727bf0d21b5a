"""The `defocuskit` command line: thin wrappers, one function call per command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defocuskit.cli.options import (
    DEVICE_HELP,
    WORKERS_HELP,
    AlignBy,
    Baseline,
    BitDepth,
    CuhkWhiteIs,
    DeblurCoc,
    EvalCoc,
    Preset,
    Register,
    RenderDepth,
    SplitBy,
    Ssim,
    exit_before_torch,
    hide_flag_types,
    print_version,
    run_reporting_disk_full,
    set_threads,
    value,
)
from defocuskit.cli.recipes import recipes_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Single-image defocus deblurring research toolkit.")
hide_flag_types()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                 help="Print defocuskit's version (and torch's) and exit."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of every command (also "
                                          "$DEFOCUSKIT_THREADS; default: cores / processes, never more)."),
) -> None:
    """Single-image defocus deblurring research toolkit."""
    set_threads(threads)


@app.command("ingest")
def ingest_cmd(
    out: Path = typer.Option(..., "--out", help="Shard folder to write (resumable: run the same command again)."),
    raw_dir: Optional[Path] = typer.Option(None, "--raw-dir", help="Your own captures: RAW/JPEG/TIFF, one folder per scene."),
    dpdd: Optional[Path] = typer.Option(None, "--dpdd", help="DPDD root ({train_c,val_c,test_c}/{source,target})."),
    realblur: Optional[Path] = typer.Option(None, "--realblur", help="RealBlur root."),
    ded: Optional[Path] = typer.Option(None, "--ded", help="DED (Lytro) root."),
    realdof: Optional[Path] = typer.Option(None, "--realdof", help="RealDOF root."),
    vabd: Optional[Path] = typer.Option(None, "--vabd", help="VABD root."),
    ebb: Optional[Path] = typer.Option(None, "--ebb", help="EBB! root."),
    sdd: Optional[Path] = typer.Option(None, "--sdd", help="SDD root (JDRL, Li et al.: {train_patches,test}/{gt,blur}/, paired by file name)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Your own misaligned pairs: DIR/{blur,sharp}/ or DIR/{train,test}/{blur,sharp}/ (paired by file stem, else by sorted order)."),
    synthetic: Optional[str] = typer.Option(None, "--synthetic", help="'builtin': scikit-image photos rendered through a thin lens."),
    cuhk_blur: Optional[Path] = typer.Option(None, "--cuhk-blur", help="CUHK blur detection root ({image,images}/*.jpg + gt/*.png): out-of-focus photos with binary blur maps (blur.png + blurmask.png, no sharp.png)."),
    cuhk_white_is: CuhkWhiteIs = typer.Option("auto", "--cuhk-white-is", help="--cuhk-blur: what white in gt/ marks: auto (decided from the photos' sharpness) | blurred | sharp."),
    cuhk_test_fraction: float = typer.Option(0.0, "--cuhk-test-fraction", help="--cuhk-blur: about this share of the photos (seed-free hash of the name) go to test; the rest to train."),
    render: Optional[Path] = typer.Option(None, "--render", help="Your all-in-focus photos with depth maps ({image,depth}/ by stem, optional focal/ masks), rendered into aperture stacks through the thin-lens renderer (coc.png + cocsign.png)."),
    render_depth: RenderDepth = typer.Option("relative", "--render-depth", help="--render: what the depth maps hold: relative (larger = farther) | inverse (disparity) | metric."),
    render_colormap: str = typer.Option("auto", "--render-colormap", help="--render: colormap of false-colour depth maps (auto = detected, e.g. Spectral)."),
    render_f_numbers: str = typer.Option("1.8,2.8,4,5.6,8", "--render-f-numbers", help="--render: comma-separated f-numbers to render."),
    render_ref_f_number: float = typer.Option(16.0, "--render-ref-f-number", help="--render: the f-number the photos count as shot at."),
    render_coc_scale: Optional[float] = typer.Option(None, "--render-coc-scale", help="--render, relative/inverse depth: CoC in px at f/1 per unit of relative CoC, at the rendered size (default: the calibrated fraction of the longer side)."),
    render_focal_length: float = typer.Option(50.0, "--render-focal-length", help="--render, metric depth: focal length (mm)."),
    render_sensor_width: float = typer.Option(36.0, "--render-sensor-width", help="--render, metric depth: sensor width (mm)."),
    render_metric_scale: float = typer.Option(65.535, "--render-metric-scale", help="--render, metric depth: metres per decoded unit (a 16-bit PNG in mm: 65.535)."),
    render_focus: str = typer.Option("auto", "--render-focus", help="--render: auto (focal/ mask where there is one, else a seeded depth percentile) | mask | sample | a depth value."),
    render_noise: bool = typer.Option(True, "--render-noise/--no-render-noise", help="--render: sensor noise on the rendered shots."),
    render_noise_photons: float = typer.Option(4000.0, "--render-noise-photons", min=1.0, help="--render: photons at full scale of the sensor noise (more photons, less noise)."),
    render_jpeg: Optional[int] = typer.Option(None, "--render-jpeg", min=1, max=100, help="--render: JPEG round trip at this quality."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help=f"Decoding and registration: {WORKERS_HELP}."),
    shard_size: int = typer.Option(64, "--shard-size", help="Source pairs per shard."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Downscale so the longer side is at most this."),
    patch: Optional[int] = typer.Option(None, "--patch", help="Cut training patches of this size."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Patch stride (default: the patch size)."),
    min_sharpness: Optional[float] = typer.Option(None, "--min-sharpness", help="Drop flat patches (mean luminance gradient below this, e.g. 0.01)."),
    bit_depth: BitDepth = typer.Option("auto", "--bit-depth", help="Sample type of the shards' images: auto (16-bit where the source has more than 8 bits), 8 or 16."),
    split_by: SplitBy = typer.Option("scene", "--split-by", help="For sources without official splits: scene (a stable hash of the scene name, --test-fraction to test) | train | test (everything there)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="With --split-by scene."),
    scene_gap: Optional[float] = typer.Option(None, "--scene-gap", help="RAW: split folders into scenes at capture gaps (seconds)."),
    f_number_csv: Optional[Path] = typer.Option(None, "--f-number-csv", help="RAW and --pairs: CSV with columns file,f_number (files relative to --raw-dir / --pairs); overrides EXIF."),
    f_number_pattern: Optional[str] = typer.Option(None, "--f-number-pattern", help="RAW and --pairs: regex whose first group, found in a file name, is the f-number ('_' read as '.'), for files without EXIF FNumber, e.g. 'f(\\d+(?:[._]\\d+)?)'."),
    register: Register = typer.Option("ecc", "--register", help="Registration of misaligned pairs (RAW, VABD, EBB, SDD, --pairs): ecc (homography fallback) | homography | none (keep pairs as shot: no warp, no gain)."),
    min_align_score: float = typer.Option(0.8, "--min-align-score", help="Reject pairs registered worse than this."),
    part: str = typer.Option("1/1", "--part", help="I/N: ingest only the I-th of N parts (job arrays); parts merge."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad input instead of recording it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace another dataset's shard folder at --out (only "
                                   "the files its manifest and records list are removed; other files are kept)."),
    seed: int = typer.Option(0, "--seed"),
    synthetic_f_numbers: str = typer.Option("1.4,2,2.8,4,5.6,8", "--synthetic-f-numbers", help="Comma-separated f-numbers."),
    synthetic_size: int = typer.Option(256, "--synthetic-size", help="Longer side of the synthetic scenes."),
    synthetic_misalign: float = typer.Option(
        0.0, "--synthetic-misalign", help="Move each synthetic reference by a random shift up to this many pixels "
        "and ~1 percent scale (misaligned training pairs, e.g. for jdrl; recorded in align)."),
) -> None:
    """Turn photo folders and public datasets into aperture-tagged WebDataset shards."""
    from rich.console import Console

    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.inspect import manifest_table
    from defocuskit.data.sample import IngestError, IngestOptions

    given = {"raw": raw_dir, "dpdd": dpdd, "realblur": realblur, "ded": ded, "realdof": realdof,
             "vabd": vabd, "ebb": ebb, "sdd": sdd, "pairs": pairs,
             "synthetic": Path(synthetic) if synthetic else None, "cuhk-blur": cuhk_blur, "render": render}
    sources = {k: v for k, v in given.items() if v is not None}
    try:
        i, n = (int(x) for x in part.split("/"))
        f_numbers = tuple(float(x) for x in synthetic_f_numbers.split(","))
        rendered = tuple(float(x) for x in render_f_numbers.split(","))
    except ValueError:
        raise typer.BadParameter("--part needs I/N, --synthetic-f-numbers and --render-f-numbers numbers, "
                                 "e.g. 1/4 and 1.4,2,2.8") from None
    if not 0.0 <= cuhk_test_fraction < 1.0:
        raise typer.BadParameter(f"--cuhk-test-fraction must be in [0, 1), not {cuhk_test_fraction}")
    opts = IngestOptions(
        out=str(out), workers=workers, shard_size=shard_size, max_side=max_side, patch=patch, stride=stride,
        min_sharpness=min_sharpness, bit_depth=value(bit_depth), split_by=value(split_by), test_fraction=test_fraction,
        scene_gap_s=scene_gap, f_number_csv=str(f_number_csv) if f_number_csv else None,
        f_number_pattern=f_number_pattern, register=value(register), min_align_score=min_align_score, part=(i - 1, n),
        strict=strict, overwrite=overwrite, seed=seed, synthetic_f_numbers=f_numbers, synthetic_size=synthetic_size,
        synthetic_misalign_px=synthetic_misalign, cuhk_white_is=value(cuhk_white_is), cuhk_test_fraction=cuhk_test_fraction,
        render_depth_kind=value(render_depth), render_depth_colormap=render_colormap, render_f_numbers=rendered,
        render_ref_f_number=render_ref_f_number, render_coc_scale=render_coc_scale,
        render_focal_length_mm=render_focal_length, render_sensor_width_mm=render_sensor_width,
        render_metric_scale=render_metric_scale,
        render_focus=render_focus, render_noise=render_noise, render_noise_photons=render_noise_photons, render_jpeg_quality=render_jpeg,
    )
    console = Console()
    try:
        manifest = run_ingest(sources, opts)
    except IngestError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("interrupted: completed shards are kept; run the same command again to finish")
        raise typer.Exit(130) from None
    run = manifest["run"]
    console.print(manifest_table(manifest))
    console.print(f"{run['shards_written']} shards written, {run['shards_skipped']} already done, "
                  f"{run['samples_written']} samples in {run['seconds']:.1f} s; rejects: {run['rejects_new']} new, "
                  f"{manifest['rejects']} total (see {out / 'rejects.jsonl'})"
                  + ("" if manifest["complete"] else "; other parts still missing"), soft_wrap=True)


@app.command("inspect")
def inspect_cmd(
    folder: Path = typer.Argument(..., help="A shard folder written by `defocuskit ingest`."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Contact sheet PNG (default FOLDER/contact_sheet.png)."),
    n: int = typer.Option(6, "--n", help="Samples on the contact sheet, one row each: exactly N (fewer only if the "
                          "shards hold fewer), distinct source / split / f-number first."),
) -> None:
    """Print a shard folder's manifest and write a contact sheet of a few pairs."""
    from rich.console import Console

    from defocuskit.data.inspect import inspect_shards, manifest_table
    from defocuskit.data.reader import ShardError, read_manifest

    console = Console()
    try:
        manifest = read_manifest(folder)
        console.print(manifest_table(manifest, title=f"{folder}: defocuskit {manifest['version']}, {manifest['created']}"))
        path = inspect_shards(folder, sheet, n)
    except (FileNotFoundError, ValueError, ShardError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"contact sheet: {path}", soft_wrap=True)


@app.command("train", context_settings={"allow_interspersed_args": True})
def train_cmd(
    recipe: str = typer.Argument(..., help="A recipe YAML file, or a packaged recipe by name (`defocuskit recipes` "
                                 "lists them): nafnet-tiny, nafnet-tiny.yaml or recipes/nafnet-tiny.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted key=value overrides, e.g. train.max_steps=100 data.train=shards/"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved recipe and parameter counts, then exit."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over, deleting the run folder's checkpoints."),
) -> None:
    """Train a method from a recipe (one process, or under `accelerate launch -m defocuskit train ...`)."""
    import os
    import sys

    from defocuskit.config.recipe import recipe_to_yaml
    from defocuskit.config.typed import RecipeError
    from defocuskit.methods.recipes import load_recipe

    try:
        resolved = load_recipe(recipe, overrides or [])
        if dry_run:
            from defocuskit.methods import get_method
            from defocuskit.train.checks import check_recipe, format_counts, parameter_counts

            method = get_method(resolved.method)
            check_recipe(resolved, method)
            typer.echo(recipe_to_yaml(resolved), nl=False)
            model = method.build(resolved.model, resolved.objective, False)
            typer.echo(f"# {method.name}: parameters\n" + "\n".join(f"#{line}" for line in format_counts(parameter_counts(model)).splitlines()))
            return
        from defocuskit.data.reader import ShardError, shard_error_line
        from defocuskit.eval.validation import make_validator
        from defocuskit.train.checks import TrainingError
        from defocuskit.train.loop import train

        try:
            path = train(resolved, resume=not no_resume, validate=make_validator(resolved))
        except TrainingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(1) from None
        except ShardError as exc:  # also when a DataLoader worker met it (its message then wraps a traceback)
            print(f"error: {shard_error_line(exc)}", file=sys.stderr)
            raise typer.Exit(1) from None
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if os.environ.get("RANK", "0") == "0":  # once under `accelerate launch`
        typer.echo(f"model: {path}")


app.add_typer(recipes_app, name="recipes")


@app.command("deblur")
def deblur_cmd(
    inputs: list[Path] = typer.Argument(..., help="Images (PNG 8/16-bit, JPEG, TIFF or camera RAW), folders of them, "
                                        "or quoted glob patterns such as 'shots/*.NEF'."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="An exported model (.safetensors from `defocuskit train`)."),
    out: Path = typer.Option(..., "--out", help="Output folder: <stem>.png at the input's size and bit depth."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (diffusion methods)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Sampler by name (hidd: released | pc | fast)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Sampler setting sampler.KEY=VALUE (repeatable)."),
    coc: Optional[DeblurCoc] = typer.Option(None, "--coc", help="CoC map for physics consistency: map (--coc-model) | "
                                            "fnumber (the shot's optics) | edge (training-free, from edge blur)."),
    coc_model: Optional[Path] = typer.Option(None, "--coc-model", help="Defocus-map model for --coc map."),
    f_number: Optional[float] = typer.Option(None, "--f-number", help="--coc fnumber: the shot's f-number (default: EXIF)."),
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
) -> None:
    """Deblur images of any size: whole or in overlapping tiles (a defocus-map model writes <stem>_coc.png maps)."""
    import sys

    exit_before_torch(str(checkpoint).endswith(".safetensors") and not checkpoint.exists(),
                      f"model file not found: {checkpoint}")
    from defocuskit.inference.files import deblur_files
    from defocuskit.inference.tiling import TilingOptions

    try:
        written = deblur_files(list(inputs), checkpoint, out, steps=steps, sampler=sampler, sets=list(set_ or []),
                               coc=value(coc), coc_model=coc_model, f_number=f_number,
                               tiling=TilingOptions(tile, overlap, max_tile_pixels, batch), device=device, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(f"provenance: {out / 'deblur.json'}", err=True)


@app.command("eval")
def eval_cmd(
    shards: Path = typer.Option(Path("shards"), "--shards", help="Shard folder written by `defocuskit ingest`."),
    checkpoint: Optional[list[Path]] = typer.Option(None, "--checkpoint", help="Exported model (repeatable)."),
    baseline: Optional[list[Baseline]] = typer.Option(None, "--baseline", help="A baseline to score (repeatable): input "
                                                      "(the blurred photo) | wiener | prox (disc-PSF deconvolution)."),
    split: str = typer.Option("test", "--split", help="Which split of the shards to score."),
    by_aperture: bool = typer.Option(True, "--by-aperture/--no-by-aperture", help="One row per f-number."),
    by_source: bool = typer.Option(False, "--by-source", help="Rows per source too (each with its total): table, "
                                   "report.json, report.csv."),
    stops: bool = typer.Option(False, "--stops", help="Group by full stops instead of the recorded f-number."),
    align: bool = typer.Option(False, "--align", help="Register outputs to the reference before scoring (misaligned sets)."),
    align_by: AlignBy = typer.Option(
        "ecc", "--align-by", help="With --align: ecc (output registered onto the reference, affine) | flow (the "
        "reference warped onto each output by optical flow: JDRL's protocol)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score at most N pairs."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (every model whose sampler has steps)."),
    sampler: Optional[list[str]] = typer.Option(
        None, "--sampler", help="[LABEL:]NAME: sampler by name for every model with named samplers, or the one labelled."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="[LABEL:]sampler.KEY=VALUE (repeatable); LABEL is the checkpoint's run-folder name."),
    coc: Optional[EvalCoc] = typer.Option(None, "--coc", help="CoC map for physics consistency and baselines: map "
                                          "(--coc-model) | oracle (the shards' coc.png) | fnumber (the shots' optics) | "
                                          "edge (training-free, from edge blur)."),
    coc_model: Optional[Path] = typer.Option(None, "--coc-model", help="Defocus-map model for --coc map."),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="Write every output under DIR/<method>/."),
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
    ssim: Ssim = typer.Option("uniform7", "--ssim", help="uniform7 (skimage default) | gaussian11 (Wang et al.)."),
    lpips_weights: Optional[list[Path]] = typer.Option(
        None, "--lpips-weights", help="LPIPS-alex weight file(s); also $DEFOCUSKIT_LPIPS_WEIGHTS. Absent: LPIPS not reported."),
    figure: bool = typer.Option(
        False, "--figure", help="Also write REPORT/figure.png: per f-number, crops of its first pair (input, each "
        "method's output as scored, reference) with their PSNR on the crop. With --align-by ecc the input and "
        "outputs are shown registered; with --align-by flow the crops are unaligned."),
) -> None:
    """Score models and baselines on a shard split, per f-number, beside the blurred input (several processes:
    `accelerate launch -m defocuskit eval ...`)."""
    import os
    import sys

    exit_before_torch(not shards.is_dir(), f"{shards}: not a shard folder")
    from defocuskit.data.reader import ShardError
    from defocuskit.eval.config import EvalConfig, EvalError
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.inference.tiling import TilingOptions

    checkpoints, baselines = list(checkpoint or []), [value(b) for b in baseline or []]
    if not checkpoints and not baselines:
        baselines = ["input", "wiener"]
        print("no --checkpoint or --baseline given: evaluating the input and wiener baselines", file=sys.stderr)
    try:
        config = EvalConfig(split=split, by_aperture=by_aperture, stops=stops, align=align and value(align_by),
                            limit=limit, steps=steps, samplers=list(sampler or []), sets=list(set_ or []),
                            coc=value(coc), coc_model=coc_model, save_images=save_images, report_dir=report,
                            tiling=TilingOptions(tile, overlap, max_tile_pixels, batch), device=device, seed=seed,
                            ssim_variant=value(ssim), lpips_weights=lpips_weights, by_source=by_source, figure=figure)
        evaluate(shards, checkpoints, baselines, config)
    except (EvalError, ShardError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    if os.environ.get("RANK", "0") == "0":  # once under `accelerate launch`: the main process wrote the report
        plot, crops = report / "aperture.png", report / "figure.png"
        typer.echo(f"report: {report / 'report.json'}, {report / 'report.csv'}"
                   + (f"; plot: {plot}" if plot.exists() else "") + (f"; figure: {crops}" if figure and crops.exists() else ""))


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the demo's shards, runs and report."),
    minutes: float = typer.Option(30.0, "--minutes", help="Safety cap on the training time of all models together "
                                  "(each trains a fixed number of steps; a run the cap stops is named)."),
    steps_scale: float = typer.Option(1.0, "--steps-scale", help="Multiply every model's training steps (0.01: a smoke run)."),
    size: int = typer.Option(128, "--size", help="Longer side of the synthetic scenes."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help=f"Ingest: {WORKERS_HELP}."),
    device: str = typer.Option("auto", "--device", help=f"Evaluation device: {DEVICE_HELP}."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score at most N test pairs."),
    preset: Preset = typer.Option("default", "--preset", help="default (defocus-map, NAFNet, RDDM, HIDD) | misaligned "
                                  "(JDRL vs NAFNet on misaligned and aligned pairs) | baselines (DnCNN, FFDNet, CycleGAN, HIDD)."),
) -> None:
    """Run the whole pipeline on the built-in synthetic set: ingest, train the preset's models, evaluate by aperture."""
    import sys

    from defocuskit.cli.demo import run_demo

    try:
        run_demo(out=out, minutes=minutes, steps_scale=steps_scale, size=size, workers=workers, device=device, limit=limit, preset=value(preset))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.command("pseudo-coc")
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

    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data.folder import FolderError
    from defocuskit.data.reader import ShardError

    try:
        manifest = write_pseudo_coc(checkpoint, shards, out, split=split, device=device, overwrite=overwrite)
    except (ShardError, FolderError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    typer.echo(f"{manifest['counts']['samples']} samples with pseudo coc.png in {out}")


def main() -> None:
    """Console-script entry point; a full disk anywhere is one line naming the path and its disk (exit 1)."""
    run_reporting_disk_full(app)
