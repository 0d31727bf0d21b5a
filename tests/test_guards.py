"""Resource and consistency guards: image sizes judged from the header, model files judged before the network is
allocated, the method a model file claims checked against its recipe (issue 21)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from defocuskit.io.formats import ImageError
from defocuskit.io.images import decode_image, encode_png, read_image, write_image

REPO = Path(__file__).resolve().parents[1]


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (its few rows of data decode as a truncated image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"".join(b"\0" + bytes(width * 3) for _ in range(4)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_a_small_file_declaring_a_huge_frame_is_refused_from_its_header(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(16000, 16000))
    assert bomb.stat().st_size < 100_000
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"bomb\.png: declares 16000x16000 pixels \(256 MP\), more than the limit"):
        read_image(bomb)
    assert time.perf_counter() - started < 2.0  # judged from the header, nothing decoded
    with pytest.raises(ImageError, match=r"s1/blur\.png: declares 16000x16000"):
        decode_image(bomb.read_bytes(), "s1/blur.png")  # a shard member is judged the same way
    small = encode_png(np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "500")
    with pytest.raises(ImageError, match=r"declares 30x20 pixels \(0.0006 MP\), more than the limit of 0.0005 MP"):
        decode_image(small, "x.png")
    for bad in ("-1", "abc", "inf"):  # never read as "no limit"
        monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", bad)
        with pytest.raises(ValueError, match=r"DEFOCUSKIT_MAX_PIXELS=.*: not a number of pixels >= 0"):
            decode_image(small, "x.png")
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "600")
    assert decode_image(small, "x.png").shape == (20, 30, 3)
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "0")  # no limit
    write_image(tmp_path / "ok.png", np.zeros((20, 30, 3), np.uint8))
    assert read_image(tmp_path / "ok.png").shape == (20, 30, 3)


def _radiance_declaring(width: int, height: int) -> bytes:
    """A Radiance HDR stream (which Pillow does not read) declaring width x height, run-length coded: a 4 MP frame
    in about 130 kB."""
    line = bytearray(b"\x02\x02" + bytes([width >> 8, width & 255]))
    for component in range(4):
        left = width
        while left:
            n = min(127, left)
            line += bytes([128 + n, 100 if component < 3 else 128])
            left -= n
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width) + bytes(line) * height


def test_a_frame_pillow_cannot_size_is_judged_from_its_own_header_or_refused(tmp_path, monkeypatch):
    import cv2

    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "1000000")
    bomb = tmp_path / "bomb.png"  # a Radiance stream under a .png name: OpenCV decodes it by its content
    bomb.write_bytes(_radiance_declaring(2000, 2000))
    with pytest.raises(ImageError, match=r"bomb\.png: declares 2000x2000 pixels \(4 MP\), more than the limit"):
        read_image(bomb)
    with pytest.raises(ImageError, match=r"m/blur\.png: declares 2000x2000"):
        decode_image(bomb.read_bytes(), "m/blur.png")
    unknown = tmp_path / "odd.png"  # OpenCV's encoding of a format whose header nothing here parses
    unknown.write_bytes(b"\x76\x2f\x31\x01" + bytes(200))
    with pytest.raises(ImageError, match=r"odd\.png: not a readable image: cannot read its dimensions from the header"):
        read_image(unknown)
    # every format read_image reads is sized from its header: read under the limit, refused above it
    rng = np.random.default_rng(0)
    formats = [(".png", np.uint8, 1), (".png", np.uint16, 1), (".png", np.uint8, 3), (".png", np.uint16, 3),
               (".png", np.uint8, 4), (".png", np.uint16, 4), (".jpg", np.uint8, 1), (".jpg", np.uint8, 3),
               (".tif", np.uint8, 3), (".tif", np.uint16, 1), (".tif", np.uint16, 3), (".tif", np.uint16, 4),
               (".tif", np.float32, 3), (".tif", np.float32, 1), (".bmp", np.uint8, 3), (".webp", np.uint8, 3),
               (".pfm", np.float32, 3), (".pfm", np.float32, 1), (".hdr", np.float32, 3)]
    for ext, dtype, channels in formats:
        shape = (20, 30) if channels == 1 else (20, 30, channels)
        arr = (rng.random(shape) if dtype == np.float32 else rng.integers(0, 200, shape)).astype(dtype)
        ok, data = cv2.imencode(ext, arr)
        assert ok
        path = tmp_path / f"{dtype.__name__}x{channels}{ext}"
        path.write_bytes(data.tobytes())
        monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "600")
        assert read_image(path).shape == (20, 30, 3), path
        monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "599")
        with pytest.raises(ImageError, match=r"declares 30x20 pixels"):
            read_image(path)
    big_tiff = cv2.imencode(".tif", np.zeros((40, 30, 3), np.float32))[1].tobytes()  # its IFD after the samples
    with pytest.raises(ImageError, match=r"declares 30x40 pixels"):
        decode_image(big_tiff, "f.tif")


def test_float_images_outside_0_to_1_are_refused_naming_the_file(tmp_path):
    """A float TIFF of 0..255 values (or NaN) read as all white before, exit 0; one inside [0, 1] is read."""
    import cv2

    rgb = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    for name, arr, said in [("eight.tif", rgb * 255, r"eight\.tif: float samples from .* to .*: read as 0 to 1"),
                            ("nan.tif", np.where(rgb > 0.5, np.nan, rgb).astype(np.float32),
                             r"nan\.tif: float samples hold NaN or inf")]:
        (tmp_path / name).write_bytes(cv2.imencode(".tif", arr)[1].tobytes())
        with pytest.raises(ImageError, match=said):
            read_image(tmp_path / name)
    (tmp_path / "unit.tif").write_bytes(cv2.imencode(".tif", rgb)[1].tobytes())
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tif"), np.rint(rgb * 65535).astype(np.uint16)[..., ::-1])


def test_a_tiff_of_half_floats_is_named_as_one_not_as_corrupt(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "half.tif", np.random.default_rng(0).random((8, 9, 3)).astype(np.float16))
    with pytest.raises(ImageError, match=r"half\.tif: .*or a TIFF of samples it does not read, e\.g\. 16-bit floats"):
        read_image(tmp_path / "half.tif")


def test_cli_deblur_and_inspect_refuse_the_huge_frame_in_one_line(tmp_path):
    from test_infer import _export_nafnet

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(16000, 16000))
    model = _export_nafnet(tmp_path / "m.safetensors")
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "deblur", str(bomb), "--checkpoint", str(model),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "declares 16000x16000 pixels" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def _relabel(src: Path, dst: Path, **changes) -> Path:
    """A copy of a model file with its metadata changed: recipe keys as dotted paths, or `method`."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    recipe = json.loads(meta["recipe"])
    for key, value in changes.items():
        if key == "method":
            meta["method"] = value
            continue
        node = recipe
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    meta["recipe"] = json.dumps(recipe)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_model_metadata_is_checked_against_the_weights_before_allocating(tmp_path):
    from test_infer import _export_nafnet

    from defocuskit.inference.load import load_model

    good = _export_nafnet(tmp_path / "m.safetensors")
    load_model(good)
    huge = _relabel(good, tmp_path / "huge.safetensors", **{"model.width": 20000})
    # the peak of this process's own memory: VmHWM starts anew at exec, where ru_maxrss keeps the forking parent's
    # peak (a pytest-xdist worker that has run many tests holds well over 1 GB)
    script = ("import re, resource, sys\n"
              "from defocuskit.inference.load import load_model\n"
              "try:\n    load_model(sys.argv[1])\n"
              "except ValueError as exc:\n    print(exc)\n"
              "try:\n    hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
              "except (OSError, AttributeError):\n    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "print(int(hwm) // 1024)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(huge)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    message, peak_mib = proc.stdout.strip().splitlines()
    assert "huge.safetensors: tensor 'intro.weight' is (8, 3, 3, 3) in the file but (20000, 3, 3, 3)" in message
    assert int(peak_mib) < 1000, f"{peak_mib} MiB: the declared network was allocated"
    mislabelled = _relabel(good, tmp_path / "jdrl.safetensors", method="jdrl")
    with pytest.raises(ValueError, match=r"jdrl\.safetensors: the file says it holds a 'jdrl' model but its recipe is "
                                         r"for 'nafnet'"):
        load_model(mislabelled, expect_method="jdrl")
    with safe_open(str(good), framework="pt") as f:  # a method this version does not have, in file and recipe alike
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["method"], meta["recipe"] = "foo", json.dumps({**json.loads(meta["recipe"]), "method": "foo"})
    save_file(tensors, str(tmp_path / "foo.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"foo\.safetensors: unknown method 'foo' \(known: "):
        load_model(tmp_path / "foo.safetensors")


def test_api_deblur_refuses_an_image_above_the_pixel_limit_before_copying_it(monkeypatch, tmp_path):
    import torch

    import defocuskit
    from test_infer import _export_nafnet

    model = defocuskit.load(_export_nafnet(tmp_path / "m.safetensors"), device="cpu")
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # 1.2 GB as a real array; a view here
    with pytest.raises(ValueError, match=r"image: 20000x20000 \(400 MP\) is above the limit of 200 MP"):
        model.deblur(huge)
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "100")
    with pytest.raises(ValueError, match=r"image: 16x8 .*DEFOCUSKIT_MAX_PIXELS"):
        model.deblur(torch.zeros(3, 8, 16))
    monkeypatch.setenv("DEFOCUSKIT_MAX_PIXELS", "200")
    assert model.deblur(np.zeros((8, 16, 3), np.uint8)).shape == (8, 16, 3)


def _retyped(src: Path, dst: Path, dtype, nudge: float = 0.0) -> Path:
    """A copy of a model file with every tensor in `dtype` (the first one nudged by `nudge`)."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k).to(dtype) for k in f.keys()}
    first = next(iter(tensors))
    tensors[first] = tensors[first] + nudge if nudge else tensors[first]
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_a_recipe_of_more_blocks_than_the_file_has_tensors_is_refused_while_building(tmp_path):
    """Block counts cost Python objects even on the meta device (20000 NAFNet middle blocks: 30 s and 800 MB before
    the keys were compared): the network is stopped once it has more parameters than the file has tensors."""
    from test_infer import _export_nafnet

    from defocuskit.inference.load import load_model

    good = _export_nafnet(tmp_path / "m.safetensors")
    deep = _relabel(good, tmp_path / "deep.safetensors", **{"model.middle_blocks": 2000})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"deep\.safetensors: the recipe in its metadata describes a 'nafnet' network "
                                         r"of more parameters than a network of the file's \d+ tensors has"):
        load_model(deep)
    assert time.perf_counter() - start < 2.0
    # a recipe value no network can be built of: one line naming the file (was a 12-line TypeError from torch.empty)
    absurd = _relabel(good, tmp_path / "absurd.safetensors", **{"model.width": 10 ** 30})
    with pytest.raises(ValueError, match=r"absurd\.safetensors: the recipe in its metadata does not build a 'nafnet' "
                                         r"network \(TypeError: ") as info:
        load_model(absurd)
    assert "\n" not in str(info.value)


def test_weights_of_another_dtype_load_only_where_the_network_holds_them_exactly(tmp_path):
    """int / bool weights were cast into the float network silently (and float64 ones rounded): refused, naming the
    tensor, by load and by train.init_from; float16 / bfloat16 / float32-valued float64 load as they are."""
    import torch
    from test_infer import _export_nafnet

    from defocuskit.inference.load import load_model
    from defocuskit.train.checks import TrainingError
    from defocuskit.train.init import load_initial_weights

    good = _export_nafnet(tmp_path / "m.safetensors", identity=False)
    _, _, reference = load_model(good)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        _, _, net = load_model(_retyped(good, tmp_path / f"{dtype}.safetensors", dtype))
        for key, value in net.state_dict().items():
            assert value.dtype == torch.float32 and torch.equal(value, reference.state_dict()[key].to(dtype).float())
    for dtype, nudge in ((torch.int32, 0.0), (torch.uint8, 0.0), (torch.bool, 0.0), (torch.float64, 1e-12)):
        bad = _retyped(good, tmp_path / f"bad-{str(dtype)[6:]}.safetensors", dtype, nudge)
        kind = ("in the file but float32 in the network" if nudge == 0
                else "in the file with values float32, the network's dtype")
        with pytest.raises(ValueError, match=rf"bad-{str(dtype)[6:]}\.safetensors: tensor '[\w.]+' is "
                                             rf"{str(dtype)[6:]} {kind}"):
            load_model(bad)
        with pytest.raises(TrainingError, match=rf"train.init_from src: tensor '[\w.]+' is {str(dtype)[6:]} {kind}"):
            load_initial_weights(reference, bad, "nafnet", "src")
