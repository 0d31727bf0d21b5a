"""A method that learns from sharp images alone (HIDD's prior, `Method.data` "sharp") reads each scene's reference
once per pass: an aperture stack stores it in every pair and once more as the scene's sharp-only sample, and read
sample by sample a stack of 3 apertures counted its scene 4 times against a DPDD pair's once. Paired methods read
every pair as before; a folder named twice in data.train still counts twice; processes share the kept samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import webdataset as wds

from defocuskit.io.images import encode_png
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.checkpoints import check_data_position
from defocuskit.train.data import check_data, make_loader
from defocuskit.train.stream import ShardStream


def _image(seed: int, size: int = 8) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _sample(key: str, ref: int, blur: bool, meta: dict | None, size: int = 8) -> dict:
    out = {"__key__": key, "sharp.png": _image(ref, size), "json": json.dumps(meta or {"f_number": 2.8}).encode()}
    if blur:
        out["blur.png"] = _image(ref + 1000, size)
    return out


def _meta(source: str, scene: str, **more) -> dict:
    return {"source": source, "split": "train", "scene": scene, "height": 8, "width": 8, **more}


def _write(path: Path, samples: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)


def _folder(root: Path) -> Path:
    """A VABD-like stack (scene 0001: 3 pairs and its sharp-only f16, one reference), two DPDD pairs, and a
    RealBlur scene of two frames (one scene, two references); the stack's reference in a shard of its own."""
    folder = root / "set"
    stack = [_sample(f"vabd/train/0001/f{n}", 1, True, _meta("vabd", "0001", f_number=float(n))) for n in (2, 4, 8)]
    dpdd = [_sample(f"dpdd/train/{i}", 10 + i, True, _meta("dpdd", f"s{i}")) for i in range(2)]
    realblur = [_sample(f"realblur/J/scene007/gt_{i}", 20 + i, True, _meta("realblur", "J/scene007")) for i in (1, 2)]
    _write(folder / "train-000000.tar", stack + dpdd + realblur)
    _write(folder / "train-000001.tar", [_sample("vabd/train/0001/f16", 1, False, _meta("vabd", "0001"))])
    return folder


REFERENCES = {"vabd/train/0001/f16", "dpdd/train/0", "dpdd/train/1", "realblur/J/scene007/gt_1",
              "realblur/J/scene007/gt_2"}


def _keys(method: str, spec: str, n: int, rank: int = 0, world: int = 1) -> list[str]:
    recipe = load_recipe(f"{method}-tiny", [f"data.train={spec}", "data.batch_size=1", "data.resampled=false",
                                            "data.shuffle_buffer=1", "data.image_size=8", "data.num_workers=0"])
    loader = make_loader(recipe, get_method(method), rank, world, urls=check_data(recipe, get_method(method)))
    return [k for _, b in zip(range(n), loader) for k in b["key"]]


def test_a_sharp_only_method_reads_each_reference_once_per_pass(tmp_path):
    # before: the stack's reference came round 4 times a pass (its 3 pairs and f16), every other sample once
    keys = _keys("hidd", str(_folder(tmp_path)), 2 * len(REFERENCES))
    assert Counter(keys) == {k: 2 for k in REFERENCES}, Counter(keys)


def test_a_paired_method_still_reads_every_pair(tmp_path):
    keys = _keys("nafnet", str(_folder(tmp_path)), 7)
    assert Counter(keys) == {k: 1 for k in (f"vabd/train/0001/f{n}" for n in (2, 4, 8))} | {
        "dpdd/train/0": 1, "dpdd/train/1": 1, "realblur/J/scene007/gt_1": 1, "realblur/J/scene007/gt_2": 1}


def test_a_folder_named_twice_still_counts_twice(tmp_path):
    folder, other = _folder(tmp_path), tmp_path / "other"
    _write(other / "train-000000.tar", [_sample("dpdd/train/9", 99, True, _meta("dpdd", "s9"))])
    keys = _keys("hidd", f"[{folder}, {folder}, {other}]", 2 * len(REFERENCES) + 1)
    assert Counter(keys) == {**{k: 2 for k in REFERENCES}, "dpdd/train/9": 1}, Counter(keys)
    urls = sorted(str(p) for p in folder.glob("*.tar")) * 2 + [str(other / "train-000000.tar")]
    stream = ShardStream(urls, load_recipe("hidd-tiny", [f"data.train={folder}"]).data, "sharp", 0, 0, 1)
    assert "2 shard(s) named more than once in data.train, read as often as named" in stream.references.line("hidd")


def test_two_processes_share_the_references_disjointly(tmp_path):
    # 5 references by samples (shards of 4 and 1 kept): a pass is 3 of process 0's and 2 of process 1's
    folder = _folder(tmp_path)
    parts = [_keys("hidd", str(folder), n, rank, 2) for rank, n in ((0, 3), (1, 2))]
    assert sorted(parts[0] + parts[1]) == sorted(REFERENCES), parts


def test_references_without_a_scene_are_told_apart_by_their_bytes(tmp_path):
    # a stack written without a sharp-only sample and without scene metadata: its pairs share one sharp.png
    folder = tmp_path / "plain"
    _write(folder / "train-000000.tar", [_sample(f"pairs/a_f{n}", 5, True, None) for n in (2, 4)]
           + [_sample("pairs/b", 6, True, None), _sample("pairs/c", 7, True, _meta("pairs", "c"))])
    _write(folder / "train-000001.tar", [_sample("pairs/a_f8", 5, True, _meta("pairs", "a_f8"))])
    keys = _keys("hidd", str(folder), 6)
    assert Counter(keys) == {"pairs/a_f2": 2, "pairs/b": 2, "pairs/c": 2}, Counter(keys)


def test_patches_of_one_image_stay_apart_and_misaligned_references_go(tmp_path):
    # ingest --patch: every patch of the scene's sharp-only image is kept, the pairs' patches (here moved references,
    # --synthetic-misalign: other bytes, the same scene) are not
    def patch(key: str, ref: int, blur: bool, x: int) -> dict:
        meta = _meta("synthetic", "astronaut", patch_of={"height": 8, "width": 16, "y": 0, "x": x})
        return _sample(key, ref, blur, meta)

    folder = tmp_path / "patches"
    _write(folder / "train-000000.tar", [patch(f"s/f2/p0_{x}", 30 + x, True, x) for x in (0, 8)]
           + [patch(f"s/sharp/p0_{x}", 50 + x, False, x) for x in (0, 8)])
    keys = _keys("hidd", str(folder), 4)
    assert Counter(keys) == {"s/sharp/p0_0": 2, "s/sharp/p0_8": 2}, Counter(keys)


def test_the_log_and_the_data_position_say_how_many_were_kept(tmp_path):
    folder = _folder(tmp_path)
    urls = [str(p) for p in sorted(folder.glob("*.tar"))]
    cfg = load_recipe("hidd-tiny", [f"data.train={folder}"]).data
    stream = ShardStream(urls, cfg, "sharp", 0, 0, 1)
    assert stream.references is not None and stream.references.record() == "5 of 8"
    assert "5 distinct references kept of 8 samples" in stream.references.line("hidd")
    position = stream.position(3)
    assert position["references"] == "5 of 8"
    assert "references" not in ShardStream(urls, cfg, "paired", 0, 0, 1).position(3)  # paired: as before
    said: list[str] = []

    class Main:
        is_main_process = True
        print = staticmethod(said.append)

    check_data_position(Main(), position, stream, 3)
    assert said == []
    former = {k: v for k, v in position.items() if k != "references"}  # a checkpoint of the former stream
    check_data_position(Main(), former, stream, 3)
    assert len(said) == 1 and "distinct sharp references kept None -> '5 of 8'" in said[0], said
