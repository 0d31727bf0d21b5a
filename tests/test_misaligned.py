"""Misaligned training pairs: the synthetic set with injected misalignment, and scoring against a moved GT."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import iter_samples
from defocuskit.data.sample import IngestOptions
from defocuskit.io.images import to_float


def _ingest(out: Path, misalign: float) -> dict[str, dict]:
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=64,
                                                             synthetic_f_numbers=(2.0,), synthetic_misalign_px=misalign),
               progress=False)
    return {s["key"]: s for s in iter_samples(out)}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mis")


@pytest.fixture(scope="module")
def both(root) -> tuple[dict, dict]:
    return _ingest(root / "aligned", 0.0), _ingest(root / "moved", 4.0)


def test_injected_misalignment_moves_only_the_reference(both):
    aligned, moved = both
    pairs = [k for k, s in moved.items() if s["blur"] is not None]
    assert pairs and set(aligned) == set(moved)
    shifts = []
    for key in pairs:
        a, m = aligned[key], moved[key]
        assert np.array_equal(a["blur"], m["blur"]) and np.array_equal(a["coc"], m["coc"])  # the shot stays put
        matrix = np.array(m["meta"]["align"]["matrix"])
        assert m["meta"]["align"]["method"] == "injected" and a["meta"]["align"]["method"] == "none"
        h, w = m["sharp"].shape[:2]
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        shift = matrix[:2, 2] + (np.diag(matrix)[:2] - 1) * centre  # M x = s (x - c) + c + shift
        assert np.abs(shift).max() <= 4.0 + 1e-9
        assert abs(matrix[0, 0] - 1) <= 0.01 and matrix[0, 0] == matrix[1, 1]
        # sharp.png(x) = reference(M x): warping the aligned reference by M reproduces the moved one
        ref = to_float(a["sharp"])
        redo = cv2.warpAffine(ref, matrix[:2].astype(np.float32), ref.shape[1::-1],
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        assert np.abs(redo - to_float(m["sharp"]))[4:-4, 4:-4].max() < 2 / 255
        shifts.append(matrix[:2, 2])
    assert np.std(np.array(shifts), axis=0).min() > 0.5  # a different map per sample
    sharp_only = [k for k, s in moved.items() if s["blur"] is None]
    assert all(np.array_equal(aligned[k]["sharp"], moved[k]["sharp"]) for k in sharp_only)


def test_flow_alignment_brings_the_reference_onto_the_output():
    from defocuskit.eval.scoring import flow_aligned_reference

    rng = np.random.default_rng(0)
    ref = cv2.GaussianBlur(rng.random((64, 80, 3)).astype(np.float32), (0, 0), 1.5).astype(np.float64)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    out = np.roll(ref, (-2, 3), axis=(0, 1))  # the output's content sits 3 px right and 2 px up of the reference's
    moved = flow_aligned_reference(out, ref)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(moved - out)[inner].mean() < 0.25 * np.abs(ref - out)[inner].mean()


def test_eval_flow_protocol_is_named_and_scores_against_the_moved_reference(both, root, tmp_path):
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    shards = root / "moved"
    plain = evaluate(shards, [], ["input"], EvalConfig(split="train", limit=6, report_dir=tmp_path / "plain",
                                                       progress=False))
    flow = evaluate(shards, [], ["input"], EvalConfig(split="train", limit=6, align="flow",
                                                      report_dir=tmp_path / "flow", progress=False))
    assert "JDRL" in flow["protocol"]["alignment"] and plain["protocol"]["alignment"].startswith("none")
    psnr = {name: np.mean([r["psnr"] for r in rep["images"]]) for name, rep in (("plain", plain), ("flow", flow))}
    assert psnr["flow"] > psnr["plain"] + 0.5, psnr
