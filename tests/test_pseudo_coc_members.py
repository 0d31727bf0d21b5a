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
