"""The training stream's split among processes and DataLoader workers: every usable sample once per epoch, also
where the shards differ in size (a folder's short last shard) or several folders are mixed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from defocuskit.io.images import encode_png
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe
from defocuskit.train.checkpoints import check_data_position
from defocuskit.train.data import check_data, make_loader
from defocuskit.train.stream import ShardStream

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "hidd-tiny.yaml")


def _image(key: str) -> np.ndarray:
    """An 8x8 image of its own per key (a sharp-only method reads each distinct sharp image once)."""
    flat = np.zeros(8 * 8 * 3, np.uint8)
    flat[:len(key)] = np.frombuffer(key.encode(), np.uint8)
    return flat.reshape(8, 8, 3)


def _shard(path: Path, keys: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as w:
        for key in keys:
            w.write({"__key__": key, "sharp.png": encode_png(_image(key)),
                     "json": json.dumps({"f_number": 2.8}).encode()})


def _recipe(spec: str, *extra: str, resampled: bool = False, shuffle: int = 1):
    return load_recipe(TINY, [f"data.train={spec}", "data.batch_size=1", f"data.resampled={str(resampled).lower()}",
                              f"data.shuffle_buffer={shuffle}", "data.image_size=8", *extra])


@pytest.fixture()
def uneven(tmp_path) -> Path:
    """One folder: a full shard of 6 samples and a last one of 2."""
    _shard(tmp_path / "a" / "train-000000.tar", [f"a{i}" for i in range(6)])
    _shard(tmp_path / "a" / "train-000001.tar", ["a6", "a7"])
    return tmp_path / "a"


def _keys(recipe, rank: int, world: int, n: int) -> list[str]:
    method = get_method(recipe.method)
    loader = make_loader(recipe, method, rank, world, urls=check_data(recipe, method))
    return [k for _, b in zip(range(n), loader) for k in b["key"]]


def test_two_workers_of_one_process_see_every_sample_once_per_epoch(uneven):
    # before: the 2 samples of the short shard, a worker's own, were every second batch (each 4 times an epoch)
    keys = _keys(_recipe(str(uneven), "data.num_workers=2", shuffle=4), 0, 1, 16)
    assert Counter(keys) == {f"a{i}": 2 for i in range(8)}


def test_two_processes_see_every_sample_once_per_epoch_and_disjoint(uneven, tmp_path):
    _shard(tmp_path / "b" / "train-000000.tar", ["b0", "b1", "b2"])  # a second folder, mixed in by data.train's list
    recipe = _recipe(f"[{uneven}, {tmp_path / 'b'}]", "data.num_workers=0")
    parts = [_keys(recipe, rank, 2, 11) for rank in (0, 1)]  # 22 samples: two epochs of 11
    assert Counter(parts[0] + parts[1]) == {k: 2 for k in [f"a{i}" for i in range(8)] + ["b0", "b1", "b2"]}
    assert not set(parts[0][:5]) & set(parts[1][:5])  # the first epoch: 11 samples, 6 and 5 (or 5 and 6)


def test_shards_of_equal_size_keep_their_split_and_resumes_warn_where_the_split_changed(uneven, tmp_path):
    for i in range(4):
        _shard(tmp_path / "e" / f"train-{i:06d}.tar", [f"e{i}{j}" for j in range(3)])
    urls = sorted(str(p) for p in (tmp_path / "e").glob("*.tar"))
    even = ShardStream(urls, _recipe(urls[0], "data.num_workers=2").data, "sharp", 0, 1, 2)
    assert even.split == "shards" and even.share(0, 2).urls == [urls[1]]  # webdataset's split_by_node, then worker
    said: list[str] = []

    class Main:
        is_main_process = True
        print = staticmethod(said.append)

    before = {k: v for k, v in even.position(3).items() if k != "split"}  # a checkpoint of the former code
    check_data_position(Main(), before, even, 3)
    assert said == []  # the same stream as before: nothing to say
    short = [str(p) for p in sorted(uneven.glob("*.tar"))]
    stream = ShardStream(short, _recipe(short[0], "data.num_workers=2").data, "sharp", 0, 0, 1)
    assert stream.split == "samples"
    check_data_position(Main(), {k: v for k, v in stream.position(3).items() if k != "split"}, stream, 3)
    assert len(said) == 1 and "split 'shards' -> 'samples'" in said[0], said
    assert "not the exact continuation" in said[0]


def test_a_resume_with_another_number_of_processes_names_them_not_the_shards(tmp_path):
    """The same four shards, the checkpoint written by 2 processes (the main one reading shards 0 and 2), resumed by
    1 or 3: the line names the processes with both values. Before, it said the shards changed too ("shards, world_size
    changed"): the main process's record digests its own share of them, which another count of processes changes."""
    for i in range(4):
        _shard(tmp_path / "e" / f"train-{i:06d}.tar", [f"e{i}{j}" for j in range(3)])
    urls = sorted(str(p) for p in (tmp_path / "e").glob("*.tar"))
    cfg = _recipe(urls[0], "data.num_workers=0").data
    saved = ShardStream(urls, cfg, "sharp", 0, 0, 2).position(3)
    assert saved["split"] == "shards"
    said: list[str] = []

    class Main:
        is_main_process = True
        print = staticmethod(said.append)

    for world in (1, 3):
        check_data_position(Main(), saved, ShardStream(urls, cfg, "sharp", 0, 0, world), 3)
    assert len(said) == 2 and all("shards" not in line.split(":")[0] for line in said), said
    assert "(processes 2 -> 1)" in said[0] and "processes 2 -> 3" in said[1], said
    check_data_position(Main(), saved, ShardStream(urls[:3], cfg, "sharp", 0, 0, 2), 3)  # a shard fewer: said
    assert "(shards, split 'shards' -> 'samples')" in said[2], said
    older = {k: v for k, v in saved.items() if k != "all_shards"}  # a checkpoint of the former code
    check_data_position(Main(), older, ShardStream(urls, cfg, "sharp", 0, 0, 1), 3)
    assert "(processes 2 -> 1)" in said[3], said


def test_a_stream_by_samples_resumes_exactly_with_workers(uneven):
    recipe = _recipe(str(uneven), "data.num_workers=2", resampled=True, shuffle=3)
    urls = [str(p) for p in sorted(uneven.glob("*.tar"))]

    def batches(start: int, n: int) -> list[str]:
        stream = ShardStream(urls, recipe.data, "sharp", 0, 0, 1, start_batch=start)
        loader = torch.utils.data.DataLoader(stream, batch_size=1, num_workers=stream.num_workers)
        return [b["key"][0] for _, b in zip(range(n), loader)]

    full = batches(0, 12)
    assert batches(5, 7) == full[5:]


@pytest.mark.parametrize("world", [2, 3])
def test_no_reader_is_left_without_samples_where_they_are_few(world, tmp_path):
    # before: 3 processes, 2 workers each, over shards of 2 and 1 samples: "no sample with sharp.png" (worker 1)
    _shard(tmp_path / "t" / "train-000000.tar", ["t0", "t1"])
    _shard(tmp_path / "t" / "train-000001.tar", ["t2"])
    recipe = _recipe(str(tmp_path / "t"), "data.num_workers=2")
    parts = [_keys(recipe, rank, world, 3) for rank in range(world)]
    assert set().union(*parts) == {"t0", "t1", "t2"}
    assert not set().union(*[p[:1] for p in parts[1:]]) & set(parts[0][:1])
