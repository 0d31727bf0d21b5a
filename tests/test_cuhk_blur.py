"""`ingest --cuhk-blur`: CUHK blur detection photos as blur-map samples (blur.png + blurmask.png, no sharp.png).

The fake dataset: textured photos with one region blurred (Gaussian, sigma 3) and a binary mask marking
that region in one polarity or the other; every test runs the real CLI (or the real readers).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.data import reader, shards
from defocuskit.data.folder import REJECTS
from defocuskit.data.metadata import META_KEYS
from defocuskit.data.postprocess import postprocess
from defocuskit.data.sample import IngestOptions, Sample
from defocuskit.data.sources import cuhk_blur
from defocuskit.io.images import write_image

H, W = 60, 80

def _region(i: int) -> np.ndarray:
    """The blurred region of photo i (bool (H, W)), a different shape each time, 20-60 % of the pixels."""
    yy, xx = np.mgrid[:H, :W]
    shapes = [xx < W // 2, yy < H // 3, (yy - H / 2) ** 2 + (xx - W / 2) ** 2 < 22 ** 2, xx > 2 * W // 3,
              (xx < W // 2) & (yy < H // 2) | (yy > 3 * H // 4)]
    return shapes[i % len(shapes)]

def _photo(i: int, blurred: np.ndarray) -> np.ndarray:
    """A textured RGB uint8 photo whose `blurred` pixels are Gaussian-blurred (sigma 3)."""
    rng = np.random.default_rng(100 + i)
    texture = cv2.resize(rng.integers(0, 256, (H // 2, W // 2, 3), dtype=np.uint8), (W, H),
                         interpolation=cv2.INTER_NEAREST)
    soft = cv2.GaussianBlur(texture, (0, 0), 3)
    return np.where(blurred[..., None], soft, texture)

def _mask(region: np.ndarray, white_is: str) -> np.ndarray:
    white = region if white_is == "blurred" else ~region
    return np.where(white, 255, 0).astype(np.uint8)

def make_cuhk(root: Path, white_is: str, n: int = 5, image_dir: str = "image", ext: str = ".jpg",
              extras: bool = True) -> dict[str, np.ndarray]:
    """A fake CUHK folder; returns stem -> the blurred region of every photo that should be ingested."""
    expected = {}
    for i in range(n):
        stem = f"out_of_focus{i + 1:04d}"
        region = _region(i)
        write_image(root / image_dir / f"{stem}{ext}", _photo(i, region))
        write_image(root / "gt" / f"{stem}.png", _mask(region, white_is))
        expected[stem] = region
    if extras:
        for i in (1, 2):  # motion photos, with masks, as the dataset ships them
            write_image(root / image_dir / f"motion{i:04d}{ext}", _photo(10 + i, _region(i)))
            write_image(root / "gt" / f"motion{i:04d}.png", _mask(_region(i), white_is))
        write_image(root / image_dir / f"out_of_focus0100{ext}", _photo(20, _region(0)))  # no mask
        write_image(root / "gt" / "out_of_focus0101.png", _mask(_region(1), white_is))  # no photo
        write_image(root / image_dir / f"out_of_focus0102{ext}", _photo(21, _region(0)))  # grey mask
        grey = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
        write_image(root / "gt" / "out_of_focus0102.png", grey)
        write_image(root / image_dir / f"out_of_focus0103{ext}", _photo(22, _region(0)))  # mask of another size
        write_image(root / "gt" / "out_of_focus0103.png", np.zeros((H + 4, W), np.uint8))
    return expected

def ingest(*args: str) -> object:
    return CliRunner().invoke(app, ["ingest", "--workers", "0", *args])

def samples_of(folder: Path) -> dict[str, dict]:
    return {s["key"]: s for s in reader.iter_samples(folder)}

def rejects_of(folder: Path) -> dict[str, str]:
    lines = (folder / REJECTS).read_text().splitlines()
    return {Path(r["file"]).name: r["reason"] for r in map(json.loads, lines)}

@pytest.mark.parametrize("white_is, image_dir, ext", [("blurred", "image", ".jpg"), ("sharp", "images", ".JPG")])
def test_auto_polarity_blur_maps_and_rejects(tmp_path, white_is, image_dir, ext):
    expected = make_cuhk(tmp_path / "cuhk", white_is, image_dir=image_dir, ext=ext)
    out = tmp_path / "out"
    result = ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(out))
    assert result.exit_code == 0, result.output
    for url in reader.shard_urls(out):
        with tarfile.open(url) as tar:
            members = {name.split(".", 1)[1] for name in tar.getnames()}
        assert members == {"blur.png", "blurmask.png", "json"}
    samples = samples_of(out)
    assert set(samples) == {f"cuhk-blur/{stem}" for stem in expected}
    record = {"white_is": white_is, "decided_by": "auto"}
    for stem, region in expected.items():
        s = samples[f"cuhk-blur/{stem}"]
        assert s["sharp"] is None and s["blur"].shape == (H, W, 3) and s["blur"].dtype == np.uint8
        assert s["blurmask"].dtype == np.uint8 and np.array_equal(s["blurmask"], np.where(region, 255, 0))
        meta = s["meta"]
        assert set(META_KEYS) <= set(meta)
        assert (meta["source"], meta["split"], meta["scene"]) == ("cuhk-blur", "train", stem)
        assert meta["blur_type"] == "defocus"
        assert all(meta[k] is None for k in ("f_number", "ref_f_number", "gain"))
        assert meta["align"]["method"] == "none" and meta["align"]["score"] is None  # nothing registered
        assert (meta["bit_depth"], meta["height"], meta["width"]) == (8, H, W)
        assert meta["origin"] == [f"{image_dir}/{stem}{ext}", f"gt/{stem}.png"]
        assert {k: meta["blurmask"][k] for k in record} == record and meta["blurmask"]["evidence"] >= 0.7
    manifest = reader.read_manifest(out)
    assert manifest["counts"]["by_source"] == {"cuhk-blur": len(expected)}
    assert manifest["options"]["cuhk_blurmask"]["white_is"] == white_is
    assert manifest["options"]["cuhk_white_is"] == "auto"
    rejects = rejects_of(out)
    assert rejects[f"motion0001{ext}"] == rejects[f"motion0002{ext}"] == cuhk_blur.MOTION_REASON
    assert "no mask" in rejects[f"out_of_focus0100{ext}"] and "no image" in rejects["out_of_focus0101.png"]
    assert rejects["out_of_focus0102.png"].startswith("not a binary blur map")
    reason = rejects["out_of_focus0103.png"]
    assert "size mismatch" in reason and f"out_of_focus0103{ext}" in reason and f"{W}x{H + 4}" in reason
    assert len(rejects) == 6

def test_white_is_option_forces_the_polarity(tmp_path):
    expected = make_cuhk(tmp_path / "cuhk", "blurred", n=3, extras=False)
    out = tmp_path / "out"
    result = ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(out), "--cuhk-white-is", "sharp")
    assert result.exit_code == 0, result.output
    for stem, region in expected.items():
        s = samples_of(out)[f"cuhk-blur/{stem}"]
        assert np.array_equal(s["blurmask"], np.where(region, 0, 255))  # as told, even though it is wrong
        assert s["meta"]["blurmask"] == {"white_is": "sharp", "decided_by": "option", "evidence": None}
    assert reader.read_manifest(out)["options"]["cuhk_blurmask"]["decided_by"] == "option"
    bad = ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(tmp_path / "x"), "--cuhk-white-is", "white")
    assert bad.exit_code != 0

def test_a_mask_stored_as_zero_and_one_reads_as_black_and_white(tmp_path):
    """Label maps saved as 0 / 1 (8- or 16-bit) were read as all black: 'all in focus', without a word."""
    expected = make_cuhk(tmp_path / "cuhk", "blurred", n=4, extras=False)
    for i, path in enumerate(sorted((tmp_path / "cuhk" / "gt").glob("*.png"))):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127
        cv2.imwrite(str(path), mask.astype(np.uint16 if i % 2 else np.uint8))
    out = tmp_path / "out"
    result = ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(out))
    assert result.exit_code == 0, result.output
    for stem, region in expected.items():
        assert np.array_equal(samples_of(out)[f"cuhk-blur/{stem}"]["blurmask"], np.where(region, 255, 0))


def test_wrong_layout_fails_before_any_work(tmp_path):
    write_image(tmp_path / "ded" / "sharp" / "sharp_1.jpg", _photo(0, _region(0)))
    write_image(tmp_path / "ded" / "image" / "image_1.jpg", _photo(0, _region(0)))
    out = tmp_path / "out"
    result = ingest("--cuhk-blur", str(tmp_path / "ded"), "--out", str(out))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"--cuhk-blur {tmp_path / 'ded'}" in text and "image/ (or images/) and gt/" in text
    assert "no gt/" in text and "found image/ (1 file), sharp/ (1 file)" in text and "DED (--ded)" in text
    assert not list(out.glob("*.tar")) and not (out / reader.MANIFEST).exists()

def test_ambiguous_or_missing_evidence_asks_for_the_option(tmp_path):
    root = tmp_path / "mixed"
    make_cuhk(root, "blurred", n=4, extras=False)
    for i in (2, 3):  # half the masks in the other polarity: a 50 % vote
        write_image(root / "gt" / f"out_of_focus{i + 1:04d}.png", _mask(_region(i), "sharp"))
    result = ingest("--cuhk-blur", str(root), "--out", str(tmp_path / "a"))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "--cuhk-white-is blurred" in text and "--cuhk-white-is sharp" in text and "50%" in text
    assert not list((tmp_path / "a").glob("*.tar"))
    few = tmp_path / "few"
    make_cuhk(few, "blurred", n=2, extras=False)
    result = ingest("--cuhk-blur", str(few), "--out", str(tmp_path / "b"))
    assert result.exit_code == 1 and "only 2 photo(s)" in " ".join(result.output.split())
    ok = ingest("--cuhk-blur", str(few), "--out", str(tmp_path / "c"), "--cuhk-white-is", "blurred")
    assert ok.exit_code == 0, ok.output

def test_test_fraction_splits_deterministically(tmp_path):
    make_cuhk(tmp_path / "cuhk", "blurred", n=12, extras=False)
    splits = []
    for name in ("a", "b"):
        result = ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(tmp_path / name),
                        "--cuhk-white-is", "blurred", "--cuhk-test-fraction", "0.5", "--seed", str(len(name) * 7))
        assert result.exit_code == 0, result.output
        splits.append({k: s["meta"]["split"] for k, s in samples_of(tmp_path / name).items()})
    assert splits[0] == splits[1] and set(splits[0].values()) == {"train", "test"}
    assert all(split == cuhk_blur.split_of(k.split("/")[1], 0.5) for k, split in splits[0].items())
    assert {p.name.split("-")[0] for p in (tmp_path / "a").glob("*.tar")} == {"train", "test"}
    assert reader.read_manifest(tmp_path / "a")["counts"]["by_split"] == {
        s: list(splits[0].values()).count(s) for s in ("test", "train")}
    everything = [cuhk_blur.split_of(f"out_of_focus{i:04d}", 0.0) for i in range(50)]
    assert set(everything) == {"train"}
    assert ingest("--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(tmp_path / "c"),
                  "--cuhk-test-fraction", "1.0").exit_code != 0

def test_decode_sample_round_trip_and_missing_members():
    blur = _photo(0, _region(0))
    mask = np.where(_region(0), 255, 0).astype(np.uint8)
    members = shards.encode_members(None, blur, None, {"source": "cuhk-blur"}, blurmask=mask)
    assert set(members) == {"blur.png", "blurmask.png", "json"}
    s = reader.decode_sample({"__key__": "cuhk-blur/x", **members})
    assert s["sharp"] is None and s["coc"] is None and np.array_equal(s["blur"], blur)
    assert s["blurmask"].dtype == np.uint8 and s["blurmask"].shape == (H, W) and np.array_equal(s["blurmask"], mask)
    paired = reader.decode_sample({"__key__": "p", **shards.encode_members(blur, blur, None, {})})
    assert paired["blurmask"] is None and paired["sharp"] is not None
    for partial in ({"blur.png": members["blur.png"]}, {"blurmask.png": members["blurmask.png"]}, {}):
        with pytest.raises(reader.ShardError, match="sample cuhk-blur/y: no sharp.png"):
            reader.decode_sample({"__key__": "cuhk-blur/y", "json": b"{}", **partial})

def test_postprocess_keeps_blur_maps_aligned_and_binary():
    mask = np.where(_region(2), 255, 0).astype(np.uint8)
    s = Sample(key="cuhk-blur/a", sharp=None, blur=_photo(0, _region(2)), meta={}, blurmask=mask)
    out, dropped = postprocess(s, IngestOptions(max_side=40, patch=16, stride=8, min_sharpness=0.5, bit_depth="16"))
    assert dropped == 0 and len(out) == 2 * 4  # 40x30 -> 2x4 patches, none judged flat (no sharp reference)
    for p in out:
        assert p.sharp is None and p.blur.dtype == np.uint16 and p.blurmask.shape == p.blur.shape[:2] == (16, 16)
        assert set(np.unique(p.blurmask)) <= {0, 255}

def test_mixed_folder_evaluates_inspects_and_streams(tmp_path):
    from defocuskit.config.recipe import DataConfig
    from defocuskit.data.tar_index import index_shard
    from defocuskit.train.stream import ShardStream

    rng = np.random.default_rng(0)
    for i in range(2):  # a tiny RealDOF: aligned test pairs
        sharp = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write_image(tmp_path / "realdof" / "target" / f"{i:03d}.png", sharp)
        write_image(tmp_path / "realdof" / "source" / f"{i:03d}.png", cv2.GaussianBlur(sharp, (5, 5), 1.5))
    make_cuhk(tmp_path / "cuhk", "blurred", n=6, extras=False)
    out = tmp_path / "out"
    result = ingest("--realdof", str(tmp_path / "realdof"), "--cuhk-blur", str(tmp_path / "cuhk"), "--out", str(out),
                    "--cuhk-test-fraction", "0.6", "--shard-size", "64")
    assert result.exit_code == 0, result.output
    n_test_maps = sum(cuhk_blur.split_of(f"out_of_focus{i + 1:04d}", 0.6) == "test" for i in range(6))
    assert n_test_maps > 0  # the test split mixes pairs and blur maps
    report = tmp_path / "report"
    res = CliRunner().invoke(app, ["eval", "--shards", str(out), "--baseline", "input", "--report", str(report),
                                   "--no-by-aperture"])
    assert res.exit_code == 0, res.output
    rep = json.loads((report / "report.json").read_text())
    assert {i["key"] for i in rep["images"]} == {"realdof/test/000", "realdof/test/001"}
    assert f"{n_test_maps} blur-map sample(s) (no sharp.png reference) were not scored" in rep["notes"]
    res = CliRunner().invoke(app, ["inspect", str(out), "--n", "8"])
    assert res.exit_code == 0, res.output
    for url in reader.shard_urls(out):
        entries = index_shard(url)
        maps = [e for e in entries if e.key.startswith("cuhk-blur/")]
        assert all(e.has(("blur.png", "blurmask.png")) and not e.has(("sharp.png",)) for e in maps)
    stream = ShardStream(reader.shard_urls(out), DataConfig(image_size=16, num_workers=0, shuffle_buffer=4),
                         "sharp", 0, 0, 1)
    usable = [e.key for url in stream.urls for e in stream.usable(url)]
    assert sorted(usable) == ["realdof/test/000", "realdof/test/001"]
    assert {s["key"] for _, s in zip(range(4), stream)} <= set(usable)

def test_names_that_differ_in_dots_spaces_or_encoding_stay_distinct_keys(tmp_path):
    import os

    from defocuskit.data.pairs import key_part

    assert key_part("out_of_focus0001") == "out_of_focus0001"  # safe names are kept as they are
    keys = {key_part(n) for n in ("a b", "a_b", "a.b", "a  b", " a b")}
    assert len(keys) == 5 and all("." not in k and " " not in k for k in keys)
    raw_name = b"caf\xe9".decode("utf-8", "surrogateescape")  # a Latin-1 file name on a UTF-8 system
    assert key_part(raw_name).startswith("caf-") and key_part(raw_name).encode("utf-8")

    root = tmp_path / "cuhk"
    make_cuhk(root, "blurred", n=3, extras=False)
    for i, stem in enumerate(("a b", "a_b", "a.b")):

        write_image(root / "image" / f"{stem}.jpg", _photo(i, _region(i)))
        write_image(root / "gt" / f"{stem}.png", _mask(_region(i), "blurred"))
    latin1 = os.fsencode(root / "image") + b"/caf\xe9.jpg"
    with open(latin1, "wb") as f:
        f.write((root / "image" / "a_b.jpg").read_bytes())
    with open(os.fsencode(root / "gt") + b"/caf\xe9.png", "wb") as f:
        f.write((root / "gt" / "a_b.png").read_bytes())
    result = ingest("--cuhk-blur", str(root), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    keys = sorted(samples_of(tmp_path / "out"))
    assert len(keys) == 7 and len(set(keys)) == 7, keys  # 3 + a b, a_b, a.b + the Latin-1 name
    assert all(k.encode("utf-8") for k in keys)
