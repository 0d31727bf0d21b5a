"""Shard format: members, atomic writer, reader API, and loading with webdataset and datasets.

This module is also a tiny fake source (NAME / list_tasks / load): 16-bit pairs with a coc map,
plus one sharp-only sample, the member mix the synthetic source writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data import sources as sources_table
from defocuskit.data.folder import listed_temporaries, remove_temporaries
from defocuskit.data.ingest import run_ingest
from defocuskit.data.metadata import empty_meta
from defocuskit.data.reader import (
    decode_sample,
    iter_raw,
    iter_samples,
    read_manifest,
    shard_urls,
    signed_coc,
)
from defocuskit.data.sample import IngestOptions, Sample, Task
from defocuskit.data.shards import AtomicShard, encode_members, f_number_key
from defocuskit.data.sources import DatasetSource
from defocuskit.io.images import decode_image

NAME = "fake16"


def list_tasks(root: Path, opts: IngestOptions):
    for i in range(9):
        split = "test" if i == 8 else "train"
        yield Task(source=NAME, split=split, scene=f"sc{i}", key=f"{NAME}/{split}/sc{i}", files={})


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    i = int(task.scene[2:])
    rng = np.random.default_rng(i)
    sharp = rng.integers(0, 65535, (24, 32, 3)).astype(np.uint16)
    if i == 0:  # sharp-only, the first in its shard: the writer must put it after the pairs
        return [Sample(task.key, sharp=sharp, blur=None, meta=empty_meta(source=NAME, split=task.split, scene=task.scene))]
    meta = empty_meta(source=NAME, split=task.split, scene=task.scene, f_number=1.4 * i, ref_f_number=22.0,
                      blur_type="defocus", align={"method": "none", "score": 1.0, "matrix": np.eye(3)})
    coc = np.linspace(0, 40, 24 * 32, dtype=np.float32).reshape(24, 32)
    return [Sample(task.key, sharp=sharp, blur=sharp // 2, meta=meta, coc=coc)]


SOURCE = DatasetSource(NAME, list_tasks, load)  # this module stands in for a source module


@pytest.fixture
def shards_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setitem(sources_table.SOURCES, NAME, __name__)
    out = tmp_path / "shards"
    run_ingest({NAME: tmp_path}, IngestOptions(out=str(out), workers=0, shard_size=6), progress=False)
    return out


def test_f_number_key():
    assert [f_number_key(f) for f in (2, 2.8, 1.4 * 3, 16, None, "x")] == ["2.0", "2.8", "4.2", "16.0", "none", "none"]


def test_f_number_key_is_evals_group():
    """The manifest (and `inspect`'s table) counted f/0.95 shots as f/0.9, merged with real f/0.9 ones, where eval
    reports f/0.95 and f/0.9 apart (0.01 below f/1): one key per eval row, holding that row's f-number."""
    from defocuskit.eval.report import group_of

    assert [f_number_key(f) for f in (0.95, 0.9, 0.7, 0.999, 1.0, 1.04)] == ["0.95", "0.9", "0.7", "1.0", "1.0", "1.0"]
    for f in (*np.round(np.arange(0.5, 1.2, 0.001), 4), 1.25, 2.8, 5.6, 22, 64):
        assert float(f_number_key(f)) == group_of(float(f), stops=False), f


def test_members_round_trip_keeps_16_bits_and_coc():
    sharp = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000
    coc = np.array([[0.0, 1.5, 3.25], [10.0, 100.0, 255.99]], np.float32)
    members = encode_members(sharp, None, coc, {"f_number": 2.8, "align": {"matrix": np.eye(3)}})
    assert set(members) == {"sharp.png", "coc.png", "json"}
    sample = decode_sample({"__key__": "a/b", **members})
    assert sample["blur"] is None and sample["sharp"].dtype == np.uint16
    np.testing.assert_array_equal(sample["sharp"], sharp)
    np.testing.assert_allclose(sample["coc"], coc, atol=1 / 512)
    assert sample["meta"]["f_number"] == 2.8 and sample["meta"]["align"]["matrix"] == np.eye(3).tolist()


def test_atomic_shard_puts_richest_first_and_abort_leaves_nothing(tmp_path):
    small = np.zeros((4, 4, 3), np.uint8)
    w = AtomicShard(tmp_path, "train-000000")
    w.write("k/only", encode_members(small, None, None, {"f_number": None}))
    w.write("k/pair", encode_members(small, small, None, {"f_number": 2.0}))
    assert not (tmp_path / "train-000000.tar").exists()
    w.commit()
    assert [r["__key__"] for r in iter_raw(str(tmp_path / "train-000000.tar"))] == ["k/pair", "k/only"]
    w = AtomicShard(tmp_path, "train-000001")
    w.write("k/x", encode_members(small, small, None, {}))
    w.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".records", "train-000000.tar"]
    assert listed_temporaries(tmp_path) == set()


def test_only_listed_temporaries_are_removed(tmp_path):
    """A shard's temporaries are made exclusively and listed; a rerun removes those, never a file of the same
    kind of name that no run listed (the user's, or an older version's), nor a listed name of another kind."""
    small = np.zeros((4, 4, 3), np.uint8)
    killed = AtomicShard(tmp_path, "train-000000")  # a run killed while it wrote this shard
    killed.write("k/x", encode_members(small, small, None, {}))
    made = {killed.partial.name, killed.spool_path.name}
    assert listed_temporaries(tmp_path) == made and killed.partial.name.endswith(".tar.partial")
    users = [tmp_path / ".train-000000.tar.partial", tmp_path / ".train-000000.0badc0de.tar.spool",
             tmp_path / ".manifest.json.12345678.tmp", tmp_path / "photo.jpg"]
    for path in users:
        path.write_bytes(b"the user's")
    (tmp_path / ".records" / "_temporaries.json").write_text(json.dumps(sorted(made | {"photo.jpg", "../x"})))
    removed = remove_temporaries(tmp_path, lambda shard: shard == "train-000000")
    assert sorted(p.name for p in removed) == sorted(made)
    assert all(p.read_bytes() == b"the user's" for p in users)
    assert listed_temporaries(tmp_path) == {"photo.jpg", "../x"}  # not names of ours: never acted on
    other = AtomicShard(tmp_path, "train-000001")
    assert remove_temporaries(tmp_path, lambda shard: shard == "train-000000") == [] and other.partial.exists()
    other.commit()
    assert listed_temporaries(tmp_path) == {"photo.jpg", "../x"}
    (tmp_path / ".records" / "_temporaries.json").write_text('[1, {"a": 2}, ".x-000001.0123abcd.tar.spool"]')
    assert listed_temporaries(tmp_path) == {".x-000001.0123abcd.tar.spool"}  # a damaged list: its names only
    AtomicShard(tmp_path, "train-000002").abort()


def test_manifest_counts_and_reader(shards_dir):
    m = read_manifest(shards_dir)
    assert m["tool"] == "defocuskit" and m["options"]["shard_size"] == 6
    assert [s["name"] for s in m["shards"]] == ["test-000000.tar", "train-000000.tar", "train-000001.tar"]
    assert m["counts"]["samples"] == 9 and m["counts"]["by_split"] == {"test": 1, "train": 8}
    assert m["counts"]["by_f_number"]["none"] == 1 and m["counts"]["by_f_number"]["8.4"] == 1
    assert sum(r["samples"] for r in m["counts"]["table"]) == 9 and m["rejects"] == 0
    samples = list(iter_samples(shards_dir, "train"))
    assert len(samples) == 8
    pair = next(s for s in samples if s["key"] == f"{NAME}/train/sc1")
    assert pair["sharp"].dtype == np.uint16 and pair["blur"].shape == (24, 32, 3)
    assert pair["meta"]["bit_depth"] == 16 and pair["meta"]["height"] == 24 and pair["meta"]["f_number"] == 1.4
    assert pair["coc"].dtype == np.float32 and abs(float(pair["coc"].max()) - 40.0) < 1e-2
    only = next(s for s in samples if s["key"] == f"{NAME}/train/sc0")
    assert only["blur"] is None and only["coc"] is None


def test_shard_urls_specs(shards_dir):
    assert len(shard_urls(shards_dir)) == 3
    assert [Path(u).name for u in shard_urls(shards_dir, "train")] == ["train-000000.tar", "train-000001.tar"]
    assert len(shard_urls(str(shards_dir / "train-{000000..000001}.tar"))) == 2
    assert len(shard_urls(str(shards_dir / "*.tar"), split="test")) == 1
    (shards_dir / "manifest.json").unlink()  # a folder without manifest: glob
    assert len(shard_urls(shards_dir, "train")) == 2
    with pytest.raises(FileNotFoundError, match="val"):
        shard_urls(shards_dir, "val")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        shard_urls(str(shards_dir / "nothing-{000000..000002}.tar"))


def test_webdataset_and_datasets_load_the_same_samples(shards_dir, tmp_path):
    import datasets
    import webdataset as wds

    urls = shard_urls(shards_dir, "train")
    wds_samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(wds_samples) == len(ds) == 8
    ds = ds.cast_column("sharp.png", datasets.Image(decode=False)).cast_column("blur.png", datasets.Image(decode=False))
    by_key = {r["__key__"]: r for r in ds}
    for raw in wds_samples:
        a = decode_sample(raw)
        row = by_key[raw["__key__"]]
        b = decode_image(row["sharp.png"]["bytes"])
        assert b.dtype == np.uint16
        np.testing.assert_array_equal(a["sharp"], b)
        assert row["json"]["f_number"] == json.loads(raw["json"])["f_number"]
        assert (row["blur.png"] is None) == (a["blur"] is None)


def test_publish_replaces_an_older_shard_and_the_lock_is_reentrant(tmp_path):
    from defocuskit.data.folder import folder_lock

    small = np.zeros((4, 4, 3), np.uint8)
    for key in ("k/old", "k/new"):
        w = AtomicShard(tmp_path, "train-000000")
        w.write(key, encode_members(small, small, None, {}))
        w.seal()
        assert not w.spool_path.exists()
        with folder_lock(tmp_path), folder_lock(tmp_path):  # nested: does not wait for itself
            w.publish()
    assert [r["__key__"] for r in iter_raw(str(tmp_path / "train-000000.tar"))] == ["k/new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".records", "train-000000.tar"]
    assert listed_temporaries(tmp_path) == set()


def test_manifest_is_not_complete_without_samples(shards_dir):
    from defocuskit.data.manifest import build_manifest

    m = read_manifest(shards_dir)
    assert m["complete"] is True and m["done_shards"] == m["expected_shards"] == 3 and "error" not in m
    empty = build_manifest([{"name": "train-000000", "split": "train", "samples": 0, "table": [], "rejects": [{}]}],
                           {}, expected_shards=1, error="no sample written")
    assert empty["complete"] is False and empty["error"] == "no sample written" and empty["rejects"] == 1


def test_a_signed_coc_round_trips_as_coc_png_and_cocsign_png() -> None:
    sharp = np.zeros((4, 6, 3), np.uint8)
    coc = np.array([[-3.5, -0.25, 0.0, 0.5, 2.0, 7.75]] * 4, np.float32)
    meta = empty_meta(source="synthetic", split="test", scene="s", height=4, width=6)
    raw = {"__key__": "k", **encode_members(sharp, sharp, coc, meta, coc_signed=True)}
    sample = decode_sample(raw)
    assert sample["coc"].min() >= 0 and np.allclose(sample["coc"], np.abs(coc))
    assert sample["coc_sign"].tolist()[0] == [-1, -1, 1, 1, 1, 1]
    assert np.allclose(signed_coc(sample), coc)
    unsigned = decode_sample({"__key__": "k", **encode_members(sharp, sharp, np.abs(coc), meta)})
    assert unsigned["coc_sign"] is None and np.allclose(signed_coc(unsigned), np.abs(coc))
