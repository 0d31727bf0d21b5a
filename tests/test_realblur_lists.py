"""RealBlur: list files saved by other editors (UTF-8 with a byte-order mark, UTF-16, CRLF) are read, one that is no
text is a reject line, and the images no list names get reject lines (they were dropped without a word)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from defocuskit.data.sample import IngestOptions, Rejected, Task
from defocuskit.data.sources import realblur
from defocuskit.io.images import write_image

HIDDEN = "hidden file (name starts with '.'): not used"


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def _listed(root: Path) -> tuple[list[Task], dict[str, str]]:
    items = list(realblur.list_tasks(root, IngestOptions()))
    rejects = {Path(r.file).relative_to(root).as_posix(): r.reason for r in items if isinstance(r, Rejected)}
    return [t for t in items if isinstance(t, Task)], rejects


J = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"


def _realblur(root: Path, scenes=("scene001", "scene002")) -> None:
    for scene in scenes:
        for k in (1, 2):
            write_image(root / J / scene / "gt" / f"gt_{k}.png", _img(k))
            write_image(root / J / scene / "blur" / f"blur_{k}.png", _img(10 + k))


def _line(scene: str, k: int) -> str:
    return f"{J}/{scene}/gt/gt_{k}.png {J}/{scene}/blur/blur_{k}.png"


def test_realblur_lists_saved_with_a_bom_utf16_or_crlf_are_read(tmp_path):
    """A list saved by Notepad: UTF-8 with a byte-order mark lost its first pair ("missing"), UTF-16 stopped the
    ingest with a UnicodeDecodeError traceback; a list that is no text is now one reject line."""
    _realblur(tmp_path)
    text = "\r\n".join([_line("scene001", 1), _line("scene001", 2)]) + "\r\n"
    (tmp_path / "RealBlur_J_train_list.txt").write_bytes(text.encode("utf-8-sig"))
    (tmp_path / "RealBlur_J_test_list.txt").write_bytes(
        "\r\n".join([_line("scene002", 1), _line("scene002", 2)]).encode("utf-16"))
    tasks, rejects = _listed(tmp_path)
    assert [(t.key, t.split) for t in tasks] == [
        ("realblur/J/scene001/gt_1", "train"), ("realblur/J/scene001/gt_2", "train"),
        ("realblur/J/scene002/gt_1", "test"), ("realblur/J/scene002/gt_2", "test")]
    assert rejects == {}
    (tmp_path / "RealBlur_J_test_list.txt").write_bytes(b"\x00\x81\xff\x00 binary")
    tasks, rejects = _listed(tmp_path)
    assert len(tasks) == 2 and rejects["RealBlur_J_test_list.txt"].startswith("not a text list (UTF-8 or UTF-16)")
    assert rejects[f"{J}/scene002"] == "folder not used (4 images): in no RealBlur list"


def test_realblur_images_in_no_list_get_reject_lines(tmp_path):
    _realblur(tmp_path, ("scene001", "scene002", "scene003"))
    (tmp_path / "RealBlur_J_train_list.txt").write_text(_line("scene001", 1) + "\n")
    (tmp_path / "RealBlur_J_test_list.txt").write_text(_line("scene002", 1) + "\n" + _line("scene002", 2) + "\n")
    (tmp_path / J / "scene001" / "gt" / "._gt_1.png").write_bytes(b"\x00\x05\x16\x07")
    write_image(tmp_path / "previews" / "a.png", _img(0))
    tasks, rejects = _listed(tmp_path)
    assert [t.key for t in tasks] == ["realblur/J/scene001/gt_1", "realblur/J/scene002/gt_1",
                                      "realblur/J/scene002/gt_2"]
    assert rejects == {
        f"{J}/scene001/blur/blur_2.png": "in no RealBlur_{J,R}_{train,test}_list.txt",
        f"{J}/scene001/gt/gt_2.png": "in no RealBlur_{J,R}_{train,test}_list.txt",
        f"{J}/scene001/gt/._gt_1.png": HIDDEN,
        f"{J}/scene003": "folder not used (4 images): in no RealBlur list",
        "previews": "folder not used (1 image): RealBlur reads the images its RealBlur_{J,R}_{train,test}_list.txt "
                    "name"}
