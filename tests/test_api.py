"""The public API: defocuskit.load / DeblurModel.deblur dtype and layout round trips, sampler keywords, CoC maps,
the Hub layout (save_pretrained / from_pretrained / push_to_hub, huggingface_hub monkeypatched), the README example."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import defocuskit
from defocuskit import api
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.inference.tiling import TilingOptions
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _export(path: Path, recipe_file: str, *, identity: bool = False) -> Path:
    recipe = load_recipe(ROOT / "recipes" / recipe_file)
    method = get_method(recipe.method)
    torch.manual_seed(0)
    net = method.build(recipe.model, recipe.objective, False)
    if identity:  # NAFNet adds its input back: a zero last layer makes it the identity
        torch.nn.init.zeros_(net.ending.weight)
        torch.nn.init.zeros_(net.ending.bias)
    save_model(path, net.state_dict(), recipe.method, recipe_to_dict(recipe))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    recipe = resolve_recipe({"method": "defocus-map", "data": {"image_size": 32},
                             "model": {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
                                       "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8}})
    torch.manual_seed(0)
    net = get_method("defocus-map").build(recipe.model, recipe.objective, False)
    save_model(d / "coc.safetensors", net.state_dict(), "defocus-map", recipe_to_dict(recipe))
    return {"nafnet": _export(d / "nafnet.safetensors", "nafnet-tiny.yaml"),
            "identity": _export(d / "identity.safetensors", "nafnet-tiny.yaml", identity=True),
            "hidd": _export(d / "hidd.safetensors", "hidd-tiny.yaml"),
            "coc": d / "coc.safetensors"}


@pytest.fixture(scope="module")
def nafnet(files) -> api.DeblurModel:
    return defocuskit.load(files["nafnet"], device="cpu")


@pytest.fixture(scope="module")
def hidd(files) -> api.DeblurModel:
    return defocuskit.load(files["hidd"], device="cpu")


def _rgb(h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


# --------------------------------------------------------------------------------- dtypes and layouts


def test_numpy_round_trips_type_dtype_shape(nafnet) -> None:
    x = _rgb()
    for image in (np.rint(x * 255).astype(np.uint8), np.rint(x * 65535).astype(np.uint16), x, x.astype(np.float64),
                  x[:, :, :1].copy(), x[:, :, 0].copy(), np.rint(x[:, :, 0] * 255).astype(np.uint8)):
        out = nafnet.deblur(image)
        assert isinstance(out, np.ndarray) and out.dtype == image.dtype and out.shape == image.shape
    out = nafnet.deblur(x)
    assert out.min() >= 0 and out.max() <= 1 and np.abs(out - x).mean() > 1e-3  # random weights: not the input


def test_integers_are_scaled_by_their_range(nafnet, files) -> None:
    x = _rgb()
    u8, u16 = np.rint(x * 255).astype(np.uint8), np.rint(x * 65535).astype(np.uint16)
    ref8 = nafnet.deblur(u8.astype(np.float32) / 255)
    assert np.array_equal(nafnet.deblur(u8), np.rint(ref8 * 255))  # scaled in by 1/255, rounded (not truncated) out
    ref16 = nafnet.deblur(u16.astype(np.float32) / 65535)
    assert np.array_equal(nafnet.deblur(u16), np.rint(ref16 * 65535))
    identity = defocuskit.load(files["identity"], device="cpu")
    assert np.array_equal(identity.deblur(u8), u8) and np.array_equal(identity.deblur(u16), u16)
    t8 = torch.from_numpy(u8.transpose(2, 0, 1).copy())
    assert torch.equal(identity.deblur(t8), t8)


def test_gray_through_a_colour_model_comes_back_gray(nafnet) -> None:
    gray = _rgb()[:, :, 0].copy()
    expected = nafnet.deblur(np.repeat(gray[:, :, None], 3, axis=2)).mean(axis=2)
    np.testing.assert_allclose(nafnet.deblur(gray), expected, atol=1e-6)
    np.testing.assert_allclose(nafnet.deblur(gray[:, :, None])[:, :, 0], expected, atol=1e-6)


def test_tensors_channels_first(nafnet) -> None:
    x = _rgb(64, 48)
    ref = nafnet.deblur(x)
    chw = torch.from_numpy(x.transpose(2, 0, 1).copy())  # (3, 64, 48): read as C, H, W, never guessed from sizes
    out = nafnet.deblur(chw)
    assert out.shape == (3, 64, 48) and out.dtype == torch.float32 and out.device == chw.device
    np.testing.assert_allclose(out.numpy().transpose(1, 2, 0), ref, atol=1e-6)
    out64 = nafnet.deblur(chw.double())
    assert out64.dtype == torch.float64 and out64.shape == chw.shape
    with pytest.raises(ValueError, match=r"channels-last.*permute\(2, 0, 1\)"):
        nafnet.deblur(torch.from_numpy(x))  # (64, 48, 3) HWC tensor
    with pytest.raises(ValueError, match=r"permute\(0, 3, 1, 2\)"):
        nafnet.deblur(torch.from_numpy(x)[None])


def test_batch_equals_single_calls(nafnet) -> None:
    images = [_rgb(32, 40, seed=s) for s in range(3)]
    batch = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())
    out = nafnet.deblur(batch, seed=3)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    for i, image in enumerate(images):
        single = nafnet.deblur(torch.from_numpy(image.transpose(2, 0, 1).copy()), seed=3)
        assert torch.equal(out[i], single)
    u8 = (batch * 255).round().to(torch.uint8)
    assert nafnet.deblur(u8).dtype == torch.uint8 and nafnet.deblur(u8).shape == u8.shape


def test_batch_of_a_sampler_with_noise_equals_single_calls(hidd) -> None:
    images = [_rgb(32, 32, seed=s) for s in range(2)]
    batch = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())
    out = hidd.deblur(batch, steps=1, consistency="identity", seed=5)
    for i in range(2):
        assert torch.equal(out[i], hidd.deblur(batch[i], steps=1, consistency="identity", seed=5))
    assert not torch.equal(out[0], hidd.deblur(batch[0], steps=1, consistency="identity", seed=6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_and_tensors(files) -> None:
    model = defocuskit.load(files["nafnet"])  # auto: cuda here
    assert model.device == "cuda"
    x = _rgb(32, 40)
    t = torch.from_numpy(x.transpose(2, 0, 1).copy()).to("cuda:0", torch.float16)
    out = model.deblur(t)
    assert out.device == t.device and out.dtype == torch.float16 and out.shape == t.shape
    cpu = defocuskit.load(files["nafnet"], device="cpu").deblur(x)
    np.testing.assert_allclose(out.float().cpu().numpy().transpose(1, 2, 0), cpu, atol=5e-3)  # fp16, TF32


def test_bad_images_are_refused_clearly(nafnet) -> None:
    x = _rgb()
    with pytest.raises(ValueError, match=r"float32 values must be in \[0, 1\]; found \[0.0484398, 254.986\].*255"):
        nafnet.deblur(x * 255)
    low = x.copy()
    low[3, 4, 1] = -0.25
    with pytest.raises(ValueError, match=r"found \[-0\.25, "):
        nafnet.deblur(low)
    np.testing.assert_array_equal(nafnet.deblur(np.clip(x + 5e-4, 0, 1.0005)).shape, x.shape)  # within tolerance
    bad = x.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nafnet.deblur(bad)
    with pytest.raises(ValueError, match="unsupported dtype int32"):
        nafnet.deblur((x * 255).astype(np.int32))
    with pytest.raises(ValueError, match=r"alpha channel: image\[\.\.\., :3\]"):
        nafnet.deblur(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"channels-first.*transpose\(1, 2, 0\)"):
        nafnet.deblur(np.zeros((3, 40, 52), np.uint8))
    with pytest.raises(TypeError, match="numpy array or a torch tensor, got list"):
        nafnet.deblur([[0.0]])
    for empty in (np.zeros((0, 0, 3), np.uint8), torch.rand(0, 3, 20, 30)):  # the shape as given
        with pytest.raises(ValueError, match=re.escape(f"image: empty (shape {tuple(empty.shape)})")):
            nafnet.deblur(empty)
    for seed in ("x", 1.5, None, True):
        with pytest.raises(TypeError, match=r"seed= must be an integer, got "):
            nafnet.deblur(x, seed=seed)



def test_big_endian_integers_are_read_and_given_back_in_their_byte_order(nafnet) -> None:
    """'>u2' (FITS, raw PGM) was refused as 'unsupported dtype >u2 (uint8, uint16, ...)'."""
    u16 = np.rint(_rgb() * 65535).astype(np.uint16)
    out = nafnet.deblur(u16.astype(">u2"))
    assert out.dtype == np.dtype(">u2") and np.array_equal(out, nafnet.deblur(u16))


def test_numpy_subclasses_are_read_as_the_plain_arrays_they_hold(nafnet, tmp_path) -> None:
    """np.matrix indexed to (1, H, W, 1) crashed the interpreter (a segfault in numpy); a memmap is read, not
    given back as one."""
    gray = _rgb()[:, :, 0].copy()
    out = nafnet.deblur(np.matrix(gray))
    assert type(out) is np.ndarray and out.shape == gray.shape and np.array_equal(out, nafnet.deblur(gray))
    np.save(tmp_path / "a.npy", gray)
    out = nafnet.deblur(np.load(tmp_path / "a.npy", mmap_mode="r"))
    assert type(out) is np.ndarray and np.array_equal(out, nafnet.deblur(gray))
    with pytest.raises(TypeError, match=r"image: a masked array; its mask is not used: pass image\.filled"):
        nafnet.deblur(np.ma.masked_array(gray, mask=gray > 0.9))  # was deblurred with its masked samples, mask lost



def test_negative_views_are_deblurred_and_tensors_without_plain_values_refused(nafnet, hidd) -> None:
    """A negative view (the neg bit), a conjugate view, sparse, meta and nested tensors ended in torch's own
    tracebacks ('Can't call numpy() on Tensor that has negative bit set', 'NestedTensorImpl doesn't support sizes')."""
    x = torch.from_numpy(_rgb(32, 40).transpose(2, 0, 1).copy())
    neg = torch._neg_view(-x)
    assert neg.is_neg()
    assert torch.equal(nafnet.deblur(neg), nafnet.deblur(x))
    as_complex = torch.complex(x, torch.zeros_like(x))
    with pytest.warns(UserWarning, match="nested"):
        nested = torch.nested.nested_tensor([x, x[:, :16]])
    for bad, error, message in (
            (x.to_sparse(), TypeError, r"image: a sparse tensor \(layout torch\.sparse_coo\); pass image\.to_dense"),
            (torch.empty(3, 32, 40, device="meta"), ValueError, r"image: a tensor on the 'meta' device holds no value"),
            (nested, TypeError, r"image: a nested tensor; pass a \(C, H, W\) or \(B, C, H, W\) tensor"),
            (as_complex, TypeError, r"image: a complex tensor \(torch\.complex64\); pass its real part"),
            (as_complex.conj(), TypeError, r"image: a complex tensor")):
        with pytest.raises(error, match=message):
            nafnet.deblur(bad)
    from defocuskit.imaging import optics

    flat = torch.full((32, 40), optics.coc_from_metadata({"f_number": 1.4}, 40))
    img = _rgb(32, 40)
    assert np.array_equal(hidd.deblur(img, steps=2, coc=torch._neg_view(-flat)), hidd.deblur(img, steps=2, coc=flat))
    with pytest.raises(TypeError, match=r"coc=: a sparse tensor \(layout torch\.sparse_coo\); pass coc\.to_dense"):
        hidd.deblur(img, steps=2, coc=flat.to_sparse())


# --------------------------------------------------------------------------------- sampler keywords, CoC maps


def test_sampler_keywords_reach_the_sampler(hidd, monkeypatch) -> None:
    seen = []
    real = api.restore_in_channels

    def spy(*args, **kwargs):
        seen.append(kwargs["sampler_cfg"])
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "restore_in_channels", spy)
    x = _rgb(32, 40)
    a = hidd.deblur(x, steps=2, consistency="identity", zeta=0.9, seed=1)
    assert (seen[-1].steps, seen[-1].consistency, seen[-1].zeta, seen[-1].name) == (2, "identity", 0.9, "fast")
    assert np.array_equal(a, hidd.deblur(x, steps=2, consistency="identity", zeta=0.9, seed=1))  # seeded
    assert not np.array_equal(a, hidd.deblur(x, steps=2, consistency="identity", zeta=0.1, seed=1))
    hidd.deblur(x, sampler="pc", steps=1, consistency="identity")
    assert (seen[-1].name, seen[-1].steps) == ("pc", 1)
    assert hidd.sampler["zeta"] == 1.0 and hidd.nfe == 10  # defaults untouched (hidd-tiny: fast, 10 steps)
    assert hidd.sampler_info(steps=3, zeta=0.5)["settings"]["zeta"] == 0.5
    with pytest.raises(ValueError, match=r"guidance=0\.3.*no setting 'guidance' \(known: .*zeta"):
        hidd.deblur(x, guidance=0.3)
    with pytest.raises(ValueError, match="zeta"):
        hidd.deblur(x, consistency="identity", zeta="lots")
    with pytest.raises(ValueError, match="needs a circle-of-confusion map"):
        hidd.deblur(x, steps=2)  # the tiny recipe's physics consistency


def test_tiling_options_pass_through_only_when_given(nafnet, monkeypatch) -> None:
    seen = []
    real = api.restore_in_channels

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "restore_in_channels", spy)
    x = _rgb(40, 52)
    whole = nafnet.deblur(x)
    assert seen[-1]["tiling"] == TilingOptions()  # restore_image's own defaults
    tiled = nafnet.deblur(x, tile=32, overlap=8, batch=2, max_tile_pixels=4096)
    assert dataclasses.asdict(seen[-1]["tiling"]) == {"tile": 32, "overlap": 8, "batch": 2, "max_tile_pixels": 4096}
    assert tiled.shape == whole.shape and not np.array_equal(tiled, whole)


def test_keyword_numbers_are_checked_by_type(nafnet, hidd, files) -> None:
    """A string, bool, float or NaN where a number goes was a comparison's TypeError from inside inference.tiling
    (batch=2.5: 'slice indices must be integers'; tile=nan: 'cannot convert float NaN to integer'), or ran: tile=32.5
    as 32, focus_gate=True as 1 px, f_number='2.8'; coc_map(f_number=nan) of a model without a bound was ignored."""
    x = _rgb(32, 40)
    for key in ("tile", "overlap", "max_tile_pixels", "batch"):
        for bad in ("32", 32.5, float("nan"), float("inf"), True, [32]):
            with pytest.raises(TypeError, match=rf"^{key}= must be a whole number, got "):
                nafnet.deblur(x, **{key: bad})
    for bad in ("2", 2.5, True):
        with pytest.raises(TypeError, match=r"^steps= must be a whole number, got "):
            hidd.sampler_info(steps=bad)
    with pytest.raises(ValueError, match=r"sampler\.steps: HIDD samples in 1 to 100000 steps, got 1000000000"):
        hidd.sampler_info(steps=10**9)  # deblur() asked 8 GB for the noise levels and the process was killed
    for key, extra in (("focus_gate", {"coc": "edge"}), ("gate_smooth", {"coc": "edge", "focus_gate": 2}),
                       ("f_number", {}), ("coc_bound", {"coc": "edge", "f_number": 2.8})):
        for bad in ("3", True, [3.0], 2j):
            with pytest.raises(TypeError, match=rf"^{key}= must be a number, got "):
                (hidd if key in ("f_number", "coc_bound") else nafnet).deblur(x, **{**extra, key: bad})
    out = nafnet.deblur(x, tile=np.int64(32), overlap=torch.tensor(8), batch=np.int32(2), focus_gate=np.float32(3),
                        coc="edge")  # numpy and one-number tensors stand for numbers
    assert out.shape == x.shape
    coc_model = defocuskit.load(files["coc"], device="cpu")
    for bad in (float("nan"), 0, 100):
        with pytest.raises(ValueError, match=r"f_number=.*: not an f-number a lens has"):
            coc_model.coc_map(x, f_number=bad)


def test_methods_without_steps_or_settings(nafnet) -> None:
    x = _rgb(32, 32)
    with pytest.raises(ValueError, match=r"steps=5: the 'nafnet' sampler has no 'steps' setting"):
        nafnet.deblur(x, steps=5)
    with pytest.raises(ValueError, match=r"eta=0\.1.*\(known: none\)"):
        nafnet.deblur(x, eta=0.1)
    with pytest.raises(ValueError, match="no named samplers"):
        nafnet.deblur(x, sampler="fast")
    with pytest.raises(ValueError, match="f_number= is for samplers that need"):
        nafnet.deblur(x, f_number=2.8)


def test_coc_from_f_number_a_map_or_a_defocus_map_model(hidd, files) -> None:
    x = _rgb(32, 40)
    by_f = hidd.deblur(x, steps=2, f_number=1.4)
    assert by_f.shape == x.shape
    assert not np.array_equal(by_f, hidd.deblur(x, steps=2, f_number=16))  # the CoC reaches physics consistency
    from defocuskit.imaging import optics

    flat = np.full((32, 40), optics.coc_from_metadata({"f_number": 1.4}, 40), np.float32)
    assert np.array_equal(hidd.deblur(x, steps=2, coc=flat), by_f)
    with pytest.raises(ValueError, match=r"does not fit 1 image\(s\) of 32x40"):
        hidd.deblur(x, steps=2, coc=flat[:, :30])
    with pytest.raises(ValueError, match="not both"):
        hidd.deblur(x, steps=2, coc=flat, f_number=2)
    for bad in (float("inf"), float("nan"), 0.01, 0, -2, 1000):  # inf gave a zero CoC, exit as if all were well
        with pytest.raises(ValueError, match=r"f_number=.*: not an f-number a lens has \(f/0\.7 to f/64\)"):
            hidd.deblur(x, steps=2, f_number=bad)
        with pytest.raises(ValueError, match=r"not an f-number a lens has"):
            hidd.deblur(x, steps=2, coc="edge", f_number=bad)  # beside an estimated map too

    coc_model = defocuskit.load(files["coc"], device="cpu")
    assert coc_model.output == "defocus_map"
    with pytest.raises(ValueError, match=r"model\.coc_map\(image\)"):
        coc_model.deblur(x)
    with pytest.raises(ValueError, match=r"use model\.deblur\(image\)"):
        hidd.coc_map(x)
    m = coc_model.coc_map(x)
    assert m.shape == (32, 40) and m.dtype == np.float32 and m.min() >= 0 and m.max() > 0
    t = torch.from_numpy(np.stack([x, x]).transpose(0, 3, 1, 2).copy())
    mt = coc_model.coc_map(t)
    assert mt.shape == (2, 1, 32, 40) and mt.dtype == torch.float32
    np.testing.assert_allclose(mt[1, 0].numpy(), m, atol=1e-6)
    assert np.array_equal(hidd.deblur(x, steps=2, coc=coc_model), hidd.deblur(x, steps=2, coc=m))


def test_one_channel_model_deblurs_colour_channel_by_channel(hidd) -> None:
    x = _rgb(32, 32)
    out = hidd.deblur(x, steps=1, consistency="identity")
    assert out.shape == x.shape
    gray = hidd.deblur(x[:, :, 0].copy(), steps=1, consistency="identity")
    assert gray.shape == (32, 32)


# --------------------------------------------------------------------------------- load, devices, errors


def test_load_errors_and_devices(files, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="model not found: runs/none/model.safetensors"):
        defocuskit.load("runs/none/model.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no model.safetensors"):
        defocuskit.load(tmp_path / "empty")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other.safetensors: no defocuskit metadata"):
        defocuskit.load(tmp_path / "other.safetensors")
    for empty in ("", "  "):  # not the working folder
        with pytest.raises(ValueError, match="load: an empty name"):
            defocuskit.load(empty)
    with pytest.raises(ValueError, match="revision= is for Hub repo ids"):
        defocuskit.load(files["nafnet"], revision="main")
    from defocuskit.io.devices import resolve_device

    assert defocuskit.load(files["nafnet"]).device == resolve_device("auto")  # device="auto" by default
    with pytest.raises(ValueError, match=r"^device='warp9': not a device name"):  # the keyword, not --device
        defocuskit.load(files["nafnet"], device="warp9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"cuda:1"):
            defocuskit.load(files["nafnet"], device="cuda:1")


def test_import_is_cheap_and_lists_the_api() -> None:
    code = "import sys, defocuskit; print('torch' in sys.modules, sorted(dir(defocuskit)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ['DeblurModel', '__version__', 'load']"
    assert defocuskit.DeblurModel is api.DeblurModel and defocuskit.load is api.load
    with pytest.raises(AttributeError, match="no attribute 'deblurr'"):
        defocuskit.deblurr  # noqa: B018


# --------------------------------------------------------------------------------- the Hub layout


def _report(tmp_path: Path, model_file: Path) -> Path:
    """A report.json as `defocuskit eval` writes it (rows from eval.report.aggregate), with this model and another."""
    from defocuskit.eval.report import aggregate

    images = []
    for label, psnr in (("nafnet", 30.0), ("hidd", 20.0)):
        for f, gain in ((2.8, 1.5), (2.8, 2.5), (8.0, 0.25)):
            images.append({"method": label, "f_number": f, "psnr": psnr + gain, "psnr_input": psnr, "ssim": 0.8,
                           "ssim_input": 0.7, "mae": 0.02, "mae_input": 0.03, "lpips": None, "lpips_input": None})
    report = {"protocol": {"split": "test", "shards": "shards/", "psnr": "PSNR per image", "ssim": "SSIM 7x7",
                           "grouping": "f_number rounded to 0.1",
                           "methods": {"nafnet": {"kind": "checkpoint", "path": str(model_file), "method": "nafnet",
                                                  "sampler": {}, "nfe": 1, "seed": 0},
                                       "hidd": {"kind": "checkpoint", "path": "runs/hidd/model.safetensors",
                                                "method": "hidd", "sampler": {"steps": 40}, "nfe": 40, "seed": 0}}},
              "rows": aggregate(images, ["nafnet", "hidd"], by_aperture=True), "images": images}
    path = tmp_path / "report" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    return path


def test_save_pretrained_round_trip(nafnet, files, tmp_path) -> None:
    report = _report(tmp_path, files["nafnet"])
    folder = nafnet.save_pretrained(tmp_path / "hub", report=report)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "recipe.yaml"]
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert (folder / "model.safetensors").read_bytes() == files["nafnet"].read_bytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "nafnet" and config["format"] == "defocuskit-hub-1" and config["nfe"] == 1
    assert config["recipe"] == nafnet.recipe and config["model_format"] == "defocuskit-model-1"
    assert [r["f_number"] for r in config["eval"]["rows"]] == [2.8, 8.0, None]
    assert config["eval"]["rows"][0]["psnr_gain"] == pytest.approx(2.0)
    import yaml

    assert yaml.safe_load((folder / "recipe.yaml").read_text()) == nafnet.recipe

    card = (folder / "README.md").read_text()
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert data.library_name == "defocuskit" and data.pipeline_tag == "image-to-image"
    assert data.tags == ["defocus-deblurring", "image-to-image", "nafnet"]
    assert "width: 8" in card and "method: nafnet" in card  # the recipe
    assert "| f/2.8 | 2 | 32.00 | 30.00 | +2.00 |" in card and "| f/8 | 1 | 30.25 | 30.00 | +0.25 |" in card
    assert "22.00" not in card  # the other checkpoint's rows stay out

    loaded = defocuskit.DeblurModel.from_pretrained(folder, device="cpu")
    x = _rgb()
    assert np.array_equal(loaded.deblur(x), nafnet.deblur(x))
    again = loaded.save_pretrained(tmp_path / "again")  # the eval rows travel with the folder
    assert "| f/2.8 | 2 | 32.00 |" in (again / "README.md").read_text()

    # the model file is checked against the SHA-256 that config.json records
    shutil.copy(files["hidd"], again / "model.safetensors")
    with pytest.raises(ValueError, match=r"again/model\.safetensors: its SHA-256 is .*config\.json records .*changed"):
        defocuskit.DeblurModel.from_pretrained(again, device="cpu")


def test_save_pretrained_replaces_only_its_own_unchanged_files(nafnet, files, tmp_path) -> None:
    folder = nafnet.save_pretrained(tmp_path / "hub")
    assert nafnet.save_pretrained(folder) == folder  # its own files, unchanged: replaced
    users = {"README.md": "my own card\n", "config.json": '{"mine": true}\n', "recipe.yaml": "my: notes\n",
             "model.safetensors": "another model of mine\n"}
    for name, text in users.items():
        mine = tmp_path / f"mine-{name}"
        mine.mkdir()
        (mine / "keep.txt").write_text("kept")
        (mine / name).write_text(text)
        with pytest.raises(FileExistsError, match=rf"mine-{re.escape(name)}/{re.escape(name)}: not written by an "
                                                  "earlier save_pretrained"):
            nafnet.save_pretrained(mine)
        assert sorted(p.name for p in mine.iterdir()) == sorted([name, "keep.txt"])
        assert (mine / name).read_text() == text
    (folder / "README.md").write_text((folder / "README.md").read_text() + "my notes\n")  # edited since: kept
    with pytest.raises(FileExistsError, match=r"hub/README\.md: not written by an earlier save_pretrained, or "
                                              "changed since"):
        nafnet.save_pretrained(folder)
    assert (folder / "README.md").read_text().endswith("my notes\n")
    run = files["nafnet"].parent  # a training run's folder: its recipe.yaml is train's, not save_pretrained's
    if (run / "recipe.yaml").exists():
        before = (run / "recipe.yaml").read_bytes()
        with pytest.raises(FileExistsError, match=r"recipe\.yaml: not written by an earlier save_pretrained"):
            nafnet.save_pretrained(run)
        assert (run / "recipe.yaml").read_bytes() == before


def test_save_pretrained_expands_the_home_folder_as_load_does(nafnet, files, tmp_path, monkeypatch) -> None:
    """save_pretrained("~/hub") wrote into a folder named "~" under the working folder, where load("~/hub") does not
    look; report="~/..." was not found."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    _report(tmp_path, files["nafnet"])
    (tmp_path / "home").mkdir()
    folder = nafnet.save_pretrained("~/hub", report="~/../report/report.json")
    assert folder == tmp_path / "home" / "hub" and not (tmp_path / "~").exists()
    assert "| f/2.8 | 2 | 32.00 |" in (folder / "README.md").read_text()
    assert defocuskit.load("~/hub", device="cpu").method == "nafnet"


def test_odd_folders_and_sources_are_one_line_naming_the_argument(nafnet, tmp_path, monkeypatch) -> None:
    """save_pretrained("") wrote the Hub layout into the working folder (load("") is refused); save_pretrained(3),
    load(revision=3), a 5,000-character name and a loop of links were errors from pathlib or huggingface_hub that
    named no argument."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"save_pretrained: a folder for the model, got ''"):
        nafnet.save_pretrained("")
    with pytest.raises(TypeError, match=r"save_pretrained: a folder for the model, got 3"):
        nafnet.save_pretrained(3)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match=r"revision=: a branch, tag or commit of the Hub repo \(a string\), got 3"):
        defocuskit.load("owner/name", revision=3)
    with pytest.raises(ValueError, match=r"^x{80}\.\.\.: a name in it is too long"):
        defocuskit.load("x" * 5000)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(ValueError, match=r"a: a loop of links"):
        defocuskit.load(str(tmp_path / "a"))


def test_a_killed_save_pretrained_is_not_loaded_and_the_next_save_finishes_it(nafnet, files, tmp_path) -> None:
    """kill -9 after the model file was renamed in: the folder loaded as a model (or refused its model file as changed)
    and every later save_pretrained into it refused the killed save's own model file; now the folder is refused in
    one line until a save finishes it, and that save replaces the killed one's files."""
    folder = tmp_path / "hub"
    killed = ("import os, sys, defocuskit\n"
              "model = defocuskit.load(sys.argv[1], device='cpu')\n"
              "real = os.replace\n"
              "def replace(src, dst):\n"
              "    real(src, dst)\n"
              "    if str(dst).endswith('model.safetensors'):\n"
              "        os.kill(os.getpid(), 9)\n"
              "os.replace = replace\n"
              "model.save_pretrained(sys.argv[2])\n")
    for first in (None, files["identity"]):  # into a new folder, and over an earlier save of another model
        shutil.rmtree(folder, ignore_errors=True)
        if first is not None:
            defocuskit.load(first, device="cpu").save_pretrained(folder)
        run = subprocess.run([sys.executable, "-c", killed, str(files["nafnet"]), str(folder)], cwd=ROOT,
                             capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert run.returncode == -9, run.stderr[-2000:]
        with pytest.raises(ValueError, match=r"hub: a save_pretrained into it did not finish"):
            defocuskit.load(folder, device="cpu")
        assert nafnet.save_pretrained(folder) == folder
        assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                            "recipe.yaml"]
        assert (folder / "model.safetensors").read_bytes() == files["nafnet"].read_bytes()
        assert defocuskit.load(folder, device="cpu").method == "nafnet"


def test_two_save_pretrained_into_one_folder_do_not_interleave(nafnet, hidd, tmp_path, monkeypatch) -> None:
    """A second save into a folder one is writing stops at once, naming it (both wrote, the last one's files won)."""
    from defocuskit.io import hub

    folder, seen = tmp_path / "hub", {}
    real = shutil.copyfile

    def copy_then_another_save(src, dst, *args, **kwargs):
        if seen:  # the second save's own copy, where it is not refused
            return real(src, dst, *args, **kwargs)
        seen["inside"] = True
        with pytest.raises(BlockingIOError, match=r"hub: another save_pretrained is writing it \(pid \d+ on"):
            hidd.save_pretrained(folder)
        seen["refused"] = True
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(hub.shutil, "copyfile", copy_then_another_save)
    nafnet.save_pretrained(folder)
    assert seen == {"inside": True, "refused": True}
    assert json.loads((folder / "config.json").read_text())["method"] == "nafnet"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "recipe.yaml"]


def test_report_rows_by_label_and_errors(hidd, nafnet, files, tmp_path) -> None:
    report = _report(tmp_path, files["nafnet"])
    card = (hidd.save_pretrained(tmp_path / "h", report=report, report_label="hidd") / "README.md").read_text()
    assert "| f/2.8 | 2 | 22.00 | 20.00 | +2.00 |" in card and "32.00" not in card
    with pytest.raises(ValueError, match=r"none of its checkpoints is .*hidd.safetensors.*report_label="):
        hidd.save_pretrained(tmp_path / "x", report=report)
    with pytest.raises(ValueError, match=r"no checkpoint labelled 'rddm' \(checkpoints: nafnet"):
        hidd.save_pretrained(tmp_path / "x", report=report, report_label="rddm")
    with pytest.raises(ValueError, match="'nafnet' model, this one a 'hidd' model"):
        hidd.save_pretrained(tmp_path / "x", report=report, report_label="nafnet")
    with pytest.raises(FileNotFoundError, match="report not found"):
        nafnet.save_pretrained(tmp_path / "x", report=tmp_path / "nothing.json")
    data = json.loads(report.read_text())
    broken = {"rows": dict(data, rows=[1, 2]), "images": dict(data, images=5),  # AttributeError, TypeError
              "psnr": dict(data, rows=[dict(r, psnr="x") for r in data["rows"]]),  # the card's format: ValueError
              "nan": dict(data, rows=[dict(r, psnr=float("nan")) for r in data["rows"]])}  # json.dumps' ValueError
    for name, bad in broken.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=rf"{name}\.json: (not a defocuskit eval report|a row of checkpoint "
                                             r"'nafnet' has psnr=.*, not a finite number)"):
            nafnet.save_pretrained(tmp_path / f"out-{name}", report=tmp_path / f"{name}.json")
        assert not (tmp_path / f"out-{name}").exists()


def test_push_to_hub_uploads_the_folder(nafnet, files, tmp_path, monkeypatch) -> None:
    import huggingface_hub

    calls: dict[str, object] = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
            folder = Path(folder_path)
            calls["upload"] = (repo_id, commit_message, sorted(p.name for p in folder.iterdir()))
            calls["card"] = (folder / "README.md").read_text()
            calls["bytes"] = (folder / "model.safetensors").read_bytes()
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    result = nafnet.push_to_hub("me/nafnet-tiny", private=True, token="tok", report=_report(tmp_path, files["nafnet"]))
    assert result == "commit-info" and calls["token"] == "tok"
    assert calls["create"] == ("me/nafnet-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"] == ("me/nafnet-tiny", "Upload defocuskit model",
                               ["README.md", "config.json", "model.safetensors", "recipe.yaml"])
    assert 'defocuskit.load("me/nafnet-tiny")' in calls["card"] and "| f/2.8 | 2 | 32.00 |" in calls["card"]
    assert calls["bytes"] == files["nafnet"].read_bytes()


def test_push_to_hub_offline_is_one_line(nafnet, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    class OfflineApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    offline = r"^push_to_hub\('me/x'\): HF_HUB_OFFLINE is set \(offline mode\)"
    with pytest.raises(ConnectionError, match=offline) as info:
        nafnet.push_to_hub("me/x")
    assert "\n" not in str(info.value) and info.value.__cause__ is None


@pytest.mark.parametrize("error, kind, needle", [
    (lambda: __import__("socket").gaierror(-2, "Name or service not known"), ConnectionError,
     r"could not reach the Hub \(gaierror: \[Errno -2\] Name or service not known\); check the network"),
    (lambda: type("ConnectError", (Exception,), {"__module__": "httpx"})("[Errno -2] Name or service not known"),
     ConnectionError, r"could not reach the Hub \(ConnectError: \[Errno -2\]"),
    (lambda: __import__("huggingface_hub.errors", fromlist=["x"]).HFValidationError("Repo id must be in the form"),
     ValueError, r"not a Hub repo id \(Repo id must be in the form\); give owner/name"),
])
def test_push_to_hub_without_a_network_or_with_a_bad_id_is_one_line(nafnet, monkeypatch, error, kind, needle) -> None:
    """The HTTP stack's own errors (httpx's, with no network) are one line too, and a bad id is not a network
    error."""
    import huggingface_hub

    class FailingApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            raise error()

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    with pytest.raises(kind, match=r"^push_to_hub\('me/x'\): " + needle) as info:
        nafnet.push_to_hub("me/x")
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_from_pretrained_hub_id_reads_the_snapshot(nafnet, tmp_path, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    snapshot = nafnet.save_pretrained(tmp_path / "cache" / "snapshot")
    asked = {}

    def fake_snapshot_download(repo_id, **kwargs):
        asked.update(kwargs, repo_id=repo_id)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    model = defocuskit.DeblurModel.from_pretrained("me/nafnet-tiny", revision="v1", device="cpu")
    assert asked["repo_id"] == "me/nafnet-tiny" and asked["revision"] == "v1"
    assert asked["allow_patterns"] == ["model.safetensors", "config.json"] and asked["library_name"] == "defocuskit"
    assert model.source == "me/nafnet-tiny" and model.path == snapshot / "model.safetensors"
    x = _rgb()
    assert np.array_equal(model.deblur(x), nafnet.deblur(x))

    def offline(repo_id, **kwargs):
        raise LocalEntryNotFoundError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match=r"'me/missing' is no local file or folder.*offline mode"):
        defocuskit.load("me/missing")
    partial = tmp_path / "cache" / "partial"  # a download cut short: the model file's link points at no blob
    partial.mkdir()
    shutil.copy(snapshot / "config.json", partial / "config.json")
    (partial / "model.safetensors").symlink_to(tmp_path / "cache" / "blobs" / "0123abcd")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(partial))
    with pytest.raises(FileNotFoundError, match=r"'me/cut': the cached download in .*partial is incomplete \(no "
                                                r"model\.safetensors\); download it again"):
        defocuskit.load("me/cut")
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps(dict(config, method="hidd")))
    with pytest.raises(ValueError, match="config.json names a 'hidd' model"):
        defocuskit.load(snapshot)


# --------------------------------------------------------------------------------- README


def test_readme_python_api_example_runs(files, tmp_path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Python API", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 3 and "defocuskit.load(\"runs/nafnet-tiny/model.safetensors\")" in blocks[0]
    from defocuskit.io.images import read_image, write_image

    monkeypatch.chdir(tmp_path)
    for name in ("nafnet-tiny", "hidd-tiny"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        os.link(files["nafnet" if name == "nafnet-tiny" else "hidd"], tmp_path / "runs" / name / "model.safetensors")
    photo = np.rint(_rgb(36, 44) * 255).astype(np.uint8)
    write_image("photo.png", photo)
    scope: dict[str, object] = {}
    # The README's own code, as a reader would paste it (the Hub block needs the network: not run).
    exec(compile(blocks[0] + blocks[1], "README.md", "exec"), scope)  # noqa: S102
    out = read_image("photo-sharp.png")
    assert out.dtype == np.uint8 and out.shape == photo.shape
    assert np.array_equal(out, scope["model"].deblur(photo))  # type: ignore[attr-defined]
    assert scope["sharp"].shape == photo.shape  # type: ignore[attr-defined]
