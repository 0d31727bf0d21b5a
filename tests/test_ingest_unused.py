"""`ingest` refuses, with one line and before any work, an option given that no source given would use: the --render-*
options without --render, --f-number-csv / --f-number-pattern without --raw-dir or --pairs, --refine-warp /
--local-gain with --register none or without a registered source (each was ignored, exit 0, and the manifest
recorded it as applied)."""

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
])
def test_an_option_no_source_uses_is_refused_naming_it(source, given, needle, tmp_path):
    source = [str(pairs_folder(tmp_path / "pairs")) if a == "PAIRS" else a for a in source]
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
])
def test_the_same_options_with_their_source_pass(sources, changes):
    check_unused(sources, dataclasses.replace(IngestOptions(), **changes))


def test_every_render_option_is_named_as_the_command_line_spells_it():
    import typer.main

    command = typer.main.get_command(app).get_command(None, "ingest")
    spelled = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    fields = [f.name for f in dataclasses.fields(IngestOptions) if f.name.startswith("render_")]
    missing = [option_name(f) for f in fields if f != "render_highlights" and option_name(f) not in spelled]
    assert not missing and len(fields) > 10


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
