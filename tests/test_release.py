"""Published checkpoints imported (issue 23): the released state dicts' layouts (tests/data/release-*.json, written
by tools/check_release.py from the releases' own modules) filled with random tensors go through the importer
strictly; bad files are refused with what is wrong; the imported model file works wherever a model file does."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import defocuskit
from defocuskit.cli.app import app
from defocuskit.inference.load import load_model
from defocuskit.inference.release import import_release
from defocuskit.io.hub import file_sha256
from defocuskit.io.modelfile import read_model_file
from defocuskit.io.release import ReleaseError, find_state_dict, random_checkpoint, read_checkpoint
from defocuskit.methods import get_method, release_method_names
from defocuskit.methods.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PORTED = ["drbnet", "ifan", "jdrl", "restormer"]  # a manifest tests/data/release-NAME.json each
runner = CliRunner()


def layout(method: str) -> dict:
    return json.loads((DATA / f"release-{method}.json").read_text())["checkpoint"]


def release_file(folder: Path, method: str, edit=None) -> Path:
    """A checkpoint of the release's layout with random tensors (seed 0), `edit`ed in place first."""
    checkpoint = random_checkpoint(layout(method), torch.Generator().manual_seed(0))
    if edit is not None:
        edit(checkpoint)
    path = folder / f"{method}-release.pth"
    torch.save(checkpoint, path)
    return path


def tame(checkpoint: dict) -> None:
    """N(0, 1) weights scaled by 0.5 / sqrt(fan-in) (biases by 0.01), so that the deep per-pixel filtering networks
    (IFAN's 17 IAC iterations, DRBNet's four filter stages) give finite outputs near their input."""
    for key, value in checkpoint.items():
        checkpoint[key] = value * (0.5 / value[0].numel() ** 0.5 if value.dim() > 1 else 0.01)


TAMED = {"drbnet", "ifan"}  # flat state dicts whose N(0, 1) weights would overflow


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(release checkpoint, imported model file) per ported method."""
    folder = tmp_path_factory.mktemp("release")
    out = {}
    for method in PORTED:
        pth = release_file(folder, method, tame if method in TAMED else None)
        import_release(method, pth, folder / f"{method}.safetensors")
        out[method] = (pth, folder / f"{method}.safetensors")
    return out


def test_the_ported_methods_declare_their_release():
    assert release_method_names() == PORTED
    for name in release_method_names():
        release = get_method(name).release
        assert release.protocol.bit_depth == 8 and release.checkpoints.count("https://") == 1


@pytest.mark.parametrize("method", PORTED)
def test_every_released_tensor_lands_once_in_the_port(method, imported):
    pth, model_file = imported[method]
    tensors, meta = read_model_file(model_file)
    released = find_state_dict(read_checkpoint(pth), ("G_state_dict",) if method == "jdrl" else ("params",))
    if method == "jdrl":
        released.update(find_state_dict(read_checkpoint(pth)["Reblur_state_dict"]))
    kept = json.loads(meta["release"])["kept_as_built"]
    port = {k: v for k, v in tensors.items() if k not in kept}
    assert len(port) == len(released)
    # a renaming (and, for JDRL, a reordering of colour channels) keeps every tensor's shape and sum
    key = lambda t: (tuple(sorted(t.shape)), round(float(t.double().sum()), 3))  # noqa: E731
    assert sorted(map(key, port.values())) == sorted(map(key, released.values()))
    assert meta["method"] == method and meta["source_sha256"] == file_sha256(pth)
    release = json.loads(meta["release"])
    assert release["checkpoint"] == pth.name and release["protocol"]["bit_depth"] == 8
    if method == "drbnet":  # run.py loads a plain state dict of DRBNet_single
        assert torch.equal(tensors["drbs.3.features.2.0.weight"], released["img_d1_feature.2.0.weight"])
        assert torch.equal(tensors["drbs.0.residual.2.0.bias"], released["upconv3_res.2.0.bias"])
        assert torch.equal(tensors["decoders.1.0.stem.0.2.weight"], released["upconv2_1.stem.0.2.weight"])
        assert release["protocol"]["crop_multiple"] == 16 and kept == []
    elif method == "ifan":  # the trainer's DeblurNet under DataParallel: Network and the training-only reblurNet
        assert torch.equal(tensors["filter_encoder.3.2.0.weight"], released["Network.kconv4_3.0.weight"])
        assert torch.equal(tensors["decoders.2.1.stem.0.2.bias"], released["Network.upconv1_2.stem.0.2.bias"])
        assert torch.equal(tensors["reblur.body.3.weight"], released["reblurNet.RBF.3.weight"])
        assert release["protocol"]["crop_multiple"] == 8 and kept == []
    elif method == "restormer":
        assert torch.equal(tensors["embed.weight"], released["patch_embed.proj.weight"])
        assert torch.equal(tensors["decoders.2.0.norm1.weight"], released["decoder_level1.0.norm1.body.weight"])
        assert release["protocol"]["padding"] == "reflect" and kept == []
    else:  # the release reads BGR: the first conv's inputs and the last conv's outputs reordered to RGB
        assert torch.equal(tensors["deblur.encoders.0.0.weight"], released["encoder.block1.0.weight"][:, [2, 1, 0]])
        assert torch.equal(tensors["deblur.out.bias"], released["out.0.bias"].flip(0))
        assert torch.equal(tensors["reblur.weights.4.bias"], released["kernel_map_gene.out.bias"])
        assert release["protocol"]["channel_order"] == "bgr" and kept == ["step"]
    load_model(model_file)  # strict, as deblur and eval read it


def test_missing_unexpected_and_misshapen_tensors_are_refused_with_a_list(tmp_path):
    def edit(checkpoint):
        params = checkpoint["params"]
        del params["latent.0.attn.qkv.weight"], params["output.weight"]
        params["bogus.weight"] = torch.zeros(1)

    with pytest.raises(ReleaseError) as caught:
        import_release("restormer", release_file(tmp_path, "restormer", edit), tmp_path / "out.safetensors")
    message = str(caught.value)
    assert "2 missing: latent.0.attn.qkv.weight, output.weight" in message and "1 unexpected: bogus.weight" in message
    assert not (tmp_path / "out.safetensors").exists()

    def reshape(checkpoint):
        checkpoint["G_state_dict"]["module.out.0.weight"] = torch.zeros(3, 32, 3, 3)

    with pytest.raises(ReleaseError, match=r"1 tensors differ in shape .*deblur\.out\.weight \(3, 32, 3, 3\) vs "
                                           r"\(3, 64, 3, 3\)"):
        import_release("jdrl", release_file(tmp_path, "jdrl", reshape), tmp_path / "out.safetensors")


def test_checkpoints_that_need_code_or_are_another_network_are_refused(tmp_path):
    pickled = tmp_path / "pickled.pth"
    torch.save({"params": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1e-4)}, pickled)
    with pytest.raises(ReleaseError, match=r"pickled\.pth: refused: it needs the Python object argparse\.Namespace"):
        read_checkpoint(pickled)
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pickled), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "argparse.Namespace" in result.output
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ReleaseError, match=r"text\.pth: not a readable PyTorch checkpoint: a text file \(it begins "
                                           r"'not a checkpoint'\)"):
        read_checkpoint(tmp_path / "text.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ReleaseError, match=r"empty\.pth: not a readable PyTorch checkpoint: an empty file"):
        read_checkpoint(tmp_path / "empty.pth")
    dual = {"params": {"skip_conv.weight": torch.zeros(96, 48, 1, 1), "output.weight": torch.zeros(3, 96, 3, 3)}}
    torch.save(dual, tmp_path / "dual.pth")
    with pytest.raises(ReleaseError, match="dual.pth: a dual-pixel Restormer"):
        import_release("restormer", tmp_path / "dual.pth", tmp_path / "o.safetensors")
    torch.save({"state_dict": {"shallow_feat1.0.weight": torch.zeros(1)}}, tmp_path / "mprnet.pth")
    with pytest.raises(ReleaseError, match="not JDRL's U-Net .* MPRNet"):
        import_release("jdrl", tmp_path / "mprnet.pth", tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match=r"'nafnet' reads no published checkpoints \(those that do: drbnet, ifan, "
                                         r"jdrl, restormer\)"):
        import_release("nafnet", pickled, tmp_path / "o.safetensors")
    with pytest.raises(ValueError, match=r"'restormr' reads no .* jdrl, restormer\); did you mean 'restormer'"):
        import_release("restormr", pickled, tmp_path / "o.safetensors")  # it listed all eleven methods as "known"
    with pytest.raises(ValueError, match="a PyTorch checkpoint.*import-weights"):  # a .pth given as a model file
        load_model(tmp_path / "mprnet.pth")


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo PWNED",))


def test_a_checkpoint_that_runs_code_is_refused_naming_the_global_never_advising_weights_only_false(
        tmp_path, monkeypatch):
    evil = tmp_path / "evil.pth"
    torch.save({"params": _RunsCode()}, evil)
    with pytest.raises(ReleaseError) as caught:
        read_checkpoint(evil)
    message = str(caught.value)
    assert message.startswith(f"{evil}: refused: it needs the Python object posix.system"), message
    assert "\n" not in message and "False" not in message and "likely succeed" not in message, message
    result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(evil), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "posix.system" in result.output and "likely succeed" not in result.output
    assert not (tmp_path / "o").exists()

    plain = tmp_path / "plain.pth"  # pickle.dump, not torch.save: torch's protocol warning made it three lines
    plain.write_bytes(pickle.dumps({"params": _RunsCode()}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ReleaseError, match=r"plain\.pth: not a readable PyTorch checkpoint: a Python pickle of "
                           r"protocol 4 \(pickle\.dump\), not torch\.save's format"):
            read_checkpoint(plain)

    def new_wording(*args, **kwargs):  # a torch whose wording no pattern knows: refused all the same, in one line
        raise pickle.UnpicklingError("Weights only load failed. Re-running `torch.load` with `weights_only` set to "
                                     "`False` will likely succeed, but it can result in arbitrary code execution.\n\n"
                                     "Some new way of saying what was found.\n\nCheck the documentation")

    monkeypatch.setattr(torch, "load", new_wording)
    with pytest.raises(ReleaseError) as caught:
        read_checkpoint(evil)
    message = str(caught.value)
    assert message.startswith(f"{evil}: refused: ") and "weights_only=True" in message, message
    assert "\n" not in message and "False" not in message and "likely succeed" not in message, message


def test_other_ifan_checkpoints_are_named(tmp_path):
    def dual(checkpoint):  # IFAN_dual.pytorch: the filter encoder reads both dual-pixel views
        checkpoint["module.Network.kconv1_1.0.weight"] = torch.zeros(32, 6, 3, 3)

    with pytest.raises(ReleaseError, match=r"a dual-pixel IFAN \(IFAN_dual\.pytorch"):
        import_release("ifan", release_file(tmp_path, "ifan", dual), tmp_path / "o.safetensors")

    def eight(checkpoint):  # IFAN_8.pytorch (paper Table 4): 8 IAC iterations
        checkpoint["module.Network.F.3.weight"] = torch.zeros(8 * 128 * 7, 128, 1, 1)

    with pytest.raises(ReleaseError, match=r"N = 8 IAC iterations .*overrides=\['model\.iterations=8'\]"):
        import_release("ifan", release_file(tmp_path, "ifan", eight), tmp_path / "o.safetensors")

    def cpu_saved(checkpoint):  # eval.py re-saves the network without DataParallel, and without the RBN
        for key in [k for k in checkpoint if k.startswith("module.reblurNet.")]:
            del checkpoint[key]
        for key in list(checkpoint):
            checkpoint[key.removeprefix("module.")] = checkpoint.pop(key)

    done = import_release("ifan", release_file(tmp_path, "ifan", cpu_saved), tmp_path / "i.safetensors")
    assert done.kept and all(k.startswith("reblur.") for k in done.kept)


def test_the_two_single_image_defocus_deblurring_pth_files_are_told_apart(imported, tmp_path):
    """Restormer and DRBNet both publish a single_image_defocus_deblurring.pth: each import names the other."""
    with pytest.raises(ReleaseError, match="Restormer's single_image_defocus_deblurring.pth .* --method restormer"):
        import_release("drbnet", imported["restormer"][0], tmp_path / "o.safetensors")
    with pytest.raises(ReleaseError, match="DRBNet's single_image_defocus_deblurring.pth .* --method drbnet"):
        import_release("restormer", imported["drbnet"][0], tmp_path / "o.safetensors")

    def dual(checkpoint):  # DeblurNet_dual: the encoder reads both dual-pixel views
        checkpoint["conv1_1.0.weight"] = torch.zeros(32, 6, 3, 3)

    with pytest.raises(ReleaseError, match=r"a dual-pixel DRBNet \(DeblurNet_dual"):
        import_release("drbnet", release_file(tmp_path, "drbnet", dual), tmp_path / "o.safetensors")


def test_containers_are_unwrapped():
    t = torch.zeros(1)
    assert find_state_dict({"module.a": t, "module.b": t}) == {"a": t, "b": t}
    assert find_state_dict({"epoch": 3, "state_dict": {"_orig_mod.a": t}}) == {"a": t}
    assert find_state_dict({"model": {"state_dict": {"a": t}}}) == {"a": t}
    assert find_state_dict({"params_ema": {"e": t}, "params": {"p": t}}) == {"p": t}  # what the release's test reads
    with pytest.raises(ReleaseError, match=r"no state dict under .* \(its keys: 'epoch', 'optimizer'\)"):
        find_state_dict({"epoch": 3, "optimizer": {"lr": 1}})


def test_optimizer_state_in_a_checkpoint_is_read_and_ignored(tmp_path):
    def add_optimizer(checkpoint):  # solver.py also saves G_opt: int keys, tensors, floats, lists
        checkpoint["G_opt"] = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                               "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999), "params": [0]}]}
        del checkpoint["Reblur_state_dict"]  # a file without the reblurring module: kept as built, and said so

    done = import_release("jdrl", release_file(tmp_path, "jdrl", add_optimizer), tmp_path / "j.safetensors")
    assert "reblur.kernel.0.weight" in done.kept and "step" in done.kept and done.parameters == 31_508_398


def test_cli_import_weights(imported, tmp_path):
    pth, _ = imported["restormer"]
    out = tmp_path / "restormer.safetensors"
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "restormer, 494 tensors, 26,126,644 parameters" in result.output and file_sha256(pth) in result.output
    assert "8-bit RGB images (padding: reflect, multiple of 8" in result.output
    result = runner.invoke(app, ["import-weights", "--method", "nafnet", str(pth), "--out", str(tmp_path / "n")])
    assert result.exit_code == 2 and "those that do: drbnet, ifan, jdrl, restormer" in result.output
    before = out.read_bytes()  # an existing file is never replaced without --force
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pth), "--out", str(out)])
    assert result.exit_code == 2 and "exists: give --force" in result.output and out.read_bytes() == before
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pth), "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    for force in ([], ["--force"]):  # a folder as --out: named as a folder, with or without --force
        result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pth), "--out", str(tmp_path),
                                     *force])
        assert result.exit_code == 2 and "is a folder; give the model file's name" in result.output, result.output
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(pth), "--out", f"{tmp_path}/models/"])
    assert result.exit_code == 2 and f"--out {tmp_path}/models/ names a folder; give the model file's name (e.g. " \
        f"{tmp_path}/models/model.safetensors)" in result.output.replace("\n", ""), result.output
    assert not (tmp_path / "models").exists()  # not a model file written under the folder's name


def test_import_weights_never_writes_over_a_file_that_appears_while_it_converts(imported, tmp_path, monkeypatch):
    """--out was looked at once, before the conversion: a file put there meanwhile (the user's, a second import's)
    was replaced without --force, exit 0; now it is kept and named, exit 2 (with --force it is replaced)."""
    from defocuskit.inference import release as release_module

    pth, _ = imported["drbnet"]
    out = tmp_path / "drbnet.safetensors"
    real = release_module.convert_checkpoint

    def convert_then_a_file_appears(*args, **kwargs):
        converted = real(*args, **kwargs)
        out.write_text("the user's own notes\n")
        return converted

    monkeypatch.setattr(release_module, "convert_checkpoint", convert_then_a_file_appears)
    result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(pth), "--out", str(out)])
    assert result.exit_code == 2 and "exists (it appeared while the checkpoint was converted)" in result.output
    assert out.read_text() == "the user's own notes\n" and [p.name for p in tmp_path.iterdir()] == [out.name]
    result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(pth), "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert read_model_file(out)[1]["method"] == "drbnet"


_KILLED_MID_WRITE = ("import os, sys\n"
                     "from defocuskit.io import modelfile\n"
                     "def save_file(tensors, name, metadata=None):\n"
                     "    open(name, 'wb').write(b'half a model')\n"
                     "    os.kill(os.getpid(), 9)\n"
                     "modelfile.save_file = save_file\n"
                     "from defocuskit.cli.app import app\n"
                     "app(['import-weights', '--method', 'drbnet', sys.argv[1], '--out', sys.argv[2]])\n")


def test_a_killed_import_leaves_a_temporary_the_next_import_of_that_file_removes(imported, tmp_path):
    """kill -9 while import-weights wrote its --out left a hidden `.NAME.XXXX.tmp` with a random name that nothing
    listed, so nothing ever removed it; now the temporary is listed in a journal beside the output first, and the next
    import of the same file removes it (and only it: a file of the user's that looks alike is left)."""
    pth, _ = imported["drbnet"]
    out = tmp_path / "drbnet.safetensors"
    run = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(pth), str(out)], cwd=ROOT, capture_output=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == -9, run.stderr[-2000:]
    left = [p.name for p in tmp_path.iterdir()]
    assert not out.exists() and left and all(name.startswith(".drbnet.safetensors.") for name in left), left
    lookalike = tmp_path / ".drbnet.safetensors.0badc0de.defocuskit-partial"  # not the one the journal lists
    lookalike.write_text("the user's\n")
    result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(pth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, lookalike.name])
    assert read_model_file(out)[1]["method"] == "drbnet" and lookalike.read_text() == "the user's\n"


def test_an_import_of_a_file_another_import_writes_stops_naming_it(imported, tmp_path):
    """A second import-weights of the same --out while one writes it stops in one line naming the first; a file of
    the user's at the journal's name is never written over or removed."""
    from defocuskit.io.output_journal import journal_path, journalled_output

    pth, _ = imported["drbnet"]
    out = tmp_path / "drbnet.safetensors"
    with journalled_output(out, "import-weights") as token:
        result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(pth), "--out", str(out)])
        assert result.exit_code == 2 and f"{out}: another import-weights is writing it (pid {os.getpid()}" in \
            result.output.replace("\n", ""), result.output
        assert token in journal_path(out).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    journal_path(out).write_text("my notes\n")
    result = runner.invoke(app, ["import-weights", "--method", "drbnet", str(pth), "--out", str(out)])
    assert result.exit_code == 2 and "in the way of the output's journal and not one a run wrote" in result.output
    assert journal_path(out).read_text() == "my notes\n" and not out.exists()


def test_the_api_loads_a_release_checkpoint_and_deblurs(imported):
    pth, model_file = imported["jdrl"]
    model = defocuskit.load(pth, method="jdrl", device="cpu")  # imported on the fly into a temporary model file
    assert model.method == "jdrl" and model.path.is_file()
    image = np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)
    sharp = model.deblur(image)
    assert sharp.shape == image.shape and sharp.dtype == np.uint8
    assert np.array_equal(sharp, defocuskit.load(model_file, device="cpu").deblur(image))
    folder = model.path.parent
    del model
    assert not folder.exists()  # the temporary import goes with the model


def test_imported_model_files_are_evaluated_by_aperture_and_saved_in_the_hub_layout(imported, tmp_path):
    from test_eval import _write_shards

    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    files = [imported[m][1] for m in ("restormer", *sorted(TAMED))]
    folder = defocuskit.load(files[0], device="cpu").save_pretrained(tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "restormer" and config["datasets"] == ["DPDD"]
    card = (folder / "README.md").read_text()  # the card names the release the weights come from, not a training run
    assert "the authors' release (swz30/Restormer@" in card and "defocuskit did not train them" in card
    assert f"`{imported['restormer'][0].name}`" in card and file_sha256(imported["restormer"][0]) in card
    assert str(imported["restormer"][0].parent) not in card and "trained with defocuskit" not in card
    rng = np.random.default_rng(1)
    pairs = [{"key": f"k{i}", "sharp": rng.integers(0, 256, (21, 30, 3), dtype=np.uint8),  # not multiples of 8
              "blur": rng.integers(0, 256, (21, 30, 3), dtype=np.uint8), "coc": None,
              "meta": {"source": "vabd", "f_number": 2.8 if i else 4.0, "focal_length_mm": 50.0}} for i in range(2)]
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    report = evaluate(shards, files, [], EvalConfig(split="test", by_aperture=True, report_dir=tmp_path / "rep",
                                                    progress=False))
    assert not report["skipped"]
    origin = report["protocol"]["methods"]["restormer"]["origin"]  # the report names where each model comes from
    assert origin["kind"] == "release" and origin["code"].startswith("swz30/Restormer@")
    pth = imported["restormer"][0]
    assert origin["checkpoint"] == pth.name and origin["sha256"] == file_sha256(pth)
    rows = {(r["method"], r["f_number"]): r for r in report["rows"]}
    for path in files:
        for f_number in (2.8, 4.0):
            assert rows[(path.stem, f_number)]["n"] == 1 and np.isfinite(rows[(path.stem, f_number)]["psnr"])
        sharp = defocuskit.load(path, device="cpu").deblur(pairs[0]["blur"])  # the API deblurs with it too
        assert sharp.shape == (21, 30, 3) and sharp.dtype == np.uint8


@pytest.mark.parametrize("method", ["drbnet", "restormer"])
def test_init_from_accepts_an_imported_model(imported, method):
    from defocuskit.eval.validation import make_validator
    from defocuskit.train.init import init_provenance, load_initial_weights

    _, model_file = imported[method]
    recipe = load_recipe(f"{method}-finetune", [f"train.init_from={model_file}"])
    assert recipe.model == load_recipe(method).model and make_validator(recipe) is None  # runs as given
    net = get_method(method).build(recipe.model, recipe.objective, False)
    found, provenance = init_provenance(recipe.train.init_from)
    load_initial_weights(net, found, method, recipe.train.init_from, recipe)  # the release's network, key by key
    tensors, _ = read_model_file(model_file)
    assert all(torch.equal(v, tensors[k]) for k, v in net.state_dict().items())
    assert provenance["init_from_sha256"] == file_sha256(model_file)


def test_the_released_networks_are_the_ports_paper_sizes():
    for name, count in (("restormer", 26_126_644), ("jdrl", 31_508_398), ("ifan", 29_616_681),
                        ("drbnet", 11_689_616)):  # release: tools/check_release.py
        method = get_method(name)
        recipe = load_recipe(method.release.recipe, list(method.release.overrides))
        net = method.build(recipe.model, recipe.objective, False)
        assert sum(p.numel() for p in net.parameters()) == count, name
        if name == "ifan":  # without the training-only RBN: the paper's 10.48 M
            assert count - sum(p.numel() for p in net.reblur.parameters()) == 10_476_996
        if name == "jdrl":
            jdrl = net
    net = jdrl
    assert net.deblur.estimator is None and net.deblur.fusions is None  # VGG_Deblur: no blur map of its own
    assert sum(p.numel() for p in net.deblur.parameters()) == 31_033_411
    from defocuskit.eval.validation import make_validator

    finetune = load_recipe("restormer-finetune")
    assert finetune.model == load_recipe("restormer").model  # an imported release fits it
    assert make_validator(finetune) is None  # runs as given (no data.val, no eval_every)


def test_jdrl_without_a_blur_map_trains_both_stages():
    method = get_method("jdrl")
    with pytest.raises(ValueError, match="map_weight > 0 needs the blur-map estimator"):
        recipe = load_recipe("jdrl-tiny", ["model.blur_map=false"])
        method.build(recipe.model, recipe.objective, True)
    recipe = load_recipe("jdrl-tiny", ["model.blur_map=false", "objective.map_weight=0",
                                       "objective.reblur_start_step=1"])
    torch.manual_seed(0)
    model = method.build(recipe.model, recipe.objective, True)
    sharp = torch.rand(1, 3, 32, 32)
    batch = {"blur": torch.nn.functional.avg_pool2d(sharp, 3, 1, 1), "sharp": sharp}
    for _ in range(2):  # stage 1, then stage 2 (reblur loss, no map loss)
        value = method.loss(model, batch, recipe.objective)
        value.backward()
        assert torch.isfinite(value)
    assert model.deblur(batch["blur"])[1] is None


def test_the_check_tools_einops_stand_in_rearranges_like_einops():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_release", DATA.parents[1] / "tools" / "check_release.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    x = torch.arange(2 * 6 * 3 * 4).reshape(2, 6, 3, 4)
    heads = tool.rearrange(x, "b (head c) h w -> b head c (h w)", head=2)
    assert torch.equal(heads, x.reshape(2, 2, 3, 12))
    assert torch.equal(tool.rearrange(heads, "b head c (h w) -> b (head c) h w", head=2, h=3, w=4), x)
    assert torch.equal(tool.rearrange(x, "b c h w -> b (h w) c"), x.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("name, content, said", [
    ("notes.txt", b"hello world, these are notes\n", r"a text file \(it begins 'hello world, these are notes'\)"),
    ("page.pth", b"<html>Google Drive - virus scan warning</html>", r"a text file \(it begins '<html>Google Drive"),
    ("empty.pth", b"", r"an empty file"),
    ("e.pth", b"e", r"a text file \(it begins 'e'\)"),  # torch raised IndexError: a traceback
    ("cut.pth", b"\x80\x02junk", r"a pickle of protocol 2 \(torch\.save's legacy format\) that is cut short or "
                                 r"damaged"),  # struct.error: a traceback
    ("cut.zip", b"PK\x03\x04junk", r"a zip archive that is cut short or damaged, or not torch\.save's"),
    ("noise.pth", bytes(range(14, 40)), r"neither a zip archive nor a pickle \(it begins 0e 0f 10 11"),
])
def test_a_file_that_is_no_checkpoint_is_named_with_what_it_is_and_what_was_expected(tmp_path, name, content, said):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReleaseError) as caught:
        read_checkpoint(path)
    message = str(caught.value)  # it said "notes.txt: not a readable PyTorch checkpoint (101)"
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint: "), message
    assert re.search(said, message) and "\n" not in message, message
    assert message.endswith("expected a checkpoint torch.save wrote (a zip archive, or a pickle in its legacy "
                            "format)"), message
    result = runner.invoke(app, ["import-weights", "--method", "restormer", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.count(str(path)) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_the_check_tools_torchvision_stand_in_is_gone_once_drbnet_py_is_imported(tmp_path, monkeypatch):
    """DRBNet.py imports torchvision.utils; without torchvision the tool stands an empty module in for it, which left
    in sys.modules (no __spec__) made diffusers' probe of torchvision, on importing defocuskit's methods, raise
    'ValueError: torchvision.__spec__ is None': `check_release.py --method drbnet` crashed."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the tool needs no stand-in")
    spec = importlib.util.spec_from_file_location("check_release", DATA.parents[1] / "tools" / "check_release.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    release = tmp_path / "DRBNet"
    (release / "models").mkdir(parents=True)
    (release / "models" / "DRBNet.py").write_text(  # a stand-in release: the import, then a network that stops
        "import torchvision.utils as vutils\n\ndef DRBNet_single():\n    raise LookupError('stand-in release')\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        with pytest.raises(LookupError, match="stand-in release"):
            tool._drbnet(release, tmp_path / "scratch")
    finally:
        for name in ("models.DRBNet", "models"):
            sys.modules.pop(name, None)
    assert "torchvision" not in sys.modules and "torchvision.utils" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None  # what diffusers asks
