"""`ingest` refuses, with one line and before any work, an option given that no source given would use: a source's own
options without it (--render-*, --synthetic-*, --cuhk-*, --scene-gap without --raw-dir, --f-number-csv /
--f-number-pattern without --raw-dir or --pairs, --bracket-fit without --vabd or --raw-dir), the registration's
(--min-align-score, --refine-warp, --local-gain, --bracket-fit) with --register none or without a registered source,
metric depth's camera with relative or inverse depth and --render-coc-scale with metric (each was ignored, exit 0,
and the manifest recorded it as applied)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data.ingest_checks import check_unused, option_name
from defocuskit.data.sample import IngestError, IngestOptions

SYNTHETIC = ["--synthetic", "builtin", "--synthetic-size", "32", "--synthetic-f-numbers", "2"]


def pairs_folder(root: Path) -> Path:
    """An empty `--pairs` layout (blur/, sharp/): enough for the checks before any work."""
    for sub in ("blur", "sharp"):
        (root / sub).mkdir(parents=True)
    return root


def photos_folder(root: Path, subs: tuple[str, ...] = ("image", "depth")) -> Path:
    """An empty `--render` layout (image/, depth/), or other `subs`: enough for the checks before any work."""
    for sub in subs:
        (root / sub).mkdir(parents=True)
    return root


RENDER = ["--render", "PHOTOS"]


@pytest.mark.parametrize("source, given, needle", [
    (SYNTHETIC, ["--render-f-numbers", "2"], "--render-f-numbers needs --render DIR"),
    (SYNTHETIC, ["--render-depth", "metric", "--no-render-noise", "--render-focal-length", "35"],
     "--render-depth, --render-focal-length, --no-render-noise need --render DIR"),
    (SYNTHETIC, ["--render-coc-scale", "12", "--render-jpeg", "90", "--render-colormap", "Spectral"],
     "--render-colormap, --render-coc-scale, --render-jpeg need --render DIR"),
    (SYNTHETIC, ["--f-number-csv", "f.csv"], "--f-number-csv needs --raw-dir or --pairs"),
    (SYNTHETIC, ["--f-number-pattern", "f(\\d+)"], "--f-number-pattern needs --raw-dir or --pairs"),
    (["--pairs", "PAIRS", "--register", "none"], ["--refine-warp", "0.047"],
     "--refine-warp needs a registration: --register none keeps the pairs as shot"),
    (["--pairs", "PAIRS", "--register", "none"], ["--local-gain", "0.06", "--refine-warp", "0.05"],
     "--refine-warp, --local-gain need a registration"),
    (SYNTHETIC, ["--local-gain", "0.06"], "--local-gain needs a source whose pairs are registered"),
    (RENDER, ["--synthetic-size", "64"], "--synthetic-size needs --synthetic builtin"),
    (RENDER, ["--synthetic-f-numbers", "2,4", "--synthetic-misalign", "2"],
     "--synthetic-f-numbers, --synthetic-misalign need --synthetic builtin"),
    (SYNTHETIC, ["--cuhk-white-is", "sharp", "--cuhk-test-fraction", "0.5"],
     "--cuhk-white-is, --cuhk-test-fraction need --cuhk-blur DIR"),
    (SYNTHETIC, ["--scene-gap", "30"], "--scene-gap needs --raw-dir"),
    (["--pairs", "PAIRS"], ["--scene-gap", "30"], "--scene-gap needs --raw-dir"),
    (SYNTHETIC, ["--min-align-score", "0.5"], "--min-align-score needs a source whose pairs are registered"),
    (["--pairs", "PAIRS", "--register", "none"], ["--min-align-score", "0.5"],
     "--min-align-score needs a registration: --register none"),
    (SYNTHETIC, ["--bracket-fit", "subject"], "--bracket-fit needs --vabd or --raw-dir"),
    (["--pairs", "PAIRS"], ["--bracket-fit", "subject"], "--bracket-fit needs --vabd or --raw-dir"),
    (["--vabd", "VABD", "--register", "none"], ["--bracket-fit", "subject"],
     "--bracket-fit needs a registration: --register none"),
    (RENDER, ["--render-depth", "inverse", "--render-metric-scale", "0.001"],
     "--render-metric-scale needs --render-depth metric (with inverse depth"),
    (RENDER, ["--render-focal-length", "35", "--render-sensor-width", "23.5"],
     "--render-focal-length, --render-sensor-width need --render-depth metric (with relative depth"),
    (RENDER, ["--render-depth", "metric", "--render-coc-scale", "3"],
     "--render-coc-scale needs --render-depth relative or inverse"),
    (SYNTHETIC, ["--scene-gap", "30", "--cuhk-white-is", "blurred", "--bracket-fit", "subject"],
     "--cuhk-white-is needs --cuhk-blur DIR (the source whose blur maps they read); --scene-gap needs --raw-dir"),
])
def test_an_option_no_source_uses_is_refused_naming_it(source, given, needle, tmp_path):
    folders = {"PAIRS": lambda: pairs_folder(tmp_path / "pairs"), "PHOTOS": lambda: photos_folder(tmp_path / "photos"),
               "VABD": lambda: photos_folder(tmp_path / "vabd" / "train", ("input", "8")).parent}
    source = [str(folders[a]()) if a in folders else a for a in source]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ingest", *source, "--workers", "0", "--out", str(out), *given],
                                terminal_width=400)
    assert result.exit_code == 1 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "given but not used" in result.output
    assert not out.exists()  # before any work


def test_the_refusal_comes_after_a_bad_value():
    """An impossible value is named as such even where the option would not be used."""
    opts = IngestOptions(render_f_numbers=(0.2,))
    from defocuskit.data.ingest import run_ingest

    with pytest.raises(IngestError, match="--render-f-numbers 0.2: not an f-number a lens has"):
        run_ingest({"synthetic": Path("builtin")}, opts, progress=False)


@pytest.mark.parametrize("sources, changes", [
    ({"render": "p"}, dict(render_f_numbers=(2.0,), render_depth_kind="metric", render_noise=False,
                           render_jpeg_quality=90)),
    ({"raw": "r"}, dict(f_number_csv="f.csv", f_number_pattern="f(\\d+)")),
    ({"pairs": "p", "synthetic": "builtin"}, dict(f_number_pattern="f(\\d+)", refine_warp=0.047, local_gain=0.06)),
    ({"ebb": "e"}, dict(refine_warp=0.047, local_gain=0.06, register="homography")),
    ({"vabd": "v"}, dict(refine_warp=0.047)),
    ({"synthetic": "builtin", "ebb": "e"}, dict(register="none")),  # nothing given that needs registration
    ({"synthetic": "builtin"}, dict(local_gain=0.0, render_f_numbers=(1.8, 2.8, 4.0, 5.6, 8.0))),  # the defaults
    ({"synthetic": "builtin"}, dict(synthetic_size=64, synthetic_f_numbers=(2.0,), synthetic_misalign_px=2.0,
                                    synthetic_ref_f_number=16.0)),
    ({"cuhk-blur": "c"}, dict(cuhk_white_is="sharp", cuhk_test_fraction=0.5)),
    ({"raw": "r"}, dict(scene_gap_s=30.0, bracket_fit="subject", min_align_score=0.5)),
    ({"vabd": "v"}, dict(bracket_fit="subject", register="homography")),
    ({"ebb": "e", "vabd": "v"}, dict(bracket_fit="subject", min_align_score=0.6)),
    ({"pairs": "p"}, dict(min_align_score=0.6)),
    ({"render": "p"}, dict(render_depth_kind="metric", render_metric_scale=20.0, render_focal_length_mm=65.0,
                           render_sensor_width_mm=23.5)),
    ({"render": "p"}, dict(render_depth_kind="inverse", render_coc_scale=12.0)),
    ({"render": "p"}, dict(render_coc_scale=12.0)),
])
def test_the_same_options_with_their_source_pass(sources, changes):
    check_unused(sources, dataclasses.replace(IngestOptions(), **changes))


def test_every_source_option_is_named_as_the_command_line_spells_it():
    import typer.main

    command = typer.main.get_command(app).get_command(None, "ingest")
    spelled = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    prefixes = ("render_", "synthetic_", "cuhk_")
    fields = [f.name for f in dataclasses.fields(IngestOptions) if f.name.startswith(prefixes)]
    fields += ["scene_gap_s", "bracket_fit", "min_align_score", "refine_warp", "local_gain"]
    missing = [option_name(f) for f in fields if option_name(f) not in spelled and "no option" not in option_name(f)]
    assert not missing and len(fields) > 20


def test_render_options_with_render_still_ingest(tmp_path):
    photos = tmp_path / "photos"
    for sub in ("image", "depth"):
        (photos / sub).mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    assert cv2.imwrite(str(photos / "image" / "a.png"), rgb)
    depth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    assert cv2.imwrite(str(photos / "depth" / "a.png"), depth)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ingest", "--render", str(photos), "--render-f-numbers", "2,4",
                                      "--no-render-noise", "--render-coc-scale", "3", "--split-by", "train",
                                      "--workers", "0", "--out", str(out)], terminal_width=400)
    assert result.exit_code == 0 and (out / "manifest.json").exists(), result.output
