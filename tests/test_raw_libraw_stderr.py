"""What LibRaw prints to the process's stderr (fd 2) about a damaged RAW file ("<path>: Unexpected end of file"),
which rawpy cannot turn off: kept off the console and folded into the project's one reject line
(io.raw.libraw_stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from dng_files import camera_mosaic

from defocuskit.io.formats import ImageError
from defocuskit.io.images import check_image
from defocuskit.io.raw import decode_raw, read_exif

ROOT = Path(__file__).parents[1]


def _scene(seed: int = 0) -> np.ndarray:
    return 0.05 + 0.3 * np.random.default_rng(seed).random((48, 64, 3))


def _bracket(photos: Path, dng_writer) -> None:
    """Three good DNGs of one scene (f/16, f/5.6, f/2.8) and IMG_0005.dng: the f/5.6 one cut short by a copy."""
    for i, (stem, f_number) in enumerate((("IMG_0001", 16.0), ("IMG_0002", 5.6), ("IMG_0003", 2.8))):
        dng_writer(photos / f"{stem}.dng", camera_mosaic(_scene(), white=4095), f_number=f_number,
                   when=f"2024:05:01 10:00:0{i}")
    whole = (photos / "IMG_0002.dng").read_bytes()
    (photos / "IMG_0005.dng").write_bytes(whole[:len(whole) * 6 // 10])


def _ingest(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DEFOCUSKIT_THREADS="1")
    argv = [sys.executable, "-m", "defocuskit", "ingest", "--raw-dir", str(root), "--out", str(out), "--workers",
            "0", *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_a_truncated_dng_through_ingest_is_one_line_with_librarys_reason(tmp_path, dng_writer):
    """Before, LibRaw wrote "<path>: Unexpected end of file" to stderr beside the project's reject (a second line,
    and the only one on the console without --strict), and the reject said only "LibRawIOError: Input/output
    error". Now: no stray line; the reject (rejects.jsonl; --strict's one error line) carries LibRaw's words."""
    photos = tmp_path / "photos" / "bench"
    _bracket(photos, dng_writer)
    cut = photos / "IMG_0005.dng"
    done = _ingest(tmp_path / "photos", tmp_path / "shards")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # the good bracket ingested without LibRaw's noise, the bad file only recorded
    assert "3 samples" in " ".join(done.stdout.split()) and "rejects: 1 new" in " ".join(done.stdout.split())
    rejects = [json.loads(line) for line in (tmp_path / "shards" / "rejects.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in rejects] == ["IMG_0005.dng"]
    assert "(Unexpected end of file; LibRawIOError" in rejects[0]["reason"] and "\n" not in rejects[0]["reason"]

    strict = _ingest(tmp_path / "photos", tmp_path / "strict", "--strict")
    assert strict.returncode == 1
    lines = strict.stderr.strip().splitlines()
    assert len(lines) == 1, strict.stderr
    assert lines[0].startswith(f"error: {cut}: ") and "truncated" in lines[0] and "Unexpected end of file" in lines[0]


def test_each_rawpy_entry_folds_librarys_words_in_and_prints_nothing(tmp_path, dng_writer, capfd):
    photos = tmp_path / "photos"
    _bracket(photos, dng_writer)
    cut = photos / "IMG_0005.dng"
    for read in (decode_raw, read_exif):
        with pytest.raises(ImageError, match=r"\(Unexpected end of file; LibRawIOError"):
            read(cut)
    assert decode_raw(photos / "IMG_0001.dng").shape == (48, 64, 3)
    check_image(photos / "IMG_0001.dng")
    assert capfd.readouterr().err == ""


def test_libraw_stderr_keeps_the_files_lines_and_passes_the_rest_on(capfd):
    from defocuskit.io.raw import libraw_reason, libraw_stderr

    before = os.fstat(2)
    with pytest.raises(RuntimeError), libraw_stderr("a/b.dng") as said:
        os.write(2, b"a/b.dng: Corrupt data near 0x1f\nnot LibRaw's\na/b.dng: Corrupt data near 0x1f\n")
        raise RuntimeError("decode failed")
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # fd 2 back, though the block raised
    assert said == ["Corrupt data near 0x1f", "Corrupt data near 0x1f"]
    assert capfd.readouterr().err == "not LibRaw's\n"
    reason = libraw_reason(OSError(b"Input/output error"), said + ["x" * 400])
    assert reason.startswith("Corrupt data near 0x1f; xxx") and reason.endswith("...; OSError: Input/output error")
    assert len(reason) < 200


def test_threads_decoding_at_once_each_get_their_own_files_words(tmp_path, dng_writer, capfd):
    """fd 2 is the process's: concurrent decodes take turns capturing it, so none loses its reason to another's
    capture, nothing leaks to the console and stderr ends where it began."""
    photos = tmp_path / "photos"
    _bracket(photos, dng_writer)
    cuts = []
    for i in range(4):
        cuts.append(photos / f"cut{i}.dng")
        cuts[-1].write_bytes((photos / "IMG_0005.dng").read_bytes())
    before = os.fstat(2)
    errors: dict[str, str] = {}

    def decode(path: Path) -> None:
        try:
            decode_raw(path)
        except ImageError as exc:
            errors[path.name] = str(exc)

    threads = [threading.Thread(target=decode, args=(p,)) for p in cuts + [photos / "IMG_0001.dng"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(errors) == [p.name for p in cuts]
    assert all(text.startswith(f"{photos / name}: ") and "(Unexpected end of file;" in text
               for name, text in errors.items())
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert capfd.readouterr().err == ""
