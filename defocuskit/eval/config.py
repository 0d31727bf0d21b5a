"""What an evaluation is asked to do (EvalConfig), and the error it raises when it cannot: below every other eval
module."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from defocuskit.inference.tiling import TilingOptions


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message names the file, split or key."""


@dataclass(frozen=True)
class EvalConfig:
    """The options of `evaluate` (the `defocuskit eval` command's), with their command-line defaults."""

    split: str = "test"
    by_aperture: bool = True  # rows per f-number (False: one 'all' row per method)
    stops: bool = False  # group f-numbers into full stops
    align: bool | str = False  # False | True or "ecc" (one warp per sample onto the reference) | "flow"
    limit: int | None = None  # the first N paired samples in shard order
    steps: int | None = None  # sampler steps of every model that has them
    samplers: list[str] = field(default_factory=list)  # [LABEL:]NAME: the sampler of each model
    sets: list[str] = field(default_factory=list)  # [LABEL:]sampler.KEY=VALUE
    coc: str | None = None  # where CoC maps come from (inference.coc_source.COC_SOURCES)
    coc_model: Path | None = None  # the defocus-map model of --coc map
    coc_bound: float | None = None  # K of an estimated map's f-number bound (0: none); None: the map model's own
    camera: dict[str, float] = field(default_factory=dict)  # --coc fnumber's camera given (api.coc.camera checked it)
    focus_gates: list[str] = field(default_factory=list)  # [LABEL:]PX: a model's change weighed by the CoC map
    gate_smooth: float | None = None  # the change's low-pass (Gaussian sigma, px) every focus gate keeps (0: none);
    # None: imaging.focus_gate.GATE_SMOOTH_PX (given where no method is gated: refused)
    ensembles: list[str] = field(default_factory=list)  # [LABEL:]N: a model's geometric self-ensemble (4 or 8)
    work_sides: list[str] = field(default_factory=list)  # [LABEL:]PX|trained: a model deblurs at that long side
    save_images: Path | None = None  # write every output here
    report_dir: Path = Path("report")
    tiling: TilingOptions = TilingOptions()
    device: str = "cpu"
    seed: int = 0
    ssim_variant: str = "uniform7"
    lpips_weights: list[Path] | None = None
    by_source: bool = False  # rows per (source, f-number) as well
    figure: bool = False  # figure.png: crops of the first pair of each f-number group
    progress: bool = True
    detail_band: float | None = None  # px: score the detail only (eval.metrics.detail_band)
    protocol: str = "default"  # eval.protocols.PROTOCOLS: "default" or "dpdd8" (the published DPDD tables')


def check_options_used(c: EvalConfig, checkpoints: int, gated: bool) -> None:
    """EvalError naming an option given that nothing in this evaluation uses (it was dropped without a word): --stops
    with --no-by-aperture, --tile / --overlap / --max-tile-pixels without a --checkpoint (`checkpoints`: how many),
    --gate-smooth where no method is gated (`gated`: one is)."""
    if c.stops and not c.by_aperture:
        raise EvalError("--stops groups the f-number rows, and --no-by-aperture makes none; leave one out")
    tiling = {"--tile": c.tiling.tile, "--overlap": c.tiling.overlap, "--max-tile-pixels": c.tiling.max_tile_pixels}
    given = [f"{name} {value}" for name, value in tiling.items() if value is not None]
    if given and not checkpoints:
        raise EvalError(f"{given[0]}: how a model runs, and no --checkpoint is given (the baselines take whole "
                        "images); leave it out")
    if c.gate_smooth is not None and not gated:
        raise EvalError(f"--gate-smooth {c.gate_smooth:g}: the change's low-pass a focus gate keeps, but no method "
                        "here is gated (none by --focus-gate [LABEL:]PX or by its model's recipe, or --focus-gate "
                        "0); leave it out")
