"""Shards that Hugging Face `datasets` and `webdataset` read as they are (shard format 2).

Two separately ingested folders with different unknowns (a --pairs folder kept as shot: no f-number,
camera, gain or registration; the synthetic set: everything known, coc.png, sharp-only samples) load
in one `load_dataset` call; hf_features() + hf_decode keep 16-bit PNGs 16-bit; the README's
select recipes pick paired / sharp-only / blur-map samples, and the plain to_tuple fails on a mixed shard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from defocuskit.data import hf_decode, hf_features, metadata
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import decode_sample, iter_raw, read_manifest, shard_urls
from defocuskit.data.sample import IngestOptions
from defocuskit.data.shards import AtomicShard, encode_members
from defocuskit.io.images import write_image

README = Path(__file__).resolve().parents[1] / "README.md"
KINDS = {"float": float, "int": int, "str": str}
ALWAYS = {k: f for k, f in metadata.SCHEMA.items() if k not in metadata.OPTIONAL_KEYS}  # in every sample's json


@pytest.fixture(scope="module", autouse=True)
def _offline():
    """No network: the Hub is off for huggingface_hub and datasets (both read it at import, hence the attributes)."""
    import datasets
    import huggingface_hub.constants

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """{"pairs": a --pairs --register none ingest (8-bit), "pairs16": the same at --bit-depth 16,
    "synthetic": --synthetic builtin at 64 px, f/2.8 only (a pair and a sharp-only sample per scene)}."""
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(0)
    for stem in ("beach", "desk"):  # 8-bit PNG pairs without EXIF; kept as shot (no registration)
        sharp = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3)).astype(np.uint8), (0, 0), 1.0)
        write_image(root / "mine" / "sharp" / f"{stem}.png", sharp)
        write_image(root / "mine" / "blur" / f"{stem}.png", cv2.GaussianBlur(sharp, (0, 0), 2.0))
    out = {}
    for name, source, extra in (("pairs", {"pairs": root / "mine"}, {"register": "none"}),
                                ("pairs16", {"pairs": root / "mine"}, {"register": "none", "bit_depth": "16"}),
                                ("synthetic", {"synthetic": Path("builtin")},
                                 {"synthetic_size": 64, "synthetic_f_numbers": (2.8,)})):
        out[name] = root / name
        run_ingest(source, IngestOptions(out=str(out[name]), workers=0, split_by="train", **extra), progress=False)
    out["cache"] = root / "hf-cache"
    return out


def _load(files: list[str], cache: Path, **kw):
    import datasets

    return datasets.load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=str(cache), **kw)


def _check_stored(value, field, path: str) -> None:
    """A stored metadata value has its schema type (no null, no int where a float belongs)."""
    if isinstance(field, dict):
        assert isinstance(value, dict) and list(value) == list(field), path
        for k, f in field.items():
            _check_stored(value[k], f, f"{path}.{k}")
        return
    kind = field.kind
    if kind in KINDS:
        assert type(value) is KINDS[kind], (path, value)
    elif kind == "matrix":
        assert len(value) == 3 and all(len(r) == 3 and all(type(v) is float for v in r) for r in value), path
    else:
        item = {"strs": str, "floats": float, "ints": int}[kind]
        assert isinstance(value, list) and all(type(v) is item for v in value), (path, value)
        assert kind == "strs" or len(value) == field.length, path


def test_every_sample_of_every_source_has_the_whole_schema(folders):
    for name in ("pairs", "synthetic"):
        assert read_manifest(folders[name])["format"] == metadata.FORMAT == 2
        for url in shard_urls(folders[name]):
            for raw in iter_raw(url):
                stored = json.loads(raw["json"])
                assert list(stored) == list(ALWAYS), raw["__key__"]  # a whole image has no patch_of
                _check_stored(stored, ALWAYS, raw["__key__"])
                assert stored["origin"], raw["__key__"]  # never empty: no list<null> column either
    pair = json.loads(next(iter_raw(shard_urls(folders["pairs"])[0]))["json"])
    assert pair["f_number"] == -1.0 and pair["camera"] == "" and pair["gain"] == -1.0
    assert pair["align"]["method"] == "none" and pair["align"]["matrix"] == np.eye(3).tolist()
    assert pair["align"]["resized_from"] == [-1, -1] and pair["blurmask"]["white_is"] == ""
    meta = decode_sample(next(iter_raw(shard_urls(folders["pairs"])[0])))["meta"]  # the Python view
    assert meta["f_number"] is None and meta["camera"] is None and meta["gain"] is None
    assert meta["align"]["score"] is None and meta["align"]["raw_score"] is None and meta["blurmask"] is None


def test_two_separate_ingests_load_together_in_one_call(folders):
    pairs, synthetic = shard_urls(folders["pairs"]), shard_urls(folders["synthetic"])
    n_synthetic = read_manifest(folders["synthetic"])["counts"]["samples"]
    assert n_synthetic == 2 * 28
    for files in (pairs + synthetic, synthetic + pairs):  # inferred from either folder's first samples
        ds = _load(files, folders["cache"])
        assert len(ds) == 2 + n_synthetic
        rows = {r["__key__"]: r for r in ds.select_columns(["__key__", "json"])}
        assert rows["pairs/beach"]["json"]["f_number"] == -1.0 and rows["pairs/beach"]["json"]["camera"] == ""
        scene = next(k for k in rows if k.startswith("synthetic/") and k.endswith("/f2_8"))
        assert rows[scene]["json"]["f_number"] == 2.8 and rows[scene]["json"]["camera"]
    ds = _load(pairs + synthetic, folders["cache"], features=hf_features())
    assert ds.features == hf_features() and len(ds) == 2 + n_synthetic
    members = ds.select_columns(["__key__", "blur.png", "coc.png"])
    coc = {r["__key__"]: r["coc.png"] is not None for r in members}
    blur = {r["__key__"]: r["blur.png"] is not None for r in members}
    assert coc["pairs/desk"] is False and coc[scene] is True and blur[scene.replace("/f2_8", "/sharp")] is False


def test_patches_load_with_whole_images_and_say_what_they_were_cut_from(folders, tmp_path):
    """--patch writes the optional `patch_of` in every patch (the whole schema, in order), and one call loads patches
    and whole images with hf_features(): a whole image's patch_of is None."""
    patched = tmp_path / "patched"
    run_ingest({"pairs": folders["pairs"].parent / "mine"}, IngestOptions(out=str(patched), workers=0,
               split_by="train", register="none", patch=16), progress=False)
    for raw in iter_raw(shard_urls(patched)[0]):
        stored = json.loads(raw["json"])
        assert list(stored) == list(metadata.SCHEMA), raw["__key__"]
        _check_stored(stored, metadata.SCHEMA, raw["__key__"])
    ds = _load(shard_urls(folders["pairs"]) + shard_urls(patched), tmp_path / "hf", features=hf_features())
    rows = {r["__key__"]: r for r in ds}
    assert len(rows) == 2 + 2 * 12 and rows["pairs/beach"]["json"]["patch_of"] is None
    assert rows["pairs/beach/p32_48"]["json"]["patch_of"] == {"height": 48, "width": 64, "y": 32, "x": 48}
    assert hf_decode(rows["pairs/desk/p0_16"])["meta"]["patch_of"] == {"height": 48, "width": 64, "y": 0, "x": 16}
    assert hf_decode(rows["pairs/desk"])["meta"]["patch_of"] is None


def test_hf_features_and_hf_decode_keep_16_bits(folders):
    url = shard_urls(folders["pairs16"])[0]
    ds = _load([url], folders["cache"], features=hf_features())
    rows = ds.with_transform(hf_decode)
    in_tar = {raw["__key__"]: raw for raw in iter_raw(url)}
    assert len(rows) == len(in_tar) == 2
    for i in range(len(rows)):
        row = rows[i]
        raw = in_tar[row["key"]]
        for name in ("blur", "sharp"):
            png = cv2.imdecode(np.frombuffer(raw[f"{name}.png"], np.uint8), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint16 and row[name].dtype == np.uint16
            np.testing.assert_array_equal(row[name], png[:, :, ::-1])
        assert row["coc"] is None and row["blurmask"] is None
        assert row["meta"]["bit_depth"] == 16 and row["meta"]["f_number"] is None
    one = hf_decode(ds[0])  # one row, as ds.map gives it
    assert one["sharp"].dtype == np.uint16 and one["key"] == ds[0]["__key__"]
    plain = _load([url], folders["cache"])  # datasets.Image: PIL, no 16 bits
    with pytest.raises(TypeError, match="hf_features"):
        hf_decode(plain[0])


# ------------------------------------------------------------------------------ README recipes


def _readme_block(needle: str) -> str:
    """The python block of the README's "Reading the shards elsewhere" part that contains `needle`."""
    text = README.read_text(encoding="utf-8")
    part = text.split("Reading the shards elsewhere", 1)[1].split("\n### ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", part, re.S) if needle in b]
    assert len(blocks) == 1, f"README: one python block with {needle!r} expected under 'Reading the shards elsewhere'"
    return blocks[0]


@pytest.fixture
def mixed(tmp_path) -> Path:
    """One shard, written with the project's writer: 2 pairs (one with coc.png), 1 sharp-only, 1 blur-map."""
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 65535, (16, 24, 3)).astype(np.uint16)  # noqa: E731
    mask = np.zeros((16, 24), np.uint8)
    mask[:, 12:] = 255
    w = AtomicShard(tmp_path, "train-000000")
    w.write("t/only", encode_members(img(), None, None, {"source": "t", "origin": ["s.png"]}))
    w.write("t/pair", encode_members(img(), img(), None, {"source": "t", "f_number": 2.8, "origin": ["b.png"]}))
    w.write("t/coc", encode_members(img(), img(), np.ones((16, 24), np.float32), {"source": "t", "f_number": 4.0}))
    w.write("t/map", encode_members(None, img(), None, {"source": "t"}, blurmask=mask))
    return w.commit()


def test_readme_webdataset_select_recipes_pick_each_kind(mixed):
    code = _readme_block("wds.WebDataset")
    placeholder = '"shards/train-{000000..000003}.tar"'
    assert placeholder in code
    ns: dict = {}
    exec(compile(code.replace(placeholder, repr([str(mixed)])), "README.md", "exec"), ns)
    pairs = list(ns["pairs"])
    assert len(pairs) == 2 and all(len(t) == 3 for t in pairs)
    assert {t[2]["f_number"] for t in pairs} == {2.8, 4.0}  # json as stored
    assert all(t[0].dtype == np.uint16 and t[0].shape == (16, 24, 3) for t in pairs)  # 16 bits kept
    sharp_only = list(ns["sharp_only"])
    assert len(sharp_only) == 1 and sharp_only[0][0].dtype == np.uint16 and sharp_only[0][1]["source"] == "t"
    maps = list(ns["blur_maps"])
    assert len(maps) == 1 and np.array_equal(maps[0][1], np.broadcast_to((np.arange(24) >= 12) * 255, (16, 24)))


def test_plain_to_tuple_fails_on_a_mixed_shard(mixed):
    import webdataset as wds

    from defocuskit.io.images import decode_image

    plain = wds.WebDataset(str(mixed), shardshuffle=False).decode(wds.handle_extension("png", decode_image))
    with pytest.raises(ValueError, match="didn't find"):
        list(plain.to_tuple("blur.png", "sharp.png", "json"))


def test_readme_datasets_recipe(mixed, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    code = _readme_block("load_dataset")
    placeholder = '"shards/train-*.tar"'
    assert placeholder in code
    ns: dict = {}
    exec(compile(code.replace(placeholder, repr(str(mixed))), "README.md", "exec"), ns)
    assert (len(ns["pairs"]), len(ns["sharp_only"]), len(ns["blur_maps"])) == (2, 1, 1)
    assert ns["row"]["blur"].dtype == np.uint16 and ns["row"]["meta"]["source"] == "t"


def test_hf_decode_of_a_batch_without_the_key_column_equals_the_rows(mixed, tmp_path):
    """A batch is told from a row by its lists, not by `__key__`: select_columns / with_transform(columns=...)."""
    ds = _load([str(mixed)], tmp_path / "hf", features=hf_features())
    rows = [hf_decode(ds[i]) for i in range(len(ds))]
    columns = ["blur.png", "sharp.png", "coc.png", "blurmask.png", "json"]
    for batch in (ds.select_columns(columns).with_transform(hf_decode)[:], ds.with_transform(hf_decode, columns)[:]):
        assert len(batch["blur"]) == len(rows) == 4
        for i, row in enumerate(rows):
            for name in ("sharp", "blur", "coc", "blurmask"):
                assert (batch[name][i] is None) == (row[name] is None), (name, row["key"])
                if row[name] is not None:
                    assert batch[name][i].dtype == row[name].dtype and np.array_equal(batch[name][i], row[name])
            assert batch["meta"][i] == row["meta"]


def test_decode_sample_of_already_decoded_members_says_so(mixed):
    """`.decode(...)` before `.map(decode_sample)`: one line naming the shard, the sample and the member, not a
    'damaged image'."""
    import webdataset as wds

    from defocuskit.data.reader import ShardError
    from defocuskit.io.images import decode_image

    decoded = wds.WebDataset(str(mixed), shardshuffle=False).decode(wds.handle_extension("png", decode_image))
    with pytest.raises(ShardError, match=r"train-000000\.tar: sample t/\w+: member \w+\.png is a ndarray, not the "
                       r"PNG's bytes") as err:
        list(decoded.map(decode_sample))
    assert "\n" not in str(err.value) and "damaged" not in str(err.value)


# ------------------------------------------------------------------------------ old shards, bad metadata


def test_format_1_samples_still_decode(tmp_path):
    """A sample as format 1 wrote it (null for unknown, keys missing) decodes to the same Python view."""
    sharp = np.full((8, 8, 3), 40000, np.uint16)
    old = {"source": "dpdd", "split": "train", "scene": "a", "f_number": None, "camera": None, "bit_depth": 16,
           "align": {"method": "none", "score": None, "matrix": None}, "gain": None, "origin": ["a.png"]}
    members = encode_members(sharp, sharp, None, {})
    members["json"] = json.dumps(old).encode()
    sample = decode_sample({"__key__": "dpdd/a", **members})
    meta = sample["meta"]
    assert set(meta) == set(metadata.SCHEMA) and sample["blur"].dtype == np.uint16
    assert meta["f_number"] is None and meta["camera"] is None and meta["lens"] is None and meta["blurmask"] is None
    assert meta["align"]["method"] == "none" and meta["align"]["matrix"] is None and meta["align"]["score"] is None
    assert (meta["source"], meta["bit_depth"], meta["origin"]) == ("dpdd", 16, ["a.png"])
    w = AtomicShard(tmp_path, "train-000000")
    w.write("dpdd/a", members)
    url = str(w.commit())
    import datasets

    ds = datasets.load_dataset("webdataset", data_files={"train": [url]}, split="train", features=hf_features(),
                               cache_dir=str(tmp_path / "hf"))
    assert ds[0]["json"]["f_number"] is None and hf_decode(ds[0])["meta"]["align"]["method"] == "none"


def test_a_rerun_rewrites_the_shards_of_an_older_format(folders, tmp_path, monkeypatch):
    from defocuskit.data import shards

    opts = IngestOptions(out=str(tmp_path / "out"), workers=0, split_by="train", register="none")
    sources = {"pairs": folders["pairs"].parent / "mine"}
    monkeypatch.setattr(shards, "FORMAT", 1)  # as if written before the format bump
    assert run_ingest(sources, opts, progress=False)["run"]["shards_written"] == 1
    monkeypatch.undo()
    again = run_ingest(sources, opts, progress=False)
    assert again["run"]["shards_written"] == 1 and again["format"] == 2
    assert run_ingest(sources, opts, progress=False)["run"]["shards_skipped"] == 1


def test_the_writer_rejects_metadata_outside_the_schema():
    small = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(metadata.MetadataError, match=r"\['exif_date'\] are not in the shard schema"):
        encode_members(small, small, None, {"exif_date": "2024"})
    with pytest.raises(metadata.MetadataError, match=r"metadata f_number: expected a number .* got '2\.8' \(str\)"):
        encode_members(small, small, None, {"f_number": "2.8"})
    with pytest.raises(metadata.MetadataError, match=r"metadata align: sub-keys \['warp'\]"):
        encode_members(small, small, None, {"align": {"warp": 1}})
    with pytest.raises(metadata.MetadataError, match=r"metadata iso: expected a whole number"):
        encode_members(small, small, None, {"iso": 100.5})
    with pytest.raises(metadata.MetadataError, match=r"metadata gain: expected a number >= 0"):
        encode_members(small, small, None, {"gain": -0.5})
    view = metadata.empty_meta(f_number=np.float32(2.0), iso=200.0, align={"method": "ecc", "raw_score": -0.25,
                                                                           "quality_tiles": 0})
    stored = metadata.to_stored(view)
    assert metadata.to_stored(stored) == stored and stored["iso"] == 200 and type(stored["iso"]) is int
    back = metadata.to_python(stored)
    assert back["f_number"] == 2.0 and back["align"]["raw_score"] == -0.25 and back["align"]["matched_blur_px"] is None
