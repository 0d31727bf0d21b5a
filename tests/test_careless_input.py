"""What a careless user types: an empty `--out "$OUT"` (OUT unset), an image file's name as deblur's --out, deblur's
--out the photos' own folder run again, a pipe given as a photo, import-weights' --out under a file or a folder given
as its checkpoint. Each is one line naming what is wrong, before any work, and nothing of the user's is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from defocuskit.io.images import write_image
from tests.test_infer import _export_nafnet

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "defocuskit", "--threads", "1", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_empty_value_or_argument_is_refused_not_taken_for_the_working_folder(tmp_path: Path) -> None:
    """`--out ""` (what `--out "$OUT"` gives with OUT unset) was the working folder: deblur wrote its image and
    deblur.json there, eval its report, exit 0; an empty INPUTS argument deblurred every image of the working folder.
    Now each is refused in one line naming the option or argument, before any work."""
    model = _export_nafnet(tmp_path / "model.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    write_image(work / "a.jpg", np.full((24, 32, 3), 90, np.uint8))  # its output a.png went beside it
    before = sorted(p.name for p in work.iterdir())
    for args, said in ((["deblur", "a.jpg", "--checkpoint", str(model), "--out", ""], "--out ''"),
                       (["deblur", "a.jpg", "--checkpoint", str(model), "--out="], "--out ''"),
                       (["deblur", "", "--checkpoint", str(model), "--out", str(tmp_path / "o")], "INPUTS ''"),
                       (["recipes", "cp", "nafnet-tiny", ""], "DEST ''")):
        run = _cli(*args, cwd=work)
        assert run.returncode == 2 and run.stderr.strip() == \
            f"error: {said}: an empty {'value' if said.startswith('--') else 'argument'} (an unset shell " \
            "variable?); nothing was done: give one", (args, run.stderr)
        assert sorted(p.name for p in work.iterdir()) == before and not (tmp_path / "o").exists(), args
