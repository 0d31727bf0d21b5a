"""A researcher's own camera files through `deblur` as `ingest --raw-dir` reads them: the EXIF f-number that
`--coc fnumber` uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from defocuskit.data.sources.fnumbers import GivenFNumbers, resolve_f_number
from defocuskit.inference.files import _f_number_meta, deblur_files
from defocuskit.io.raw import read_exif
from tests.test_infer import _export_nafnet
from tests.test_sensor_width import _jpeg


def test_deblur_does_not_use_an_exif_f_number_ingest_rejects(tmp_path: Path) -> None:
    # a corrupt FNumber of f/0.5: ingest rejects the shot ("implausible"), deblur --coc fnumber used it, a CoC 5.6x
    # that of f/2.8, without a word
    (tmp_path / "in").mkdir()
    path = _jpeg(tmp_path / "in" / "shot.jpg", focal=50.0, f_number=0.5)
    assert read_exif(path)["f_number"] == 0.5
    assert "implausible" in resolve_f_number(path, read_exif(path), tmp_path, GivenFNumbers())
    assert _f_number_meta(path, None)["f_number"] is None
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    with pytest.raises(ValueError, match=r"shot\.jpg \(its f/0\.5 is implausible: lenses span f/0\.7 to f/64\); "
                                         r"give --f-number N"):
        deblur_files([path], ckpt, tmp_path / "out", coc="fnumber", focus_gate=1.0, progress=False)
    assert not (tmp_path / "out").exists()
    (written,) = deblur_files([path], ckpt, tmp_path / "out", coc="fnumber", f_number=2.8, focus_gate=1.0,
                              progress=False)
    assert written.is_file()
