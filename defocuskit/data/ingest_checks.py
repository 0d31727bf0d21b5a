"""The checks of an ingest's options before any work: every number one line naming the option and its range
(a NaN, a 1x1 "pair", an impossible f-number or a disc of petabytes was caught only as every input's reject line,
or not at all), the worker processes it may start, and the options given that no source given would use."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Mapping

from defocuskit.data.metadata import F_NUMBER_RANGE
from defocuskit.data.pairs import AS_SHOT
from defocuskit.data.sample import RENDER_FOCUS_BY_MAP, IngestError, IngestOptions
from defocuskit.imaging.depth import DepthError, colormap_lut
from defocuskit.io.threads import available_cores

DEFAULT_MAX_WORKERS = 8  # without --workers: one process per core, at most this many


def max_workers() -> int:
    """The most --workers an ingest starts: 4 per core this process may use, at least DEFAULT_MAX_WORKERS."""
    return max(DEFAULT_MAX_WORKERS, 4 * available_cores())


def check_workers(workers: int | None) -> None:
    """IngestError for a negative --workers, or more than `max_workers()` (one process per input was started)."""
    if workers is not None and workers < 0:
        raise IngestError(f"--workers must be 0 (work in the main process) or a number of processes, got {workers}")
    if workers is not None and workers > (most := max_workers()):
        raise IngestError(f"--workers {workers}: at most {most} here (4 per core this process may use, at least "
                          f"{DEFAULT_MAX_WORKERS}): more processes share the same cores, each holding its own images")


MIN_SIDE_PX = 8  # --max-side, --patch, --stride below this: refused (a 1x1 "pair" was written before)


def check_numbers(opts: IngestOptions) -> None:
    """IngestError naming the option and the value: an f-number to render outside the lenses that exist
    (F_NUMBER_RANGE), given twice (that was a reject line per scene) or, for --render, not wider than its reference;
    a --test-fraction outside [0, 1]; a --max-side, --patch or --stride under MIN_SIDE_PX."""
    low, high = F_NUMBER_RANGE
    given = [("--synthetic-f-numbers", n) for n in opts.synthetic_f_numbers]
    given += [("--render-f-numbers", n) for n in opts.render_f_numbers]
    for option, n in [*given, ("--render-ref-f-number", opts.render_ref_f_number)]:
        if not low <= n <= high:  # NaN fails too
            raise IngestError(f"{option} {n:g}: not an f-number a lens has (f/{low:g} to f/{high:g})")
    for option, values in (("--synthetic-f-numbers", opts.synthetic_f_numbers),
                           ("--render-f-numbers", opts.render_f_numbers)):
        tags = [f"{n:g}" for n in values]  # as the sample keys spell them: f/2 and f/2.0 are one key
        if twice := next((t for i, t in enumerate(tags) if t in tags[:i]), None):
            raise IngestError(f"{option} {','.join(tags)}: f/{twice} given twice (each f-number is one shot of a "
                              "scene: give it once)")
    for n in opts.render_f_numbers:
        if n >= opts.render_ref_f_number:
            raise IngestError(f"--render-f-numbers {n:g}: not wider than the reference's "
                              f"f/{opts.render_ref_f_number:g} (--render-ref-f-number): no defocus to render")
    if not 0.0 <= opts.test_fraction <= 1.0:
        raise IngestError(f"--test-fraction {opts.test_fraction:g}: a share of the scenes, from 0 to 1")
    for option, size in (("--max-side", opts.max_side), ("--patch", opts.patch), ("--stride", opts.stride)):
        if size is not None and size < MIN_SIDE_PX and not (option == "--patch" and size == 0):
            zero = "; 0: no patches" if option == "--patch" else ""
            raise IngestError(f"{option} {size}: at least {MIN_SIDE_PX} pixels (an image or patch that small holds no "
                              f"blur to learn{zero})")
    check_workers(opts.workers)
    _check_ranges(opts)


MAX_SYNTHETIC_SIDE = 4096  # --synthetic-size above it: the built-in photographs (at most 741 px) only upscaled
MAX_RENDER_COC_SCALE = 4096.0  # --render-coc-scale above it: discs of thousands of px, kernels of gigabytes


def _check_ranges(opts: IngestOptions) -> None:
    """IngestError naming the option: a number outside what it means, NaN included (a NaN --min-align-score
    accepted every pair; the sources refused others only as every input's reject line), and a --render-colormap
    matplotlib does not have (ignored without a word where the depth maps are grey)."""
    size = opts.synthetic_size
    if not 16 <= size <= MAX_SYNTHETIC_SIDE:
        raise IngestError(f"--synthetic-size {size}: the scenes' longer side, 16 to {MAX_SYNTHETIC_SIDE} pixels")
    numbers = [  # (option, value, lowest, the lowest allowed, highest allowed, the range in words); finite only
        ("--synthetic-misalign", opts.synthetic_misalign_px, 0.0, True, float(size), f"0 to {size} pixels"),
        ("--min-align-score", opts.min_align_score, 0.0, True, 1.0, "a registration score, from 0 to 1"),
        ("--min-sharpness", opts.min_sharpness, 0.0, True, math.inf, "a mean gradient >= 0"),
        ("--scene-gap", opts.scene_gap_s, 0.0, False, math.inf, "a positive number of seconds"),
        ("--render-coc-scale", opts.render_coc_scale, 0.0, False, MAX_RENDER_COC_SCALE,
         f"CoC pixels at f/1, above 0 and at most {MAX_RENDER_COC_SCALE:g}"),
        ("--render-focal-length", opts.render_focal_length_mm, 0.0, False, math.inf, "a positive number of mm"),
        ("--render-sensor-width", opts.render_sensor_width_mm, 0.0, False, math.inf, "a positive number of mm"),
        ("--render-metric-scale", opts.render_metric_scale, 0.0, False, math.inf, "a positive number of metres"),
    ]
    if opts.render_depth_colormap != "auto":
        try:
            colormap_lut(opts.render_depth_colormap)
        except DepthError as exc:
            raise IngestError(f"--render-colormap {opts.render_depth_colormap}: {exc}") from None
    if opts.render_focus not in RENDER_FOCUS_BY_MAP:
        try:
            focus = float(opts.render_focus)
        except ValueError:
            focus = math.nan
        numbers.append(("--render-focus", focus, -math.inf, False, math.inf, "auto, mask, sample or a depth value"))
    for option, value, low, closed, high, words in numbers:
        if value is not None and not ((low <= value if closed else low < value) and value <= high
                                      and math.isfinite(value)):
            shown = opts.render_focus if option == "--render-focus" else f"{value:g}"
            raise IngestError(f"{option} {shown}: {words}")


F_NUMBER_SOURCES = ("raw", "pairs")  # the sources that read --f-number-csv and --f-number-pattern
REGISTERED_SOURCES = ("raw", "vabd", "ebb", "sdd", "pairs")  # the sources whose pairs --register registers
BRACKET_SOURCES = ("raw", "vabd")  # the sources of aperture brackets, fitted as --bracket-fit says
SOURCE_FIELDS = (  # (the sources that read them; IngestOptions fields, a name or a prefix ending "_"; what they need)
    (("render",), ("render_",), "--render DIR (nothing is rendered without it)"),
    (("synthetic",), ("synthetic_",), "--synthetic builtin (the scenes they shape)"),
    (("cuhk-blur",), ("cuhk_",), "--cuhk-blur DIR (the source whose blur maps they read)"),
    (("raw",), ("scene_gap_s",), "--raw-dir (the source whose folders it splits at capture gaps)"),
    (F_NUMBER_SOURCES, ("f_number_csv", "f_number_pattern"), "--raw-dir or --pairs (the sources that read f-numbers "
                                                            "from files)"),
    (REGISTERED_SOURCES, ("min_align_score", "refine_warp", "local_gain"),
     "a source whose pairs are registered (--raw-dir, --vabd, --ebb, --sdd or --pairs)"),
    (BRACKET_SOURCES, ("bracket_fit",), "--vabd or --raw-dir (the sources of aperture brackets)"),
    (("dpdd",), ("dual_pixel",), "--dpdd DIR (it stores DPDD's dual-pixel views)"),
)
REGISTRATION_FIELDS = ("min_align_score", "refine_warp", "local_gain", "bracket_fit")  # read only when registering
METRIC_FIELDS = ("render_focal_length_mm", "render_sensor_width_mm", "render_metric_scale")  # metric depth's camera
OPTION_NAMES = {  # IngestOptions fields whose option is not "--" + the field's name with dashes
    "render_depth_kind": "--render-depth", "render_depth_colormap": "--render-colormap",
    "render_focal_length_mm": "--render-focal-length", "render_sensor_width_mm": "--render-sensor-width",
    "render_jpeg_quality": "--render-jpeg", "render_noise": "--no-render-noise",
    "render_highlights": "render_highlights (IngestOptions; no option)",
    "synthetic_misalign_px": "--synthetic-misalign", "scene_gap_s": "--scene-gap",
    "synthetic_ref_f_number": "synthetic_ref_f_number (IngestOptions; no option)",
}


def option_name(field: str) -> str:
    """The ingest option that sets IngestOptions `field`, e.g. "--render-depth" for render_depth_kind."""
    return OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def _given(opts: IngestOptions, names: list[str] | tuple[str, ...]) -> list[str]:
    """The options of the fields `names` whose value is not the IngestOptions default (given by the user)."""
    defaults = {f.name: f.default for f in fields(IngestOptions)}
    return [option_name(n) for n in names if getattr(opts, n) != defaults[n]]


def check_unused(sources: Mapping[str, object], opts: IngestOptions) -> None:
    """IngestError, one line naming the options given (not their default) that no source given would use, and
    what they need: a source's own options without it (--render-*, --synthetic-*, --cuhk-*, --scene-gap without
    --raw-dir, --f-number-csv / --f-number-pattern without --raw-dir or --pairs, --bracket-fit without --vabd or
    --raw-dir, --dual-pixel without --dpdd), the registration's (--min-align-score, --refine-warp, --local-gain,
    --bracket-fit) with --register none or without a source whose pairs are registered, and the camera of metric
    depth with relative or inverse depth or --render-coc-scale with metric (each was ignored, exit 0, and the
    manifest recorded it as applied)."""
    names = [f.name for f in fields(IngestOptions)]
    unused = []
    as_shot = _given(opts, REGISTRATION_FIELDS) if opts.register == AS_SHOT else []
    if as_shot:
        unused.append(_needs(as_shot, "a registration: --register none keeps the pairs as shot (no warp, no gain)"))
    for readers, wanted, what in SOURCE_FIELDS:
        chosen = [n for n in names if n in wanted or any(w.endswith("_") and n.startswith(w) for w in wanted)]
        if not set(readers) & set(sources) and (given := [o for o in _given(opts, chosen) if o not in as_shot]):
            unused.append(_needs(given, what))
    if "render" in sources:
        unused += _unused_by_depth(opts)
    if unused:
        raise IngestError("given but not used: " + "; ".join(unused))


def _unused_by_depth(opts: IngestOptions) -> list[str]:
    """--render's camera options that its depth kind does not read: the metric camera with relative or inverse
    depth (their CoC is --render-coc-scale x the relative CoC), --render-coc-scale with metric (the thin lens)."""
    metric = opts.render_depth_kind == "metric"
    if not (given := _given(opts, ["render_coc_scale"] if metric else METRIC_FIELDS)):
        return []
    return [_needs(given, "--render-depth relative or inverse (metric depth's CoC is the thin lens's)" if metric else
                   f"--render-depth metric (with {opts.render_depth_kind} depth the CoC is --render-coc-scale x the "
                   "relative CoC)")]


def _needs(options: list[str], what: str) -> str:
    """E.g. "--render-focus, --render-jpeg need --render DIR (...)"."""
    return f"{', '.join(options)} {'needs' if len(options) == 1 else 'need'} {what}"
