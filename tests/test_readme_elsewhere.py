"""The README's "Reading the shards elsewhere" recipes, run as written, give exactly the arrays defocuskit's own reader
(`decode_sample`, what training and eval read) gives: 8- and 16-bit images in RGB order, grey, blur masks,
dual-pixel views, and coc.png as the CoC in pixels with cocsign.png's sign."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from defocuskit.data.reader import decode_sample, iter_raw, signed_coc
from defocuskit.data.shards import AtomicShard, encode_members
from defocuskit.io.images import decode_image

README = Path(__file__).resolve().parents[1] / "README.md"
H, W = 12, 20


def readme_block(needle: str) -> str:
    """The python block of the README's "Reading the shards elsewhere" part that contains `needle`."""
    part = README.read_text(encoding="utf-8").split("Reading the shards elsewhere", 1)[1].split("\n### ", 1)[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", part, re.S) if needle in b]
    assert len(blocks) == 1, f"README: one python block with {needle!r} expected under 'Reading the shards elsewhere'"
    return blocks[0]


def run_readme_block(needle: str, placeholder: str, url: object) -> dict:
    """The namespace after running that block as written, with its shard pattern `placeholder` replaced by `url`."""
    code = readme_block(needle)
    assert placeholder in code
    ns: dict = {}
    exec(compile(code.replace(placeholder, repr(str(url))), "README.md", "exec"), ns)  # noqa: S102
    return ns


def rgb16(rng: np.random.Generator) -> np.ndarray:
    """16-bit RGB whose channels differ and whose low bytes are not zero (an 8-bit cut or BGR would show)."""
    return (rng.integers(0, 65535, (H, W, 3)) | np.array([1, 3, 5])).astype(np.uint16)


@pytest.fixture
def shard(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """One shard written with the project's writer: a 16-bit pair with a signed CoC (both sides of the focal plane,
    fractions of a pixel) and dual-pixel views, an 8-bit pair with an unsigned CoC (as pseudo-coc writes), a grey
    pair, a sharp-only and a blur-map sample; and the signed CoC maps given to the writer, by key."""
    rng = np.random.default_rng(3)
    signed = np.linspace(-7.3, 5.9, H * W, dtype=np.float32).reshape(H, W)
    unsigned = rng.uniform(0, 40, (H, W)).astype(np.float32)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    mask = np.where(np.arange(W) >= W // 2, 255, 0).astype(np.uint8)[None].repeat(H, 0)
    w = AtomicShard(tmp_path, "train-000000")
    w.write("t/signed", encode_members(rgb16(rng), rgb16(rng), signed, {"source": "t", "f_number": 2.8},
                                       coc_signed=True, views=(rgb16(rng), rgb16(rng))))
    w.write("t/unsigned", encode_members(*(rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2)),
                                         unsigned, {"source": "t"}))
    w.write("t/grey", encode_members(grey, grey // 2, None, {"source": "t"}))
    w.write("t/only", encode_members(rgb16(rng), None, None, {"source": "t"}))
    w.write("t/map", encode_members(None, rgb16(rng)[..., 0].astype(np.uint8), None, {"source": "t"}, blurmask=mask))
    return w.commit(), {"t/signed": signed, "t/unsigned": unsigned}


def _same(got: np.ndarray | None, want: np.ndarray | None, what: str) -> None:
    assert (got is None) == (want is None), what
    if want is not None:
        assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, got.shape, want.dtype)
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_readme_webdataset_recipe_gives_the_readers_arrays(shard):
    pytest.importorskip("webdataset")
    url, truth = shard
    ns = run_readme_block("wds.WebDataset", '"shards/train-{000000..000003}.tar"', url)
    for name, what in (("decode_png", "the PNG decoder (16 bits, RGB) for readers without defocuskit"),
                       ("with_coc", "the pipeline of pairs with their CoC in pixels and its sign")):
        assert name in ns, f"README's webdataset recipe: no {name}, {what}"
    raws = list(iter_raw(str(url)))
    ours = [decode_sample(raw) for raw in raws]
    for raw in raws:  # the README's PNG decoder on every member: decode_image's arrays (16 bits, RGB, grey)
        for member, data in raw.items():
            if member.endswith(".png"):
                _same(ns["decode_png"](data), decode_image(data), f"{raw['__key__']}.{member}")
    pairs = [s for s in ours if s["blur"] is not None and s["sharp"] is not None]
    got = list(ns["pairs"])
    assert len(got) == len(pairs) == 3
    for (blur, sharp, meta), s in zip(got, pairs):
        _same(blur, s["blur"], f"{s['key']} blur")
        _same(sharp, s["sharp"], f"{s['key']} sharp")
        assert meta["source"] == "t"
    with_coc = [s for s in ours if s["coc"] is not None]
    got = list(ns["with_coc"])
    assert len(got) == len(with_coc) == 2
    for (blur, sharp, coc, sign, meta), s in zip(got, with_coc):
        _same(blur, s["blur"], f"{s['key']} blur")
        _same(sharp, s["sharp"], f"{s['key']} sharp")
        _same(coc, s["coc"], f"{s['key']} coc")  # float32 pixels, what training reads
        _same(sign, s["coc_sign"], f"{s['key']} coc_sign")
        signed = coc if sign is None else coc * sign
        np.testing.assert_allclose(signed, signed_coc(s), atol=0)
        want = truth[s["key"]]  # the CoC given to the writer, in pixels, to its 1/256 px rounding
        np.testing.assert_allclose(signed, want, atol=0.5 / 256 + 1e-6)
    assert any(sign is not None and (sign < 0).any() for _, _, _, sign, _ in got)  # the front of the focal plane
    (only,) = list(ns["sharp_only"])
    by_key = {s["key"]: s for s in ours}
    _same(only[0], by_key["t/only"]["sharp"], "t/only sharp")
    (blur_map,) = list(ns["blur_maps"])
    _same(blur_map[1], by_key["t/map"]["blurmask"], "t/map blurmask")


def test_readme_datasets_recipe_gives_the_readers_arrays(shard, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    url, _ = shard
    ns = run_readme_block("load_dataset", '"shards/train-*.tar"', url)
    ours = {s["key"]: s for s in (decode_sample(raw) for raw in iter_raw(str(url)))}
    rows = ns["pairs"].with_transform(ns["hf_decode"])
    assert sorted(rows[i]["key"] for i in range(len(rows))) == ["t/grey", "t/signed", "t/unsigned"]
    for i in range(len(rows)):
        row = rows[i]
        for name in ("sharp", "blur", "coc", "coc_sign", "blurmask", "left", "right"):
            _same(row[name], ours[row["key"]][name], f"{row['key']} {name}")
        assert row["meta"] == ours[row["key"]]["meta"]


def test_readme_says_how_coc_png_and_cocsign_png_are_stored():
    """The member list states the encoding the writer uses (pixels x 256; cocsign 255 behind the focal plane)."""
    part = README.read_text(encoding="utf-8").split("The shards load with `webdataset.WebDataset`", 1)[1]
    text = " ".join(part.split("#### Reading the shards elsewhere", 1)[0].split())
    assert "pixels x 256" in text and "`cocsign.png` (8-bit grey: 255 behind the focal plane, 0 in front)" in text
    members = encode_members(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8),
                             np.array([[-1.5, 0.0], [2.25, 300.0]], np.float32), {"source": "t"}, coc_signed=True)
    np.testing.assert_array_equal(decode_image(members["cocsign.png"]), [[0, 255], [255, 255]])
    np.testing.assert_array_equal(decode_image(members["coc.png"]), [[384, 0], [576, 65535]])  # 300 px: 255.99
