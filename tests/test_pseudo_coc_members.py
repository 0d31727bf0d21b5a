"""`defocuskit pseudo-coc` writes a copy of its input's samples with a new coc.png: every other member is kept as it
was (before, only blur.png, sharp.png and json were copied, so `ingest --dpdd --dual-pixel` shards lost their
dual-pixel views without a word), the input's own cocsign.png is left out (the pseudo map is unsigned), and the
manifest counts the blurred samples as ingest's does (it said `"blurred": null`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_dual_pixel import make_dpdd
from test_jdrl import jdrl_model_file


def test_pseudo_coc_keeps_every_member_but_the_coc_and_its_sign(tmp_path: Path) -> None:
    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data import reader
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    make_dpdd(tmp_path / "dpdd")
    run_ingest({"dpdd": tmp_path / "dpdd"}, IngestOptions(out=str(tmp_path / "in"), workers=0, dual_pixel=True),
               progress=False)
    manifest = write_pseudo_coc(jdrl_model_file(tmp_path / "jdrl.safetensors"), tmp_path / "in", tmp_path / "out")
    given = {s["key"]: s for s in reader.iter_samples(tmp_path / "in")}
    written = {s["key"]: s for s in reader.iter_samples(tmp_path / "out")}
    assert set(written) == set(given) and len(written) == 5
    for key, s in written.items():
        for member in ("blur", "sharp", "left", "right"):
            assert s[member] is not None and np.array_equal(s[member], given[key][member]), (key, member)
        assert s["coc"].shape == s["blur"].shape[:2] and s["coc_sign"] is None
        assert {k: v for k, v in s["meta"].items() if k not in ("coc_source", "coc_model")} == \
            {k: v for k, v in given[key]["meta"].items() if k not in ("coc_source", "coc_model")}
    assert manifest["counts"]["blurred"] == manifest["counts"]["samples"] == 5


def test_an_input_coc_sign_is_not_kept_beside_the_pseudo_map() -> None:
    from defocuskit.cli.pseudo_coc import kept_members

    raw = {"__key__": "k", "__url__": "u.tar", "blur.png": b"b", "sharp.png": b"s", "coc.png": b"c",
           "cocsign.png": b"+", "left.png": b"l", "right.png": b"r", "json": b"{}"}
    assert kept_members(raw) == {"blur.png": b"b", "sharp.png": b"s", "left.png": b"l", "right.png": b"r"}


def _hand_made_shard(folder: Path, meta: dict, blur: np.ndarray) -> Path:
    """One shard of one pair as an older version or a script wrote it: the given json, the given blur.png."""
    import json

    import webdataset as wds

    from defocuskit.io.images import encode_png

    folder.mkdir(parents=True)
    sharp = np.full((24, 32, 3), 120, np.uint8)
    with wds.TarWriter(str(folder / "train-000000.tar")) as sink:
        sink.write({"__key__": "mine/a", "blur.png": encode_png(blur), "sharp.png": encode_png(sharp),
                    "json": json.dumps(meta).encode()})
    return folder


def test_an_older_inputs_json_is_written_in_the_format_the_output_manifest_names(tmp_path: Path) -> None:
    # a format-1 input (null for unknown) was copied as it was into a folder whose manifest says format 2 (no null)
    import json

    from defocuskit.cli.pseudo_coc import write_pseudo_coc
    from defocuskit.data import metadata, reader

    given = {"source": "mine", "split": "train", "f_number": None, "ref_f_number": 16.0, "focal_length_mm": None,
             "my_note": "kept"}
    blur = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
    shards = _hand_made_shard(tmp_path / "in", given, blur)
    manifest = write_pseudo_coc(jdrl_model_file(tmp_path / "jdrl.safetensors"), shards, tmp_path / "out")
    (raw,) = list(reader.iter_raw(str(tmp_path / "out" / "train-000000.tar")))
    stored = json.loads(raw["json"])
    assert manifest["format"] == metadata.FORMAT and None not in stored.values()
    assert stored == {**metadata.to_stored({**{k: v for k, v in given.items() if k != "my_note"},
                                            "coc_source": "jdrl-reblur", "coc_model": "jdrl.safetensors"}),
                      "my_note": "kept"}
    (sample,) = list(reader.iter_samples(tmp_path / "out"))
    assert sample["meta"]["f_number"] is None and sample["meta"]["ref_f_number"] == 16.0


def test_a_grey_blur_gets_the_map_of_its_rgb_twin(tmp_path: Path) -> None:
    # a grey blur.png crashed coc_map (x.shape[2] of a 2-D array)
    from defocuskit.cli.pseudo_coc import coc_map
    from defocuskit.inference.load import load_model

    _, _, model = load_model(jdrl_model_file(tmp_path / "jdrl.safetensors"), device="cpu", expect_method="jdrl")
    grey = np.random.default_rng(1).integers(0, 255, (24, 32), np.uint8)
    np.testing.assert_array_equal(coc_map(model, grey), coc_map(model, np.repeat(grey[..., None], 3, axis=2)))
