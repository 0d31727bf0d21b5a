"""Tiled full-resolution inference: coverage, blending, exactness, determinism, file round trips."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from defocuskit.config.recipe import DataConfig, Recipe
from defocuskit.inference import files
from defocuskit.inference.files import deblur_files
from defocuskit.inference.restore import resolve_sampler, restore_image
from defocuskit.inference.tiling import TilingOptions, blend_window, tile_starts
from defocuskit.io.images import read_image, to_float, write_image
from defocuskit.methods.base import Method, Sampler

VABD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train"  # ../shared/fixtures


@dataclass
class _Sampler(Sampler):
    steps: int = 10


@dataclass
class _NoSteps(Sampler):
    pass


def _method(restore, output: str = "image") -> Method:
    return Method(name="identity", data="paired", ModelConfig=dict, ObjectiveConfig=dict, SamplerConfig=_Sampler,
                  build=lambda *a: nn.Identity(), loss=lambda *a: torch.zeros(()), restore=restore, output=output)


def _recipe(size: int = 32, sampler=None) -> Recipe:
    return Recipe(method="identity", data=DataConfig(image_size=size), sampler=sampler or _Sampler())


class _Recorder:
    """An identity 'method' that records what the tiling sends through it."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.steps: list[int] = []

    def __call__(self, model, blur, ctx):
        self.shapes.append(tuple(blur.shape))
        self.steps.append(getattr(ctx.sampler, "steps", -1))
        ctx.step(0, 1)
        return blur.clone()


@pytest.mark.parametrize("length,tile,overlap", [(70, 32, 8), (53, 32, 8), (32, 32, 8), (20, 32, 8), (1000, 256, 32),
                                                 (33, 32, 0), (97, 16, 15)])
def test_tile_starts_cover_every_pixel(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(max(length, tile), bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered[:length].all()
    assert starts[0] == 0 and starts == sorted(set(starts))
    if length >= tile:
        assert starts[-1] == length - tile  # flush with the edge, never past it
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tile_starts_rejects_bad_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)


def test_blend_window_smooth_and_positive() -> None:
    w = blend_window(32, 8)
    assert w.shape == (32, 32) and w.dtype == np.float32
    assert (w > 0).all() and w.max() == pytest.approx(1.0)
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert (np.diff(w[16, :9]) > 0).all()  # a rising ramp over the overlap
    assert (w[8:24, 8:24] == 1).all()
    assert (blend_window(16, 0) == 1).all()


@pytest.mark.parametrize("shape", [(70, 53, 3), (20, 25, 3), (32, 32, 3), (1, 40, 3), (33, 100, 1)])
def test_identity_restore_is_exact(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    image = rng.random(shape, dtype=np.float32)
    rec = _Recorder()
    out = restore_image(_method(rec), _recipe(32), nn.Identity(), image, progress=False,
                        tiling=TilingOptions(overlap=8, batch=3))
    assert out.shape == shape and out.dtype == np.float32
    assert np.abs(out - image).max() < 1e-6
    # Memory bound: never more than `batch` tiles of the training size at once.
    assert rec.shapes and all(s[0] <= 3 and s[2:] == (32, 32) for s in rec.shapes)


def test_real_photo_tiles_blend_exactly() -> None:
    img = to_float(read_image(VABD / "1_8" / "0002.JPG"))[200:300, 400:530]  # 100 x 130: not a tile multiple
    rec = _Recorder()
    out = restore_image(_method(rec), _recipe(48), nn.Identity(), img, progress=True, tiling=TilingOptions(overlap=12,
                                                                                                           batch=4))
    assert np.abs(out - img).max() < 1e-6
    assert sum(s[0] for s in rec.shapes) == len(tile_starts(100, 48, 12)) * len(tile_starts(130, 48, 12))


def test_noise_is_deterministic_per_seed() -> None:
    def noisy(model, blur, ctx):
        return blur + 0.1 * torch.randn(blur.shape, generator=ctx.generator)

    image = np.full((50, 45, 3), 0.5, np.float32)
    kw = dict(tiling=TilingOptions(overlap=8, batch=2), progress=False)
    a = restore_image(_method(noisy), _recipe(32), nn.Identity(), image, seed=3, **kw)
    b = restore_image(_method(noisy), _recipe(32), nn.Identity(), image, seed=3, **kw)
    c = restore_image(_method(noisy), _recipe(32), nn.Identity(), image, seed=4, **kw)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_steps_override_and_refusal() -> None:
    rec = _Recorder()
    image = np.zeros((40, 40, 3), np.float32)
    restore_image(_method(rec), _recipe(32), nn.Identity(), image, steps=3, progress=False,
                  tiling=TilingOptions(overlap=4))
    assert set(rec.steps) == {3}
    assert resolve_sampler(_recipe(32), None).steps == 10
    with pytest.raises(ValueError, match="no 'steps'"):
        resolve_sampler(_recipe(32, _NoSteps()), 5)


def test_defocus_map_output_has_one_channel() -> None:
    def coc(model, blur, ctx):
        return blur.mean(dim=1, keepdim=True) * 10.0

    image = np.random.default_rng(0).random((45, 70, 3), dtype=np.float32)
    out = restore_image(_method(coc, "defocus_map"), _recipe(32), nn.Identity(), image, progress=False,
                        tiling=TilingOptions(overlap=8))
    assert out.shape == (45, 70, 1)
    assert np.abs(out[:, :, 0] - image.mean(axis=2) * 10).max() < 1e-5


# ----------------------------------------------------------------------- with exported checkpoints


def _export_nafnet(path: Path, identity: bool = True, poison: str | None = None) -> Path:
    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods.recipes import resolve_recipe

    raw = {"method": "nafnet", "data": {"image_size": 32},
           "model": {"width": 8, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]}}
    recipe = resolve_recipe(raw)
    from defocuskit.methods import get_method

    method = get_method("nafnet")
    model = method.build(recipe.model, recipe.objective, False)
    if identity:  # NAFNet adds its input back: a zero last layer makes the network the identity
        nn.init.zeros_(model.ending.weight)
        nn.init.zeros_(model.ending.bias)
    state = model.state_dict()
    if poison is not None:  # what a diverged training run exports
        state[poison].view(-1)[:5] = float("nan")
    save_model(path, state, "nafnet", recipe_to_dict(recipe))
    return path


def test_deblur_files_keeps_size_and_bit_depth(tmp_path: Path) -> None:
    pytest.importorskip("defocuskit.inference.load")
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    crop = read_image(VABD / "2_8" / "0003.JPG")[500:545, 700:770]
    rng = np.random.default_rng(0)
    img16 = (crop.astype(np.uint16) << 8) + rng.integers(0, 256, crop.shape, dtype=np.uint16)
    write_image(tmp_path / "in" / "photo16.png", img16)
    write_image(tmp_path / "in" / "photo8.jpg", crop)
    jpg = read_image(tmp_path / "in" / "photo8.jpg")
    written = deblur_files([tmp_path / "in" / "photo16.png", tmp_path / "in" / "photo8.jpg"], ckpt, tmp_path / "out",
                           progress=False, tiling=TilingOptions(overlap=8, batch=2))
    assert [p.name for p in written] == ["photo16.png", "photo8.png"]
    out16, out8 = read_image(written[0]), read_image(written[1])
    assert out16.dtype == np.uint16 and out16.shape == img16.shape
    assert out8.dtype == np.uint8 and out8.shape == jpg.shape
    # The identity network through tiling and 16-bit I/O: every value comes back (rounding only).
    assert np.abs(out16.astype(np.int64) - img16).max() <= 1
    assert np.abs(out8.astype(np.int64) - jpg).max() <= 1


def test_deblur_writes_a_turned_jpeg_as_it_displays(tmp_path: Path) -> None:
    """A camera JPEG stored sideways with EXIF Orientation 6 comes out upright: the displayed (H, W), not the stored."""
    from PIL import Image, ImageOps

    crop = read_image(VABD / "2_8" / "0003.JPG")[500:545, 700:770]  # 45 x 70, displayed
    image = Image.fromarray(np.ascontiguousarray(np.rot90(crop, 1)))  # stored 70 x 45, shown turned back
    exif = image.getexif()
    exif[0x0112] = 6
    (tmp_path / "in").mkdir()
    image.save(tmp_path / "in" / "portrait.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "in" / "portrait.jpg") as im:
        assert ImageOps.exif_transpose(im).size == (70, 45)
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    (written,) = deblur_files([tmp_path / "in" / "portrait.jpg"], ckpt, tmp_path / "out", progress=False)
    out = read_image(written)
    assert out.shape == (45, 70, 3)
    assert np.abs(out.astype(np.int64) - read_image(tmp_path / "in" / "portrait.jpg")).max() <= 1  # identity net
    assert np.abs(out.astype(np.float64) - crop).mean() < 3  # upright: the crop it was made from, up to JPEG


def test_deblur_carries_the_photos_colour_profile(tmp_path: Path) -> None:
    """A photo's ICC profile (a phone's Display P3, a camera's Adobe RGB) goes into the PNG deblur writes, so the
    output displays in the photo's colours; a profile of another colour space than the output's is left out."""
    from PIL import Image, ImageCms

    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert rgb_profile[16:20] == b"RGB "
    crop = read_image(VABD / "2_8" / "0003.JPG")[500:540, 700:760]
    (tmp_path / "in").mkdir()
    Image.fromarray(crop).save(tmp_path / "in" / "tagged.jpg", icc_profile=rgb_profile, quality=95)
    Image.fromarray(crop).save(tmp_path / "in" / "plain.jpg", quality=95)
    gray = Image.fromarray(crop[:, :, 0])
    gray.save(tmp_path / "in" / "gray.png", icc_profile=rgb_profile)  # a profile that does not fit: not carried
    rgba = np.dstack([crop, np.full(crop.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "in" / "alpha.png", icc_profile=rgb_profile)
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    deblur_files([tmp_path / "in"], ckpt, tmp_path / "out", progress=False)
    for name, profile in (("tagged", rgb_profile), ("plain", None), ("gray", None), ("alpha", rgb_profile)):
        with Image.open(tmp_path / "out" / f"{name}.png") as im:
            assert im.info.get("icc_profile") == profile, name
            im.load()  # the chunk is well formed
        assert read_image(tmp_path / "out" / f"{name}.png").shape[:2] == (40, 60)
    assert np.abs(read_image(tmp_path / "out" / "tagged.png").astype(int) - read_image(tmp_path / "in" / "tagged.jpg")
                  ).max() <= 1  # identity net: the pixels as before


def test_deblur_files_keeps_gray_as_gray_and_carries_alpha_through(tmp_path: Path) -> None:
    import cv2

    import defocuskit

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65535, (40, 50), dtype=np.uint16)
    bgra8 = rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)
    bgra16 = rng.integers(0, 65535, (40, 50, 4), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    for name, arr in (("gray16", gray16), ("rgba8", bgra8), ("rgba16", bgra16)):
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), arr)
    deblur_files([tmp_path / "in"], ckpt, tmp_path / "out", progress=False)
    out = {n: cv2.imread(str(tmp_path / "out" / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in ("gray16", "rgba8", "rgba16")}
    assert out["gray16"].shape == gray16.shape and out["gray16"].dtype == np.uint16
    api = defocuskit.load(ckpt, device="cpu").deblur(gray16)  # the API gives gray back for gray: the same image
    assert np.abs(out["gray16"].astype(np.int64) - api).max() <= 1
    assert np.abs(out["gray16"].astype(np.int64) - gray16).max() <= 1  # the identity network
    for name, given in (("rgba8", bgra8), ("rgba16", bgra16)):
        assert out[name].shape == given.shape and out[name].dtype == given.dtype
        assert np.array_equal(out[name][:, :, 3], given[:, :, 3])  # alpha carried through unchanged
        assert np.abs(out[name][:, :, :3].astype(np.int64) - given[:, :, :3]).max() <= 1  # colours in their order


def test_deblur_files_errors_before_work(tmp_path: Path) -> None:
    pytest.importorskip("defocuskit.inference.load")
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors", identity=False)
    write_image(tmp_path / "a.png", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="no 'steps'"):  # NAFNet's sampler has no steps
        deblur_files([tmp_path / "a.png"], ckpt, tmp_path / "out", steps=5, progress=False)
    assert not (tmp_path / "out").exists()  # refused before any output
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.safetensors"):
        deblur_files([tmp_path / "a.png"], tmp_path / "junk.safetensors", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        deblur_files([tmp_path / "a.png"], tmp_path / "missing.safetensors", tmp_path / "out", progress=False)
    run = tmp_path / "run"  # a run folder given for its model: the model file named
    run.mkdir()
    (run / "model.safetensors").write_bytes(ckpt.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"run is a folder; give .*run/model\.safetensors, the model the run"):
        deblur_files([tmp_path / "a.png"], run, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="no such file"):
        deblur_files([tmp_path / "nope.png"], ckpt, tmp_path / "out", progress=False)
    write_image(tmp_path / "sub" / "a.jpg", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="rename"):
        deblur_files([tmp_path / "a.png", tmp_path / "sub" / "a.jpg"], ckpt, tmp_path / "out", progress=False)


def test_deblur_never_writes_over_an_input_or_a_file_it_did_not_write(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("defocuskit.inference.load")
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    photos = tmp_path / "dir"
    write_image(photos / "ok.png", np.full((24, 24, 3), 7, np.uint8))
    original = (photos / "ok.png").read_bytes()
    with pytest.raises(ValueError, match=r"ok\.png: the output .* would replace this input photo"):
        deblur_files([photos / "ok.png"], ckpt, photos, progress=False)
    with pytest.raises(ValueError, match="would replace this input photo"):
        deblur_files([photos], ckpt, photos, progress=False)  # the folder as input, itself as --out
    assert (photos / "ok.png").read_bytes() == original and sorted(p.name for p in photos.iterdir()) == ["ok.png"]
    out = tmp_path / "out"
    write_image(out / "ok.png", np.zeros((8, 8, 3), np.uint8))  # the user's own file of that name
    theirs = (out / "ok.png").read_bytes()
    with pytest.raises(ValueError, match=r"ok\.png: exists and was not written by an earlier deblur"):
        deblur_files([photos / "ok.png"], ckpt, out, progress=False)
    assert (out / "ok.png").read_bytes() == theirs
    # a folder deblur wrote into is its own: reruns and other photos add to it, deblur.json lists them all
    mine = tmp_path / "mine"
    write_image(photos / "other.png", np.full((24, 24, 3), 9, np.uint8))
    write_image(photos / "third.png", np.full((24, 24, 3), 5, np.uint8))
    deblur_files([photos / "ok.png"], ckpt, mine, progress=False)
    deblur_files([photos / "other.png"], ckpt, mine, progress=False)
    deblur_files([photos / "ok.png"], ckpt, mine, progress=False)
    listed = [Path(r["output"]).name for r in json.loads((mine / "deblur.json").read_text())["images"]]
    assert sorted(listed) == ["ok.png", "other.png"]
    # run from another working folder: its own outputs are still known as its own
    with monkeypatch.context() as m:
        m.chdir(tmp_path)
        deblur_files([photos / "ok.png"], ckpt, Path("rel"), progress=False)  # deblur.json: "rel/ok.png"
        m.chdir(photos)
        deblur_files([photos / "ok.png"], ckpt, Path("..") / "rel", progress=False)
    # killed between writing an image and its record: the listing was written first, so the rerun replaces it
    real_write = files.write_output

    def killed(dest, data, listed):
        real_write(dest, data, listed)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "write_output", killed)
    with pytest.raises(KeyboardInterrupt):
        deblur_files([photos / "third.png"], ckpt, mine, progress=False)
    monkeypatch.setattr(files, "write_output", real_write)
    assert (mine / "third.png").exists()
    deblur_files([photos / "third.png"], ckpt, mine, progress=False)
    records = json.loads((mine / "deblur.json").read_text())["images"]
    assert sorted(Path(r["output"]).name for r in records) == ["ok.png", "other.png", "third.png"]
    assert not any(r.get("pending") for r in records)
    # killed (kill -9) while the image's temporary was being filled: listed as begun, so the rerun removes it
    from defocuskit.io import atomic

    def killed_mid_write(dest, data, listed):
        with atomic.atomic_path(dest, partial=atomic.new_token()) as tmp:
            listed(tmp.name)
            tmp.write_bytes(data[:10])
            leftover.append(tmp)
            raise SystemExit  # as kill -9: the temporary stays (put back below, since the block removes it)

    leftover: list[Path] = []
    monkeypatch.setattr(files, "write_output", killed_mid_write)
    write_image(photos / "fourth.png", np.full((24, 24, 3), 7, np.uint8))
    with pytest.raises(SystemExit):
        deblur_files([photos / "fourth.png"], ckpt, mine, progress=False)
    monkeypatch.setattr(files, "write_output", real_write)
    leftover[0].write_bytes(b"half an image")  # what kill -9 leaves
    assert json.loads((mine / "deblur.json").read_text())["images"][-1]["partial"] == leftover[0].name
    deblur_files([photos / "other.png"], ckpt, mine, progress=False)  # any rerun into the folder removes it
    assert not leftover[0].exists() and not (mine / "fourth.png").exists()
    # a file the user put where the killed run had not yet written: listed as begun, but not what it began
    write_image(mine / "fourth.png", np.full((24, 24, 3), 99, np.uint8))
    put = (mine / "fourth.png").read_bytes()
    with pytest.raises(ValueError, match=r"fourth\.png: not the image a killed deblur began to write there"):
        deblur_files([photos / "fourth.png"], ckpt, mine, progress=False)
    assert (mine / "fourth.png").read_bytes() == put
    (mine / "fourth.png").unlink()
    # a file of the user's at the name a run draws for its temporary: in the way, named, left as it is, and not
    # listed, so the next run (another name) leaves it as well
    monkeypatch.setattr(atomic, "new_token", lambda: "0badcafe")
    users = mine / ".third.png.0badcafe.defocuskit-partial"
    users.write_bytes(b"user's")
    with pytest.raises(FileExistsError, match=r"\.third\.png\.0badcafe\.defocuskit-partial: in the way"):
        deblur_files([photos / "third.png"], ckpt, mine, progress=False)
    monkeypatch.undo()
    deblur_files([photos / "third.png"], ckpt, mine, progress=False)
    assert users.read_bytes() == b"user's"
    users.unlink()
    # an older version's fixed temporary name, listed by its journal: not removed (it cannot be told from a user's)
    old = mine / ".third.png.defocuskit-partial"
    old.write_bytes(b"user's too")
    log = json.loads((mine / "deblur.json").read_text())
    log["images"].append({"input": "x", "output": str(mine / "third.png"), "pending": True, "partial": old.name})
    (mine / "deblur.json").write_text(json.dumps(log))
    deblur_files([photos / "other.png"], ckpt, mine, progress=False)
    assert old.read_bytes() == b"user's too"
    old.unlink()
    retouched = np.full((24, 24, 3), 200, np.uint8)  # the user retouches an output: a rerun leaves it alone
    write_image(mine / "other.png", retouched)
    edited = (mine / "other.png").read_bytes()
    with pytest.raises(ValueError, match=r"other\.png: changed since deblur wrote it"):
        deblur_files([photos / "other.png"], ckpt, mine, progress=False)
    assert (mine / "other.png").read_bytes() == edited
    # a second deblur into a folder another one is writing stops at once, naming it, and touches nothing
    from defocuskit.io import locks

    before = sorted((p.name, p.stat().st_mtime_ns) for p in mine.iterdir() if "deblur.lock" not in p.name)
    with locks.hold(mine / files.RUN_LOCK, "deblur", "busy"):
        with pytest.raises(ValueError, match=r"mine: another deblur is writing this folder \(pid \d+ .*\); wait"):
            deblur_files([photos / "third.png"], ckpt, mine, progress=False)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in mine.iterdir() if "deblur.lock" not in p.name) == before
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "deblur.json").write_text("my notes")
    with pytest.raises(ValueError, match=r"deblur\.json: exists and is not a deblur\.json written by defocuskit"):
        deblur_files([photos / "ok.png"], ckpt, tmp_path / "foreign", progress=False)
    # one that is JSON but not ours (no list of records, an output that is no path, nested past Python's stack)
    for text in ('{"images": {"output": "ok.png"}}', '{"images": [{"output": 5}]}', '{"images": [{"output": null}]}',
                 '{"images": [' + "[" * 100000 + "]" * 100000 + "]}"):
        (tmp_path / "foreign" / "deblur.json").write_text(text)
        with pytest.raises(ValueError, match=r"deblur\.json: exists and is not a deblur\.json written by defocuskit"):
            deblur_files([photos / "ok.png"], ckpt, tmp_path / "foreign", progress=False)
        assert (tmp_path / "foreign" / "deblur.json").read_text() == text


def test_deblur_never_writes_over_a_file_put_in_out_while_it_runs(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("defocuskit.inference.load")
    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    for name in ("a", "b"):
        write_image(tmp_path / "in" / f"{name}.png", np.full((24, 24, 3), 9, np.uint8))
    out, real_write = tmp_path / "out", files.write_output

    def put_while_a_runs(content: bytes):
        def write(dest, data, listed):
            real_write(dest, data, listed)
            if dest.name == "a.png":  # after every check: the user saves a file where b's output goes
                (out / "b.png").write_bytes(content)
        return write

    monkeypatch.setattr(files, "write_output", put_while_a_runs(b"the user's"))
    with pytest.raises(ValueError, match=r"b\.png: put there or changed while this deblur ran; it is left as it is"):
        deblur_files([tmp_path / "in"], ckpt, out, progress=False)
    assert (out / "b.png").read_bytes() == b"the user's"
    assert [Path(r["output"]).name for r in json.loads((out / "deblur.json").read_text())["images"]] == ["a.png"]
    (out / "b.png").unlink()
    monkeypatch.setattr(files, "write_output", real_write)
    deblur_files([tmp_path / "in"], ckpt, out, progress=False)  # the same command finishes it
    monkeypatch.setattr(files, "write_output", put_while_a_runs(b"retouched"))  # an earlier output edited meanwhile
    with pytest.raises(ValueError, match=r"b\.png: put there or changed while this deblur ran"):
        deblur_files([tmp_path / "in"], ckpt, out, progress=False)
    assert (out / "b.png").read_bytes() == b"retouched"
    (out / "b.png").unlink()

    def put_as_it_is_listed(dest, data, listed):  # the last moment: between the look and the rename
        def listing(temporary):
            listed(temporary)
            dest.write_bytes(b"just now")
        real_write(dest, data, listing)

    monkeypatch.setattr(files, "write_output", put_as_it_is_listed)
    with pytest.raises(FileExistsError, match=r"b\.png: exists \(it appeared while this command ran\)"):
        deblur_files([tmp_path / "in" / "b.png"], ckpt, out, progress=False)
    assert (out / "b.png").read_bytes() == b"just now"


def test_defocus_map_checkpoint_writes_coc_png(tmp_path: Path) -> None:
    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods import get_method
    from defocuskit.methods.recipes import resolve_recipe

    recipe = resolve_recipe({"method": "defocus-map", "data": {"image_size": 32},
                             "model": {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
                                       "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8}})
    model = get_method("defocus-map").build(recipe.model, recipe.objective, False)
    save_model(tmp_path / "coc.safetensors", model.state_dict(), "defocus-map", recipe_to_dict(recipe))
    write_image(tmp_path / "shot.png", read_image(VABD / "1_8" / "0001.JPG")[:40, :50])
    (out,) = deblur_files([tmp_path / "shot.png"], tmp_path / "coc.safetensors", tmp_path / "maps", progress=False,
                          tiling=TilingOptions(overlap=8))
    assert out.name == "shot_coc.png"
    import cv2

    coc = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert coc.dtype == np.uint16 and coc.shape == (40, 50)
    assert coc.max() > 0  # softplus output: a positive CoC, stored as pixels x 256


def test_cli_deblur(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    img = read_image(VABD / "8" / "0001.JPG")[100:150, 200:260]
    write_image(tmp_path / "x.png", img)
    runner = CliRunner()
    res = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                              "--tile", "32", "--overlap", "8", "--batch", "3", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert np.abs(read_image(tmp_path / "o" / "x.png").astype(int) - img).max() <= 1
    res = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "none.safetensors"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "none.safetensors" in res.output
    res = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                              "--tile", "32", "--overlap", "40"])
    assert res.exit_code == 2 and "overlap" in res.output
    for value in ("inf", "nan", "0.01", "-2"):  # inf ran (deblur.json got `Infinity`); nan failed unnamed at the gate
        res = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out",
                                  str(tmp_path / "f"), "--coc", "fnumber", "--focus-gate", "3", "--f-number", value])
        assert res.exit_code == 2 and f"--f-number {value}: not an f-number a lens has (f/0.7 to f/64)" in res.output, \
            res.output
        assert not (tmp_path / "f").exists()
    for coc in ("edge", "fnumber"):  # a NAFNet without a gate uses no map: --coc was silently ignored, exit 0
        res = runner.invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out",
                                  str(tmp_path / "c"), "--coc", coc, "--f-number", "2.8"])
        assert res.exit_code == 2 and "uses no CoC map and has no focus gate; leave --coc out" in res.output, res.output
        assert not (tmp_path / "c").exists()


def test_coc_fnumber_of_a_portrait_photo_is_its_landscape_twins(tmp_path: Path, monkeypatch) -> None:
    # a camera's sensor width spans the photo's long side: a phone held upright (EXIF orientation 6, read turned) got
    # the sensor width across its short side, a CoC 1.5x too small; so did a portrait with the turn in its pixels
    from PIL import Image

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    rgb = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "land.png")
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb))).save(tmp_path / "upright.png")
    turned = Image.fromarray(rgb)
    exif = turned.getexif()
    exif[0x0112] = 6
    turned.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    seen: dict[tuple[int, int], float] = {}

    def spy(image, result, coc_map, gate_px, smooth):
        seen.setdefault(image.shape[:2], set()).add(float(coc_map.max()))
        return result

    monkeypatch.setattr(files, "gate", spy)
    deblur_files([tmp_path / n for n in ("land.png", "upright.png", "phone.jpg")], ckpt, tmp_path / "o", coc="fnumber",
                 f_number=2.0, focus_gate=1.0, progress=False, camera={"sensor_width_mm": 24.0})
    (landscape,), portrait = seen[(32, 48)], seen[(48, 32)]
    assert portrait == {landscape} and landscape == pytest.approx(50 / 2 * 50 / (2000 - 50) / (24 / 48), rel=1e-4)


# ----------------------------------------------------------------------- broken models and image files


def test_cli_deblur_refuses_a_model_with_nan_weights(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    ckpt = _export_nafnet(tmp_path / "runs" / "x" / "model.safetensors", poison="ending.weight")
    write_image(tmp_path / "x.png", np.full((40, 40, 3), 128, np.uint8))
    res = CliRunner().invoke(app, ["deblur", str(tmp_path / "x.png"), "--checkpoint", str(ckpt),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)  # a clean error, no traceback
    assert "model.safetensors" in res.output and "'ending.weight' holds 5 NaN/inf values of 216" in res.output
    assert not (tmp_path / "o").exists()


def test_read_image_empty_corrupt_and_unreadable_files(tmp_path: Path, monkeypatch) -> None:
    from defocuskit.io.formats import ImageError
    from defocuskit.io.images import check_image, encode_png

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="empty file"):
        check_image(tmp_path / "empty.png")
    (tmp_path / "empty.nef").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.nef: empty file"):
        read_image(tmp_path / "empty.nef")
    png = encode_png(np.full((16, 16, 3), 7, np.uint8))
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: .*corrupt, truncated"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "ok.png").write_bytes(png)
    check_image(tmp_path / "ok.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "fromfile", denied)  # we may run as root: chmod would not stop us
    with pytest.raises(ImageError, match=r"ok\.png: permission denied"):
        read_image(tmp_path / "ok.png")
    (tmp_path / "shot.nef").write_bytes(b"\x00" * 64)
    monkeypatch.setattr("defocuskit.io.images.open", denied, raising=False)  # RAW files are opened, not np.fromfile'd
    with pytest.raises(ImageError, match=r"shot\.nef: permission denied"):
        read_image(tmp_path / "shot.nef")


def test_cli_deblur_bad_images_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    ckpt = _export_nafnet(tmp_path / "nafnet.safetensors")
    write_image(tmp_path / "in" / "good.png", np.full((40, 40, 3), 128, np.uint8))
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    runner = CliRunner()
    res = runner.invoke(app, ["deblur", str(tmp_path / "in" / "good.png"), str(tmp_path / "in" / "empty.png"),
                              "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert "empty.png: empty file (0 bytes)" in res.output
    assert not (tmp_path / "o").exists()  # refused before the model ran on good.png
    (tmp_path / "in" / "junk.jpg").write_bytes(b"not a jpeg at all")
    res = runner.invoke(app, ["deblur", str(tmp_path / "in" / "empty.png"), str(tmp_path / "in" / "good.png"),
                              str(tmp_path / "in" / "junk.jpg"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "2 of 3 input images" in res.output and "empty.png" in res.output and "junk.jpg" in res.output
    assert not (tmp_path / "o").exists()

    real_fromfile = np.fromfile

    def fromfile(file, *args, **kwargs):
        if Path(file).name == "good.png":
            raise PermissionError(13, "Permission denied", str(file))
        return real_fromfile(file, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", fromfile)
    res = runner.invoke(app, ["deblur", str(tmp_path / "in" / "good.png"), "--checkpoint", str(ckpt),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "good.png: permission denied" in res.output
    assert not (tmp_path / "o").exists()
