"""Shared fixtures: DNG files with real EXIF (pidng, dng_files.py) and downsized copies of the real photo fixtures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N workers share the cores, one thread each (and their
    os.environ["OMP_NUM_THREADS"] = "1"   # subprocesses): torch's default threads in every worker oversubscribe
    os.environ["DEFOCUSKIT_THREADS"] = "1"

import cv2  # noqa: E402 (after the thread settings)
import pytest  # noqa: E402
from dng_files import write_dng  # noqa: E402

REAL_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"  # ../shared beside the checkout


@pytest.fixture
def dng_writer() -> Callable[..., Path]:
    """write(path, cfa, f_number=..., exposure=(1, 250), iso=200, focal=50, when="2024:05:01 10:00:00", ...)
    -> Path of a DNG whose EXIF sub-IFD carries FNumber, ExposureTime, ISO, FocalLength, DateTimeOriginal
    (`dng_files.write_dng`; skips where pidng is not installed)."""
    pytest.importorskip("pidng.core")
    return write_dng


@pytest.fixture(scope="session")
def real_fixture_root() -> Path:
    """../shared/fixtures/real beside the checkout (skips where it is absent)."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip("real photo fixtures not present")
    return REAL_FIXTURES


def vabd_subset(fixtures: Path, dst: Path, stem: str, folders: tuple[str, ...]) -> Path:
    """A VABD root at `dst` (train/{input,8,2_8,1_8}/) holding only `stem`'s images of `folders`, linked from the
    real fixtures: one scene at chosen apertures, for an ingest end to end."""
    for sub in ("input", "8", "2_8", "1_8"):
        (dst / "train" / sub).mkdir(parents=True)
    for sub in folders:
        (dst / "train" / sub / f"{stem}.JPG").symlink_to(fixtures / "VABD" / "train" / sub / f"{stem}.JPG")
    return dst


def ingest_vabd_pair(root: Path, out: Path, max_side: int, *extra: str) -> tuple[dict, dict]:
    """`defocuskit ingest --vabd root --out out` (one process, `extra` options) as a user runs it; returns the
    manifest and the one pair it wrote (decoded). Asserts the command succeeded."""
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.reader import iter_samples

    res = CliRunner().invoke(app, ["ingest", "--vabd", str(root), "--out", str(out), "--max-side", str(max_side),
                                   "--workers", "0", *extra])
    assert res.exit_code == 0, res.output
    (pair,) = [s for s in iter_samples(str(out)) if s.get("blur") is not None]
    return json.loads((out / "manifest.json").read_text()), pair


def copy_resized(src_root: Path, dst_root: Path, width: int = 384) -> Path:
    """Copy an image tree, resizing every image to `width` px wide (INTER_AREA), names unchanged."""
    for src in sorted(src_root.rglob("*")):
        if not src.is_file():
            continue
        dst = dst_root / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            shutil.copy(src, dst)
            continue
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        h, w = img.shape[:2]
        small = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if dst.suffix.lower() in (".jpg", ".jpeg") else []
        cv2.imwrite(str(dst), small, params)
    return dst_root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread per test module: the tiny tensors here run faster without thread hand-offs,
    and much faster when the cores are shared (measured 10x on this 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
