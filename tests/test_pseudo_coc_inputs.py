"""`defocuskit pseudo-coc` with shards that hold no pair to write a CoC map beside: refused before any work."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_jdrl import jdrl_model_file


@pytest.fixture(scope="module")
def blur_only_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CUHK blur-detection ingest: blur.png and blurmask.png, no sharp.png."""
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    root = tmp_path_factory.mktemp("cuhk")
    (root / "cuhk" / "image").mkdir(parents=True)
    (root / "cuhk" / "gt").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(root / "cuhk" / "image" / f"out_of_focus000{i}.jpg"),
                    (rng.random((40, 48, 3)) * 255).astype(np.uint8))
        cv2.imwrite(str(root / "cuhk" / "gt" / f"out_of_focus000{i}.png"),
                    ((rng.random((40, 48)) > 0.5) * 255).astype(np.uint8))
    out = root / "shards"
    run_ingest({"cuhk-blur": root / "cuhk"}, IngestOptions(out=str(out), workers=0, cuhk_white_is="blurred"),
               progress=False)
    return out


def test_shards_without_pairs_are_refused_before_any_work(blur_only_shards: Path, tmp_path: Path) -> None:
    from defocuskit.cli.pseudo_coc import write_pseudo_coc

    model = jdrl_model_file(tmp_path / "jdrl.safetensors")
    out = tmp_path / "coc"
    with pytest.raises(ValueError, match=r"^--shards .*: no paired sample \(blur.png with sharp.png\)"):
        write_pseudo_coc(model, blur_only_shards, out)
    assert not out.exists()  # it exited 0 with "0 samples", leaving an empty dataset there
