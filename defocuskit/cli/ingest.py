"""`defocuskit ingest`: photo folders and public datasets into aperture-tagged WebDataset shards (its ~45
options in help panels: sources, their options, output, patches, registration, rendering, run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from defocuskit.cli.options import (
    WORKERS_HELP,
    BitDepth,
    BracketFit,
    CuhkWhiteIs,
    Register,
    RenderDepth,
    SplitBy,
    pick,
    value,
)

SOURCES, SOURCE_OPTIONS, OUTPUT = "Sources (one or more)", "Source options", "Output"
PATCHES, REGISTRATION, RENDERING, RUN = "Patches", "Registration (misaligned pairs)", "Rendering (--render)", "Run"
INGEST_EXAMPLE = ("Example: defocuskit ingest --dpdd ~/data/DPDD --synthetic builtin --patch 128 --out shards/  "
          "(then: defocuskit inspect shards/)")


def ingest_cmd(
    raw_dir: Optional[Path] = typer.Option(None, "--raw-dir", rich_help_panel=SOURCES, help="Your own captures: RAW/JPEG/TIFF, one folder per scene."),
    dpdd: Optional[Path] = typer.Option(None, "--dpdd", rich_help_panel=SOURCES, help="DPDD root ({train_c,val_c,test_c}/{source,target}), or the folder holding it."),
    realblur: Optional[Path] = typer.Option(None, "--realblur", rich_help_panel=SOURCES, help="RealBlur root, or the folder holding it."),
    ded: Optional[Path] = typer.Option(None, "--ded", rich_help_panel=SOURCES, help="DED (Lytro) root, or the folder holding it."),
    realdof: Optional[Path] = typer.Option(None, "--realdof", rich_help_panel=SOURCES, help="RealDOF root ({source,target}/), not the folder holding it."),
    vabd: Optional[Path] = typer.Option(None, "--vabd", rich_help_panel=SOURCES, help="VABD root, or the folder holding it."),
    ebb: Optional[Path] = typer.Option(None, "--ebb", rich_help_panel=SOURCES, help="EBB! root, or the folder holding it."),
    sdd: Optional[Path] = typer.Option(None, "--sdd", rich_help_panel=SOURCES, help="SDD root (JDRL, Li et al.: {train_patches,test}/{gt,blur}/, paired by file name), or the folder holding it."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", rich_help_panel=SOURCES, help="Your own misaligned pairs: DIR/{blur,sharp}/ or DIR/{train,test}/{blur,sharp}/ (paired by file stem, else by sorted order)."),
    synthetic: Optional[str] = typer.Option(None, "--synthetic", rich_help_panel=SOURCES, help="'builtin': scikit-image photos rendered through a thin lens."),
    cuhk_blur: Optional[Path] = typer.Option(None, "--cuhk-blur", rich_help_panel=SOURCES, help="CUHK blur detection root ({image,images}/*.jpg + gt/*.png): out-of-focus photos with binary blur maps (blur.png + blurmask.png, no sharp.png); or the folder holding it."),
    render: Optional[Path] = typer.Option(None, "--render", rich_help_panel=SOURCES, help="Your all-in-focus photos with depth maps ({image,depth}/ by stem, optional focal/ masks), rendered into aperture stacks through the thin-lens renderer (coc.png + cocsign.png)."),
    out: Path = typer.Option(..., "--out", rich_help_panel=OUTPUT, help="Shard folder to write (resumable: run the same command again)."),
    shard_size: int = typer.Option(64, "--shard-size", rich_help_panel=OUTPUT, help="Source pairs per shard."),
    bit_depth: BitDepth = typer.Option("auto", "--bit-depth", rich_help_panel=OUTPUT, parser=pick(BitDepth), help="Sample type of the shards' images: auto (16-bit where the source has more than 8 bits), 8 or 16."),
    split_by: SplitBy = typer.Option("scene", "--split-by", rich_help_panel=OUTPUT, parser=pick(SplitBy), help="For sources without official splits: scene (a stable hash of the scene name, --test-fraction to test) | train | test (everything there)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", rich_help_panel=OUTPUT, help="With --split-by scene."),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT, help="Replace another dataset's shard folder at --out (only "
                                   "the files its manifest and records list are removed; other files are kept)."),
    dual_pixel: bool = typer.Option(False, "--dual-pixel", rich_help_panel=SOURCE_OPTIONS, help="--dpdd: also store each blurred shot's dual-pixel views ({train,val,test}_l/source, _r/source) as left.png / right.png, for IFAN's disparity loss."),
    cuhk_white_is: CuhkWhiteIs = typer.Option("auto", "--cuhk-white-is", rich_help_panel=SOURCE_OPTIONS, parser=pick(CuhkWhiteIs), help="--cuhk-blur: what white in gt/ marks: auto (decided from the photos' sharpness) | blurred | sharp."),
    cuhk_test_fraction: float = typer.Option(0.0, "--cuhk-test-fraction", rich_help_panel=SOURCE_OPTIONS, help="--cuhk-blur: about this share of the photos (seed-free hash of the name) go to test; the rest to train."),
    scene_gap: Optional[float] = typer.Option(None, "--scene-gap", rich_help_panel=SOURCE_OPTIONS, help="RAW: split folders into scenes at capture gaps (seconds)."),
    f_number_csv: Optional[Path] = typer.Option(None, "--f-number-csv", rich_help_panel=SOURCE_OPTIONS, help="RAW and --pairs: CSV with columns file,f_number (files relative to --raw-dir / --pairs); overrides EXIF."),
    f_number_pattern: Optional[str] = typer.Option(None, "--f-number-pattern", rich_help_panel=SOURCE_OPTIONS, help="RAW and --pairs: regex whose first group, found in a file name, is the f-number ('_' read as '.'), for files without EXIF FNumber, e.g. 'f(\\d+(?:[._]\\d+)?)'."),
    synthetic_f_numbers: str = typer.Option("1.4,2,2.8,4,5.6,8", "--synthetic-f-numbers", rich_help_panel=SOURCE_OPTIONS, help="--synthetic: comma-separated f-numbers."),
    synthetic_size: int = typer.Option(256, "--synthetic-size", rich_help_panel=SOURCE_OPTIONS, help="--synthetic: longer side of the scenes."),
    synthetic_misalign: float = typer.Option(
        0.0, "--synthetic-misalign", rich_help_panel=SOURCE_OPTIONS, help="--synthetic: move each reference by a random shift up to this many pixels "
        "and ~1 percent scale (misaligned training pairs, e.g. for jdrl; recorded in align)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", rich_help_panel=PATCHES, help="Downscale so the longer side is at most this."),
    patch: Optional[int] = typer.Option(None, "--patch", rich_help_panel=PATCHES, help="Cut training patches of this size."),
    stride: Optional[int] = typer.Option(None, "--stride", rich_help_panel=PATCHES, help="Patch stride (default: the patch size)."),
    min_sharpness: Optional[float] = typer.Option(None, "--min-sharpness", rich_help_panel=PATCHES, help="Drop flat patches (mean luminance gradient below this, e.g. 0.01)."),
    register: Register = typer.Option("ecc", "--register", rich_help_panel=REGISTRATION, parser=pick(Register), help="Registration of misaligned pairs (RAW, VABD, EBB, SDD, --pairs): ecc (homography fallback) | homography | none (keep pairs as shot: no warp, no gain)."),
    min_align_score: float = typer.Option(0.8, "--min-align-score", rich_help_panel=REGISTRATION, help="Reject pairs registered worse than this."),
    bracket_fit: BracketFit = typer.Option("frame", "--bracket-fit", rich_help_panel=REGISTRATION, parser=pick(BracketFit), help="How an aperture bracket (--vabd, --raw-dir) is fitted: frame (ECC affine on the whole frame) or subject (a shift and a rotation on the detail both shots hold: the bokeh pulls a whole-frame fit off by pixels when its discs reach 5-10 % of the frame)."),
    refine_warp: float = typer.Option(0.0, "--refine-warp", rich_help_panel=REGISTRATION, help="After the rigid fit, a smooth residual warp where both shots share detail, over a Gaussian of this x the long side (e.g. 0.047), kept only where the shared detail then agrees better: for brackets the bokeh pulled off the subject and pairs shot off a tripod. 0: the rigid fit alone."),
    local_gain: float = typer.Option(0.0, "--local-gain", rich_help_panel=REGISTRATION, help="Match exposure and colour per region, not with one gain: per channel, over a Gaussian of this x the long side (e.g. 0.06), for training pairs whose light changed between shots. 0: one gain."),
    render_depth: RenderDepth = typer.Option("relative", "--render-depth", rich_help_panel=RENDERING, parser=pick(RenderDepth), help="--render: what the depth maps hold: relative (larger = farther) | inverse (disparity) | metric."),
    render_colormap: str = typer.Option("auto", "--render-colormap", rich_help_panel=RENDERING, help="--render: colormap of false-colour depth maps (auto = detected, e.g. Spectral)."),
    render_f_numbers: str = typer.Option("1.8,2.8,4,5.6,8", "--render-f-numbers", rich_help_panel=RENDERING, help="--render: comma-separated f-numbers to render."),
    render_ref_f_number: float = typer.Option(16.0, "--render-ref-f-number", rich_help_panel=RENDERING, help="--render: the f-number the photos count as shot at."),
    render_coc_scale: Optional[float] = typer.Option(None, "--render-coc-scale", rich_help_panel=RENDERING, help="--render, relative/inverse depth: CoC in px at f/1 per unit of relative CoC, at the rendered size (default: the calibrated fraction of the longer side)."),
    render_focal_length: float = typer.Option(50.0, "--render-focal-length", rich_help_panel=RENDERING, help="--render, metric depth: focal length (mm)."),
    render_sensor_width: float = typer.Option(36.0, "--render-sensor-width", rich_help_panel=RENDERING, help="--render, metric depth: the camera's sensor width (mm), spanned by the photo's long side."),
    render_metric_scale: Optional[float] = typer.Option(None, "--render-metric-scale", rich_help_panel=RENDERING, help="--render, metric depth: metres per decoded unit (default by the map's sample type: 1 for a float TIFF or .npy array, read as its values, in metres; 65.535 for an 8/16-bit image, read as 0-1: a 16-bit PNG in mm)."),
    render_focus: str = typer.Option("auto", "--render-focus", rich_help_panel=RENDERING, help="--render: auto (focal/ mask where there is one, else a seeded depth percentile) | mask | sample | a depth value (metres for metric depth, else in the map's units)."),
    render_noise: bool = typer.Option(True, "--render-noise/--no-render-noise", rich_help_panel=RENDERING, help="--render: sensor noise on the rendered shots."),
    render_noise_photons: float = typer.Option(4000.0, "--render-noise-photons", rich_help_panel=RENDERING, min=1.0, help="--render: photons at full scale of the sensor noise (more photons, less noise)."),
    render_veil: float = typer.Option(0.0, "--render-veil", rich_help_panel=RENDERING, min=0.0, max=2.0, help="--render: veiling glare of the lens, the share of light scattered evenly at f/1 (V / N^2 at f/N; e.g. 0.125 for the VABD camera, fitted by tools/fit_veil.py). 0: none."),
    render_veil_spread: float = typer.Option(0.0, "--render-veil-spread", rich_help_panel=RENDERING, min=0.0, max=1.0, help="--render: glare varies by scene: each photo's V drawn uniformly in V x (1 - S ... 1 + S), seeded by the photo (all its apertures alike). 0: every photo V."),
    render_jpeg: Optional[int] = typer.Option(None, "--render-jpeg", rich_help_panel=RENDERING, min=1, max=100, help="--render: JPEG round trip at this quality."),
    workers: Optional[int] = typer.Option(None, "--workers", rich_help_panel=RUN, min=0, help=f"Decoding and registration: {WORKERS_HELP}."),
    part: str = typer.Option("1/1", "--part", rich_help_panel=RUN, help="I/N: ingest only the I-th of N parts (job arrays); parts merge."),
    strict: bool = typer.Option(False, "--strict", rich_help_panel=RUN, help="Stop at the first bad input instead of recording it."),
    seed: int = typer.Option(0, "--seed", rich_help_panel=RUN, help="Seed of the scene split hash, the synthetic scenes "
                           "and the renders' focus and noise."),
) -> None:
    """Turn photo folders and public datasets into aperture-tagged WebDataset shards."""
    from rich.console import Console

    from defocuskit.data.sources import option_of

    for name, root in (("raw", raw_dir), ("dpdd", dpdd), ("realblur", realblur), ("ded", ded), ("realdof", realdof),
                       ("vabd", vabd), ("ebb", ebb), ("sdd", sdd), ("pairs", pairs), ("cuhk-blur", cuhk_blur),
                       ("render", render)):
        if root is not None and not root.is_dir():  # named before torch is imported, as check_sources would
            what = "a file, not a folder" if root.exists() else "no such directory"
            Console(stderr=True).print(f"[red]error:[/red] {option_of(name)} {root}: {what}", soft_wrap=True)
            raise typer.Exit(1)
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.inspect import manifest_table
    from defocuskit.data.sample import IngestError, IngestOptions

    given = {"raw": raw_dir, "dpdd": dpdd, "realblur": realblur, "ded": ded, "realdof": realdof,
             "vabd": vabd, "ebb": ebb, "sdd": sdd, "pairs": pairs,
             "synthetic": Path(synthetic) if synthetic else None, "cuhk-blur": cuhk_blur, "render": render}
    sources = {k: v for k, v in given.items() if v is not None}
    try:
        i, n = (int(x) for x in part.split("/"))
    except ValueError:
        raise typer.BadParameter(f"--part {part}: give I/N, e.g. 1/4") from None
    f_numbers = numbers(synthetic_f_numbers, "--synthetic-f-numbers")
    rendered = numbers(render_f_numbers, "--render-f-numbers")
    if not 0.0 <= cuhk_test_fraction < 1.0:
        raise typer.BadParameter(f"--cuhk-test-fraction must be in [0, 1), not {cuhk_test_fraction}")
    if not 0.0 <= refine_warp <= 0.5:
        raise typer.BadParameter(f"--refine-warp is a fraction of the long side in [0, 0.5], not {refine_warp}")
    if not 0.0 <= local_gain <= 0.5:
        raise typer.BadParameter(f"--local-gain is a fraction of the long side in [0, 0.5], not {local_gain}")
    opts = IngestOptions(
        out=str(out), workers=workers, shard_size=shard_size, max_side=max_side, patch=patch, stride=stride,
        min_sharpness=min_sharpness, bit_depth=value(bit_depth), split_by=value(split_by), test_fraction=test_fraction,
        scene_gap_s=scene_gap, f_number_csv=str(f_number_csv) if f_number_csv else None,
        f_number_pattern=f_number_pattern, register=value(register), min_align_score=min_align_score, local_gain=local_gain,
        refine_warp=refine_warp, bracket_fit=value(bracket_fit),
        part=(i - 1, n),
        strict=strict, overwrite=overwrite, seed=seed, dual_pixel=dual_pixel, synthetic_f_numbers=f_numbers, synthetic_size=synthetic_size,
        synthetic_misalign_px=synthetic_misalign, cuhk_white_is=value(cuhk_white_is), cuhk_test_fraction=cuhk_test_fraction,
        render_depth_kind=value(render_depth), render_depth_colormap=render_colormap, render_f_numbers=rendered,
        render_ref_f_number=render_ref_f_number, render_coc_scale=render_coc_scale,
        render_focal_length_mm=render_focal_length, render_sensor_width_mm=render_sensor_width,
        render_metric_scale=render_metric_scale,
        render_focus=render_focus, render_noise=render_noise, render_noise_photons=render_noise_photons, render_jpeg_quality=render_jpeg,
        render_veil=render_veil, render_veil_spread=render_veil_spread,
    )
    console = Console()
    from defocuskit.data.sources.layout import read_inside

    for name, root in sources.items():  # a parent folder given: which dataset folder inside it is read
        if name != "synthetic" and (line := read_inside(name, root)) is not None:
            console.print(line, soft_wrap=True)
    try:
        manifest = run_ingest(sources, opts)
    except IngestError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted: completed shards are kept; run the same command again to finish")
        raise typer.Exit(130) from None
    run = manifest["run"]
    console.print(manifest_table(manifest))
    console.print(f"{run['shards_written']} shards written, {run['shards_skipped']} already done, "
                  f"{run['samples_written']} samples in {run['seconds']:.1f} s; rejects: {run['rejects_new']} new, "
                  f"{manifest['rejects']} total (see {out / 'rejects.jsonl'})"
                  + ("" if manifest["complete"] else "; other parts still missing"), soft_wrap=True)
    if run.get("foreign_kept"):
        console.print(f"kept, not written by defocuskit (left as they are): {', '.join(run['foreign_kept'])}",
                      soft_wrap=True)



def numbers(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers of `option`; typer.BadParameter naming the option and the value otherwise."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{option} {text}: give comma-separated numbers, e.g. 1.4,2,2.8") from None
