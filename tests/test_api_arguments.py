"""The Python API's arguments other than the image, given carelessly: a wrong type is a TypeError naming the argument
(not pathlib's or huggingface_hub's error from deep inside), an empty name is refused (it stood for the working
folder), and nothing is written or uploaded before the refusal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import defocuskit


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    from test_infer import _export_nafnet

    return _export_nafnet(tmp_path_factory.mktemp("model") / "m.safetensors", identity=False)


@pytest.fixture(scope="module")
def model(model_file) -> defocuskit.DeblurModel:
    return defocuskit.load(model_file, device="cpu")


def test_an_empty_report_is_not_the_working_folders_report(model, model_file, tmp_path, monkeypatch) -> None:
    """report="" read ./report.json: a report of the working folder went into the card without a word."""
    from test_api import _report

    monkeypatch.chdir(_report(tmp_path, model_file).parent)  # a report of this model in the working folder
    for bad in ("", " "):
        with pytest.raises(ValueError, match=r"^report=: an empty name"):
            model.save_pretrained(tmp_path / "hub", report=bad)
    with pytest.raises(TypeError, match=r"^report=: .* got int 3"):  # was pathlib's 'expected str, bytes or ...'
        model.save_pretrained(tmp_path / "hub", report=3)
    assert not (tmp_path / "hub").exists()


def test_a_license_that_is_no_hub_license_id_is_refused(model, tmp_path) -> None:
    """license=3 was written to the card's front matter as `license: 3`; "" was read as not given."""
    with pytest.raises(TypeError, match=r"^license=: a Hub license id .* got 3"):
        model.save_pretrained(tmp_path / "hub", license=3)
    for bad in ("", "mit\nevil: 1"):
        with pytest.raises(ValueError, match=r"^license=.*: not a Hub license id"):
            model.save_pretrained(tmp_path / "hub", license=bad)
    assert not (tmp_path / "hub").exists()
    card = (model.save_pretrained(tmp_path / "ok", license="apache-2.0") / "README.md").read_text()
    assert "license: apache-2.0" in card


def test_push_to_hub_names_a_repo_id_that_is_not_one(model) -> None:
    """repo_id=None was 'could not reach the Hub (TypeError: ...); check the network', after the folder was saved."""
    for bad, error in ((None, TypeError), (3, TypeError), ("", ValueError), ("  ", ValueError)):
        with pytest.raises(error, match=r"^push_to_hub: repo_id= is the Hub model repo's id"):
            model.push_to_hub(bad)
    with pytest.raises(TypeError, match=r"^push_to_hub: private= is True or False, got 'no'"):  # was sent as it is
        model.push_to_hub("someone/model", private="no")
    with pytest.raises(TypeError, match=r"^token=: .* got int"):  # was 'could not reach the Hub'
        model.push_to_hub("someone/model", token=3)


def test_load_names_a_cache_dir_or_token_of_the_wrong_kind(model_file) -> None:
    """cache_dir=3 was pathlib's TypeError; cache_dir="" downloaded a Hub model into the working folder."""
    with pytest.raises(TypeError, match=r"^cache_dir=: .* got int 3"):
        defocuskit.load("someone/some-model", cache_dir=3)
    with pytest.raises(ValueError, match=r"^cache_dir=: an empty name"):
        defocuskit.load("someone/some-model", cache_dir="")
    with pytest.raises(TypeError, match=r"^token=: .* got int"):
        defocuskit.load("someone/some-model", token=3)


def test_a_coc_map_of_no_numbers_is_refused_naming_coc(tmp_path) -> None:
    """A string array failed inside numpy ('could not convert string to float'), a complex map lost its imaginary
    part with only a warning, a masked map its mask."""
    from test_api import _export

    hidd = defocuskit.load(_export(tmp_path / "hidd.safetensors", "hidd-tiny.yaml"), device="cpu")
    x = np.zeros((16, 24, 3), np.uint8)
    for bad in (np.full((16, 24), "1"), np.ones((16, 24), complex), np.full((16, 24), None),
                np.ma.masked_array(np.ones((16, 24)), mask=np.eye(16, 24, dtype=bool))):
        with pytest.raises(TypeError, match=r"^coc=: a map of numbers"):
            hidd.deblur(x, coc=bad, steps=1)
    assert hidd.deblur(x, coc=np.ones((16, 24), np.uint8), steps=1).shape == x.shape  # integers are numbers


def test_ensemble_is_a_whole_number(model) -> None:
    """ensemble=4.0 ran while tile=32.0 is refused; ensemble="4" was a ValueError."""
    x = np.zeros((16, 16, 3), np.float32)
    for bad in (4.0, "4", True):
        with pytest.raises(TypeError, match=r"^ensemble= must be a whole number"):
            model.deblur(x, ensemble=bad)
    assert model.deblur(x, ensemble=np.int64(4)).shape == x.shape


def test_yes_or_no_keywords_take_true_or_false_only(model, tmp_path) -> None:
    """progress='no' was read as true (a bar drawn), progress=0 as false, silently: every bool keyword of the public
    API is True or False (push_to_hub's private= is checked above)."""
    from test_api import _export

    x = np.zeros((16, 16, 3), np.float32)
    coc = defocuskit.load(_export(tmp_path / "coc.safetensors", "defocus-map-tiny.yaml"), device="cpu")
    for bad in ("no", "False", 0, 1, None):
        with pytest.raises(TypeError, match=rf"^progress= must be True or False, got {re.escape(repr(bad))}$"):
            model.deblur(x, progress=bad)
        with pytest.raises(TypeError, match=r"^progress= must be True or False"):
            coc.coc_map(x, progress=bad)
    assert model.deblur(x, progress=np.bool_(False)).shape == x.shape


def test_a_nan_gate_smooth_is_refused_with_or_without_a_gate(model) -> None:
    """gate_smooth=nan was accepted where no gate is used (focus_gate=0, or none), refused only beside a gate."""
    x = np.zeros((16, 16, 3), np.float32)
    for extra in ({}, {"focus_gate": 0}, {"coc": "edge", "focus_gate": 2}):
        for bad in (float("nan"), -1.0, float("inf")):
            with pytest.raises(ValueError, match=r"^gate_smooth= must be a number of pixels >= 0 .*smooth_px"):
                model.deblur(x, gate_smooth=bad, **extra)
    assert model.deblur(x, coc="edge", focus_gate=2, gate_smooth=0.0).shape == x.shape  # without a gate: refused


def test_load_refuses_an_empty_revision(model_file) -> None:
    """revision="" was sent to the Hub as the revision (a Hub id), or called a revision given for a local file."""
    for source in ("someone/some-model", model_file):
        for bad in ("", "  "):
            with pytest.raises(ValueError, match=r"^load: revision= is an empty name"):
                defocuskit.load(source, revision=bad)
