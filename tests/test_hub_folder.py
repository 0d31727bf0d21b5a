"""A save_pretrained folder read back (io/hub.read_folder): its config.json vouches for the model file beside it, and
an edited or damaged config.json is refused in one line naming it, never read as "no config"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

import defocuskit
from defocuskit.train.checks import TrainingError
from defocuskit.train.init import init_provenance


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    from test_infer import _export_nafnet

    model = defocuskit.load(_export_nafnet(tmp_path / "m.safetensors", identity=False), device="cpu")
    return model.save_pretrained(tmp_path / "hub")


def _edit(folder: Path, dst: Path, **changes) -> Path:
    """A copy of the folder with config.json's fields changed (None: removed)."""
    shutil.copytree(folder, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _refused(source: Path, match: str) -> None:
    """load and train.init_from both refuse `source` in one line matching `match`."""
    with pytest.raises(ValueError, match=match) as info:
        defocuskit.load(source, device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(TrainingError, match="train.init_from: .*" + match):
        init_provenance(str(source))


def test_config_without_the_model_files_sha256_is_refused(folder, tmp_path):
    """Without `sha256` any weights beside config.json loaded: another model's of the same method, silently."""
    x = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    assert np.array_equal(defocuskit.load(folder, device="cpu").deblur(x),
                          defocuskit.load(folder / "model.safetensors", device="cpu").deblur(x))
    swapped = _edit(folder, tmp_path / "swapped", sha256=None)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) * 0 for k in f.keys()}
    (swapped / "model.safetensors").unlink()
    save_file(tensors, str(swapped / "model.safetensors"), metadata=meta)
    _refused(swapped, r"swapped/config\.json: records no SHA-256 of model\.safetensors \(its 'sha256' is None\)")
    _refused(_edit(folder, tmp_path / "number", sha256=5), r"number/config\.json: records no SHA-256")
    _refused(_edit(folder, tmp_path / "nomethod", method=None), r"nomethod/config\.json: names no method")


def test_a_config_json_that_cannot_be_read_is_named(folder, tmp_path):
    """Bytes that are not UTF-8 were a bare UnicodeDecodeError naming no file; a folder named config.json was
    passed over as if there were no config."""
    binary = _edit(folder, tmp_path / "binary")
    (binary / "config.json").write_bytes(b"\xff\xfe\x00{")
    _refused(binary, r"binary/config\.json: not valid JSON \('utf-8' codec can't decode")
    hollow = _edit(folder, tmp_path / "hollow")
    (hollow / "config.json").unlink()
    (hollow / "config.json").mkdir()
    _refused(hollow, r"hollow/config\.json: cannot be read")
    bare = _edit(folder, tmp_path / "bare")
    (bare / "config.json").unlink()  # a folder of one's own with only the model file: loads, unvouched
    assert defocuskit.load(bare, device="cpu").method == "nafnet"


def test_save_pretrained_into_a_file_name_makes_no_folder_of_it(folder, tmp_path):
    """save_pretrained("out/model.safetensors") made a folder named model.safetensors; an existing file is kept."""
    model = defocuskit.load(folder, device="cpu")
    for name in ("out/model.safetensors", "out/config.json"):
        with pytest.raises(ValueError, match=rf"save_pretrained: .*{name} names a file; it writes a folder"):
            model.save_pretrained(tmp_path / name)
    assert not (tmp_path / "out").exists()
    mine = tmp_path / "mine.safetensors"
    mine.write_text("my notes")
    with pytest.raises(ValueError, match="mine.safetensors names a file"):
        model.save_pretrained(mine)
    assert mine.read_text() == "my notes"
    again = model.save_pretrained(folder)
    assert defocuskit.load(again, device="cpu").method == "nafnet"


def test_save_pretrained_below_a_file_names_that_file(folder, tmp_path):
    """save_pretrained("afile/sub") where afile is a file was a plain NotADirectoryError: [Errno 20]."""
    model = defocuskit.load(folder, device="cpu")
    afile = tmp_path / "afile"
    afile.write_text("my notes")
    for target in (afile / "sub", afile / "sub" / "deeper"):
        with pytest.raises(ValueError, match=rf"^save_pretrained: {afile} is a file, not a folder, so {target} "
                                             "cannot be made inside it"):
            model.save_pretrained(target)
    assert afile.read_text() == "my notes"


def test_save_pretrained_refuses_a_model_file_replaced_since_it_was_loaded(folder, tmp_path):
    """save_pretrained copied the file now at the model's path: after the run exported again (or a folder's file was
    swapped), the folder held another model than the one in hand, with that one's license and eval rows."""
    from test_infer import _export_nafnet

    x = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    run = _export_nafnet(tmp_path / "run" / "model.safetensors", identity=True)
    model = defocuskit.load(run, device="cpu")
    _export_nafnet(run, identity=False)  # trained again into the same path
    with pytest.raises(ValueError, match=rf"^{run}: replaced, changed or removed since this model was loaded"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    with pytest.raises(ValueError, match="replaced, changed or removed since"):  # before any upload is tried
        model.push_to_hub("someone/model")
    held = defocuskit.load(folder, device="cpu")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="replaced, changed or removed since"):
        held.save_pretrained(tmp_path / "copy")
    fresh = defocuskit.load(run, device="cpu")  # loaded again: saved, and the folder deblurs as the file does
    saved = defocuskit.load(fresh.save_pretrained(tmp_path / "saved"), device="cpu")
    assert np.array_equal(saved.deblur(x), fresh.deblur(x)) and not np.array_equal(saved.deblur(x), model.deblur(x))
