"""--raw-dir with a damaged reference: a scene's narrowest shot that cannot be decoded (cut short by an interrupted
copy) gets one reject line, and the next-narrowest readable shot is the reference under the same rules, so the
scene's pairs are kept. Tiny JPEG/PNG shots with EXIF FNumber, as in test_raw_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_raw_dir import _ingest, _shot

from defocuskit.data.sample import IngestOptions, Rejected, Task
from defocuskit.data.sources import raw as raw_source


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(0.6 * len(data))])


def _intact_scene(root: Path) -> None:
    """Another scene, whole, so that every ingest here writes pairs."""
    _shot(root / "t" / "ref.jpg", 16.0, seed=1)
    _shot(root / "t" / "a.jpg", 2.8, blur=1.5, seed=1)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_a_damaged_reference_gives_way_to_the_next_narrowest_shot(tmp_path, ext):
    root = tmp_path / "photos"
    _truncate(_shot(root / "s" / f"ref.{ext}", 16.0))
    _shot(root / "s" / f"mid.{ext}", 8.0, blur=0.5)
    _shot(root / "s" / f"a.{ext}", 2.8, blur=1.5)
    _shot(root / "s" / f"b.{ext}", 4.0, blur=1.2)
    _intact_scene(root)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/s/a", "raw/s/b", "raw/s/mid", "raw/t/a", "raw/t/ref"]
    assert [Path(r["file"]).name for r in rejects] == [f"ref.{ext}"]  # one line for the damaged file
    assert "truncated" in rejects[0]["reason"]
    assert f"mid.{ext} (f/8) is the reference instead" in rejects[0]["reason"]
    scene = {k: m for k, m in samples.items() if m["scene"] == "s"}
    assert {m["ref_f_number"] for m in scene.values()} == {8.0}  # the reference that was used, recorded
    assert samples["raw/s/mid"]["origin"] == [f"s/mid.{ext}"] and samples["raw/s/mid"]["f_number"] == 8.0
    assert samples["raw/s/a"]["origin"] == [f"s/a.{ext}", f"s/mid.{ext}"]
    assert samples["raw/t/a"]["ref_f_number"] == 16.0


def test_a_damaged_reference_with_no_narrower_readable_shot_loses_the_scene_saying_so(tmp_path):
    root = tmp_path / "photos"
    _truncate(_shot(root / "s" / "ref.jpg", 16.0))
    _shot(root / "s" / "a.jpg", 2.8, blur=1.5)
    _shot(root / "s" / "b.jpg", 2.8, blur=1.2)  # a second shot at the widest aperture: still not a reference
    _intact_scene(root)
    _, samples, rejects = _ingest(root, tmp_path / "out")
    assert sorted(samples) == ["raw/t/a", "raw/t/ref"]
    reasons = {Path(r["file"]).name: r["reason"] for r in rejects}
    assert len(rejects) == 3 and set(reasons) == {"ref.jpg", "a.jpg", "b.jpg"}  # one line per file, its own
    assert "truncated" in reasons["ref.jpg"] and "no shot of scene 's' narrower than f/2.8" in reasons["ref.jpg"]
    assert reasons["a.jpg"] == reasons["b.jpg"] == "no reference: no shot of scene 's' narrower than f/2.8 can be " \
                                                   "read (ref.jpg)"


def test_a_damaged_reference_gives_way_to_its_twin_at_the_same_f_number(tmp_path):
    root = tmp_path / "photos"
    _truncate(_shot(root / "s" / "a_ref.jpg", 16.0))
    _shot(root / "s" / "b_ref.jpg", 16.0)
    _shot(root / "s" / "c.jpg", 8.0, blur=1.0)
    _shot(root / "s" / "d.jpg", 4.0, blur=1.5)
    items = list(raw_source.list_tasks(root, IngestOptions(split_by="train")))
    tasks = [t for t in items if isinstance(t, Task)]
    rejected = [r for r in items if isinstance(r, Rejected)]
    assert [t.key for t in tasks] == ["raw/s/b_ref", "raw/s/c", "raw/s/d"]
    assert all(t.files["sharp"].endswith("b_ref.jpg") and t.meta["ref_f_number"] == 16.0 for t in tasks)
    assert [Path(r.file).name for r in rejected] == ["a_ref.jpg"]
    assert "b_ref.jpg (f/16) is the reference instead" in rejected[0].reason
