"""The f-number bound on an estimated CoC map (issue 20): a scene's CoC at f/N is its CoC at f/1 over N (thin
lens), so a map reads at most K x the long side / N pixels, K the largest CoC x f-number of the map's training
shards (`inference.coc_bound: auto`); it reaches eval, deblur and the API, and a bad value is named."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.config.typed import RecipeError
from defocuskit.data.coc_bound import coc_bound_of
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import ShardError, iter_raw, shard_urls
from defocuskit.data.sample import IngestOptions
from defocuskit.data.shards import encode_members
from defocuskit.imaging import optics
from defocuskit.imaging.blur_estimate import estimate_coc
from defocuskit.inference.coc_source import CocError, CocSource
from defocuskit.io.images import write_image
from defocuskit.io.modelfile import read_model_file, save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe, resolve_recipe
from defocuskit.train.data import resolve_coc_bound
from defocuskit.train.loop import train

runner = CliRunner()


def _tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _sample(h: int, w: int, coc_px: float | None, f_number: float | None) -> dict[str, bytes]:
    img = np.full((h, w, 3), 128, np.uint8)
    coc = None if coc_px is None else np.full((h, w), coc_px, np.float32)
    return encode_members(img, img, coc, {"source": "synthetic", "f_number": f_number})


def _blurred_texture(size: int = 64, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    sharp = cv2.resize(rng.random((size // 4, size // 4, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(sharp, (0, 0), sigma)


def _map_file(path: Path, bound: float | None) -> Path:
    recipe = resolve_recipe({"method": "defocus-map", "model": {"arch": "dilated", "width": 8}})
    raw = recipe_to_dict(recipe)
    raw["inference"]["coc_bound"] = bound
    torch.manual_seed(0)
    net = get_method("defocus-map").build(recipe.model, recipe.objective, False).eval()
    with torch.no_grad():  # a map that reads well above the bound everywhere (softplus output x coc_scale)
        for p in net.parameters():
            p.mul_(0.0)
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.fill_(2.0)
    save_model(path, net.state_dict(), "defocus-map", raw)
    return path


def test_the_bound_is_the_thin_lens_scaling() -> None:
    coc = np.array([[0.5, 1.0, 5.0, 10.0]], np.float32)
    # K 0.1 of a 128 px long side: 12.8 px at f/1, 1.6 at f/8, 9.14 at f/1.4
    np.testing.assert_allclose(optics.bound_coc(coc, 8.0, 0.1, 128), [[0.5, 1.0, 1.6, 1.6]], rtol=1e-6)
    np.testing.assert_allclose(optics.bound_coc(coc, 1.4, 0.1, 128), [[0.5, 1.0, 5.0, 128 * 0.1 / 1.4]], rtol=1e-6)
    with pytest.raises(ValueError, match="f_number"):
        optics.bound_coc(coc, 0.0, 0.1, 128)


def test_the_bound_of_shards_is_their_largest_coc_times_f_number(tmp_path: Path) -> None:
    shard = _tar(tmp_path / "train-000000.tar", [
        ("a", _sample(32, 64, 2.0, 4.0)),  # 2 px x f/4 / 64 px = 0.125
        ("b", _sample(50, 100, 3.0, 2.0)),  # 3 x 2 / 100 = 0.06
        ("c", _sample(32, 32, 9.0, None)),  # no f-number: not counted
        ("d", _sample(32, 32, None, 8.0)),  # no coc.png: not counted
    ])
    found = coc_bound_of([str(shard)])
    assert found.bound == pytest.approx(0.125) and found.samples == 2 and found.key == "a"
    assert coc_bound_of([]).bound is None
    # `auto` over shards where no sample has both: no bound (training goes on, and says so)
    plain = _tar(tmp_path / "plain-000000.tar", [("c", _sample(32, 32, 9.0, None)), ("d", _sample(32, 32, None, 8.0))])
    recipe, line = resolve_coc_bound(load_recipe("defocus-map-tiny"), [str(plain)])
    assert recipe.inference.coc_bound is None and "auto -> null (no training sample has coc.png" in line
    recipe, line = resolve_coc_bound(load_recipe("defocus-map-tiny"), [str(shard)])
    assert recipe.inference.coc_bound == pytest.approx(0.125) and "auto -> 0.125" in line
    broken = _tar(tmp_path / "broken-000000.tar", [("e", dict(_sample(32, 32, 1.0, 4.0), **{"coc.png": b"junk"}))])
    with pytest.raises(ShardError, match=r"broken-000000.tar: sample e: .*coc.png"):
        coc_bound_of([str(broken)])


@pytest.fixture(scope="module")
def render_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coc-bound") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=48,
                                                             synthetic_f_numbers=(1.4, 8.0)), progress=False)
    return out


def test_renders_give_one_bound_at_every_f_number(render_shards: Path, tmp_path: Path) -> None:
    """Rendered with a thin lens, CoC x N is the same at f/1.4 and f/8: the bound does not depend on the aperture."""
    by_f: dict[float, list[tuple[str, dict[str, bytes]]]] = {}
    for url in shard_urls(render_shards, "train"):
        for raw in iter_raw(url):
            f_number = json.loads(raw["json"])["f_number"]
            members = {k: v for k, v in raw.items() if not k.startswith("__")}
            by_f.setdefault(f_number, []).append((raw["__key__"], members))
    assert sorted(f for f in by_f if f > 0) == [1.4, 8.0]  # -1: the sharp-only samples' unknown
    bounds = [coc_bound_of([str(_tar(tmp_path / f"f{i}-000000.tar", by_f[f]))]).bound
              for i, f in enumerate((1.4, 8.0))]
    assert bounds[0] == pytest.approx(bounds[1], rel=0.03) and bounds[0] > 0.02


def test_training_resolves_auto_and_refuses_it_where_it_does_not_apply(render_shards: Path, tmp_path: Path) -> None:
    recipe = load_recipe("defocus-map-tiny", [f"data.train={render_shards}", f"output_dir={tmp_path / 'map'}",
                                              "train.max_steps=2", "train.checkpoint_every=2", "train.log_every=1",
                                              "data.image_size=32"])
    assert recipe.inference.coc_bound == "auto"
    _, meta = read_model_file(train(recipe))
    expected = coc_bound_of(shard_urls(render_shards, "train")).bound
    assert meta["recipe"]["inference"]["coc_bound"] == pytest.approx(expected, rel=1e-5)
    nafnet = load_recipe("nafnet-tiny", [f"data.train={render_shards}", f"output_dir={tmp_path / 'n'}",
                                         "inference.coc_bound=0.1"])
    with pytest.raises(RecipeError, match="inference.coc_bound bounds a defocus-map model"):
        train(nafnet)
    with pytest.raises(RecipeError, match="inference.coc_bound: expected auto"):
        load_recipe("defocus-map-tiny", ["inference.coc_bound=often"])


def test_an_estimated_map_is_bounded_where_the_f_number_is_known(tmp_path: Path) -> None:
    image = _blurred_texture()
    raw = estimate_coc(image)
    source = CocSource.create("edge", bound=0.02)  # 0.02 x 64 / 8 = 0.16 px at f/8
    assert raw.max() > 0.5  # the estimate reads more than the bound: the test can see the bound act
    np.testing.assert_allclose(source(image, {"f_number": 8.0}, name="a"), np.minimum(raw, 0.16), rtol=1e-6)
    np.testing.assert_array_equal(source(image, {"f_number": None}, name="b"), raw)  # unknown f-number: as read
    assert CocSource.create("edge", bound=0).bound is None
    assert "at most 0.02 x the long side / N" in source.describe()["description"]
    with pytest.raises(CocError, match="--coc-bound bounds an estimated map"):
        CocSource.create("oracle", bound=0.1)
    with pytest.raises(CocError, match="--coc-bound is given without --coc"):
        CocSource.create(None, bound=0.1)
    file = _map_file(tmp_path / "map.safetensors", 0.01)  # its own bound: 0.01 x 64 / 8 = 0.08 px
    own = CocSource.create("map", file)
    assert own.bound == 0.01
    assert own(image, {"f_number": 8.0}, name="a").max() == pytest.approx(0.08)
    assert own(image, None, name="b").min() > 1.0
    assert CocSource.create("map", file, bound=0).bound is None  # --coc-bound 0: the map as read


def test_deblur_and_the_api_bound_a_map_model_at_the_shots_f_number(tmp_path: Path) -> None:
    import defocuskit

    file = _map_file(tmp_path / "map.safetensors", 0.01)
    photo = tmp_path / "in" / "shot.png"
    photo.parent.mkdir()
    write_image(photo, (np.clip(_blurred_texture(), 0, 1) * 255).astype(np.uint8))
    for f_number, out in ((8.0, "f8"), (None, "unknown")):
        args = ["deblur", str(photo), "--checkpoint", str(file), "--out", str(tmp_path / out), "--device", "cpu"]
        result = runner.invoke(app, args + (["--f-number", str(f_number)] if f_number else []))
        assert result.exit_code == 0, result.output
        coc = cv2.imread(str(tmp_path / out / "shot_coc.png"), cv2.IMREAD_UNCHANGED) / 256.0
        record = json.loads((tmp_path / out / "deblur.json").read_text())["images"][0]
        assert record["f_number"] == f_number and record["coc_bound"] == (0.01 if f_number else None)  # as applied
        if f_number:
            assert coc.max() == pytest.approx(0.08, abs=1 / 256)
        else:
            assert coc.min() > 1.0
    model = defocuskit.load(file, device="cpu")
    image = _blurred_texture()
    assert model.coc_bound == 0.01
    assert model.coc_map(image, f_number=8.0).max() == pytest.approx(0.08)
    assert model.coc_map(image).min() > 1.0


def test_eval_bounds_the_map_it_deblurs_with(render_shards: Path, tmp_path: Path) -> None:
    """`eval --coc edge --coc-bound K`: prox deblurs with the bounded map (its scores move) and the report says so."""
    reports = {}
    for name, extra in (("raw", []), ("bounded", ["--coc-bound", "0.004"])):
        args = ["eval", "--shards", str(render_shards), "--baseline", "prox", "--coc", "edge", "--limit", "4",
                "--report", str(tmp_path / name), "--device", "cpu", *extra]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    coc = {k: v["protocol"]["coc"] for k, v in reports.items()}
    assert coc["bounded"]["bound"] == 0.004 and coc["raw"]["bound"] is None
    psnr = {k: [r["psnr"] for r in v["rows"] if r["method"] == "prox"] for k, v in reports.items()}
    assert psnr["raw"] != psnr["bounded"]
    refused = runner.invoke(app, ["eval", "--shards", str(render_shards), "--baseline", "prox", "--coc", "oracle",
                                  "--coc-bound", "0.1", "--report", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "--coc-bound bounds an estimated map" in refused.output


def test_the_api_takes_a_map_model_and_the_f_number_together(tmp_path: Path) -> None:
    import defocuskit
    from defocuskit.api import _coc_band, _coc_sources

    bounded = defocuskit.load(_map_file(tmp_path / "map.safetensors", 0.01), device="cpu")
    free = defocuskit.load(_map_file(tmp_path / "free.safetensors", None), device="cpu")
    (source,) = _coc_sources(bounded, 8.0, (1, 64, 48))
    assert source == (bounded, 8.0, 64, 0.01)
    band = _blurred_texture(64)[:20, :48]  # a band of rows: bounded by the whole image's long side (64 px)
    assert _coc_band(source, band, 0, 20).max() == pytest.approx(0.01 * 64 / 8)
    assert _coc_sources(free, None, (1, 64, 48)) == [free]  # no bound: the map as read
    for model, k in ((free, None), (bounded, 0)):  # no bound, coc_bound=0: f_number= would not be used (was dropped)
        with pytest.raises(ValueError, match=r"^f_number=8.0: beside coc= it bounds the map by K .* none is set"):
            _coc_sources(model, 8.0, (1, 64, 48), k)
    (edge,) = _coc_sources("edge", 8.0, (1, 64, 48), 0.02)  # the edge estimate, bounded as --coc edge --coc-bound
    assert edge == ("edge", 8.0, 64, 0.02)
    raw = _coc_band("edge", band, 0, 20)
    assert raw.max() > 0.16 and _coc_band(edge, band, 0, 20).max() == pytest.approx(0.02 * 64 / 8)
    with pytest.raises(ValueError, match="give coc= or f_number=, not both"):
        _coc_sources(np.zeros((64, 48), np.float32), 8.0, (1, 64, 48))
    with pytest.raises(ValueError, match="coc_bound=0.1: K >= 0"):
        _coc_sources(None, 8.0, (1, 64, 48), 0.1)


def test_inspect_prints_each_splits_bound(render_shards: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["inspect", str(render_shards), "--coc-bound", "--sheet", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    train = coc_bound_of(shard_urls(render_shards, "train"))
    assert f"train: largest CoC x f-number / long side {train.bound:.5f} over {train.samples} samples" in result.output
    assert "--coc-bound" not in runner.invoke(app, ["inspect", str(render_shards), "--sheet",
                                                    str(tmp_path / "t.png")]).output


def test_the_bound_turns_an_overread_at_f8_into_a_gain() -> None:
    """What the bound is for: a shot at f/8 blurred by 1.5 px that a map reads as 5 px (an unseen soft texture). The
    prox step with the map as read loses to the input; cut to K x 96 / 8 = 1.5 px (K 0.125, this camera's CoC x N) it
    beats it."""
    from defocuskit.eval.baselines import prox_baseline
    from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb, srgb_to_linear

    rng = np.random.default_rng(3)
    sharp = cv2.GaussianBlur(rng.random((96, 96, 3)).astype(np.float32), (0, 0), 0.7)
    x = srgb_to_linear(torch.from_numpy(sharp.transpose(2, 0, 1))[None])  # the blur mixes light, as prox assumes
    shot = linear_to_srgb(DefocusOperator(torch.full((1, 1, 96, 96), 1.5), "over").forward(x))
    blurred = shot[0].numpy().transpose(1, 2, 0)
    read = np.full((96, 96), 5.0, np.float32)
    source = CocSource("map", bound=0.125)
    bounded = source.bounded(read, {"f_number": 8.0})
    assert bounded.max() == pytest.approx(1.5)

    def error(image: np.ndarray) -> float:
        return float(((image - sharp)[8:-8, 8:-8] ** 2).mean())

    as_read = error(prox_baseline(blurred, {"f_number": 8.0}, read))
    cut = error(prox_baseline(blurred, {"f_number": 8.0}, bounded))
    assert cut < error(blurred) < as_read, (cut, error(blurred), as_read)


def test_inspect_refuses_a_sheet_of_the_users_before_the_table_and_the_scan(render_shards: Path, tmp_path: Path,
                                                                            monkeypatch) -> None:
    """--sheet naming a file no inspect wrote was refused only after the table and --coc-bound's read of every
    coc.png; now before either."""
    import defocuskit.data.coc_bound as coc_bound
    from defocuskit.cli.app import app

    def scanned(*args, **kwargs):
        raise AssertionError("every coc.png was read before --sheet was judged")

    monkeypatch.setattr(coc_bound, "describe_bounds", scanned)
    mine = tmp_path / "photo.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\nmine")
    res = CliRunner().invoke(app, ["inspect", str(render_shards), "--coc-bound", "--sheet", str(mine)])
    assert res.exit_code == 1 and "exists and was not written by defocuskit inspect" in res.output, res.output
    assert "┃ split" not in res.output and mine.read_bytes() == b"\x89PNG\r\n\x1a\nmine"  # no table printed first
