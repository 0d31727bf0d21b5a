"""tools/blur_by_region.py and tools/disc_composition.py: the per-region disc fit finds the disc each region was
blurred by; the disc that stops at a reference. (Their refusal of other shards: tests/test_tools_inputs.py.)"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool():
    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module("blur_by_region")
    finally:
        sys.path.remove(str(TOOLS))


def test_best_discs_finds_each_regions_blur() -> None:
    """Left half blurred by a 3 px disc, right half by a 10 px one (linear light): the fit reads each half's."""
    from defocuskit.imaging.lens_blur import linear_to_srgb, srgb_to_linear
    from defocuskit.imaging.optics import disc_psf

    tool = _tool()
    rng = np.random.default_rng(0)
    reference = cv2.GaussianBlur(rng.random((160, 240, 3)).astype(np.float32), (0, 0), 0.8)
    linear = srgb_to_linear(torch.from_numpy(reference)).numpy()
    shot = np.empty_like(reference)
    for cols, d in ((slice(0, 120), 3.0), (slice(120, 240), 10.0)):
        blurred = cv2.filter2D(linear, -1, disc_psf(d), borderType=cv2.BORDER_REFLECT)
        shot[:, cols] = linear_to_srgb(torch.from_numpy(blurred)).numpy()[:, cols]
    left = np.zeros(shot.shape[:2], bool)
    left[:, :100] = True  # clear of the seam: the fit of each region sees only its own disc
    right = np.zeros_like(left)
    right[:, 140:] = True
    assert tool.best_discs(reference, shot, [left, right]) == [3.0, 10.0]


def test_prox_needs_a_map(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(TOOLS / "blur_by_region.py"), "--shards", f"0001={tmp_path}", "--prox"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "argument --prox: needs --coc-model" in proc.stderr


def test_disc_composition_stops_at_the_reference() -> None:
    """A sharp reference (no disc) needs the shot's whole disc; an f/16 reference's own disc leaves about 0.9 of an
    f/8 shot's to add, more than the quadrature's 0.866 (discs do not add in quadrature), and never more than D."""
    sys.path.insert(0, str(TOOLS))
    try:
        tool = importlib.import_module("disc_composition")
    finally:
        sys.path.remove(str(TOOLS))
    texture = tool.pink_texture(256, 0)
    assert abs(tool.best_added_disc(texture, 8.0, 0.0) - 8.0) < 1e-6
    assert 0.88 * 8.0 <= tool.best_added_disc(texture, 8.0, 4.0) <= 0.95 * 8.0
