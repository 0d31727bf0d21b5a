"""DPDD's dual-pixel views end to end: `ingest --dpdd D --dual-pixel` stores left.png / right.png, the stream keeps
their disparity horizontal and their order under flips, and IFAN's disparity loss (the release's errs['dme'])
trains the disparity map estimator through the one loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import DataConfig
from defocuskit.data import reader
from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestError, IngestOptions
from defocuskit.io.images import write_image
from defocuskit.methods import get_method
from defocuskit.methods.ifan import dual_pixel_loss
from defocuskit.methods.recipes import load_recipe
from defocuskit.models.ifan import IFAN, disparity_warp
from defocuskit.train.augment import crop_and_augment, to_tensors
from defocuskit.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def _img(seed: int, shape=(40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65535, (*shape, 3), dtype=np.uint16)


def make_dpdd(root: Path, views_in: tuple[str, ...] = ("train", "test")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A DPDD folder: train_c 3 pairs, test_c 2 pairs, dual-pixel views for the splits in `views_in`; returns
    the views written, by the centre source's stem."""
    views = {}
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):  # the views' own names differ from the centre's: paired by sorted order
            stem, seed = f"1P0A{100 + 2 * i:04d}", 10 * i + (0 if split == "train" else 5)
            write_image(root / f"{split}_c" / "source" / f"{stem}.png", _img(seed))
            write_image(root / f"{split}_c" / "target" / f"1P0A{101 + 2 * i:04d}.png", _img(seed + 1))
            if split in views_in:
                views[f"{split}/{stem}"] = (_img(seed + 2), _img(seed + 3))
                write_image(root / f"{split}_l" / "source" / f"{stem}_L.png", views[f"{split}/{stem}"][0])
                write_image(root / f"{split}_r" / "source" / f"{stem}_R.png", views[f"{split}/{stem}"][1])
    return views


def ingest(*args: str):
    return CliRunner().invoke(app, ["ingest", "--workers", "0", *args])


def test_ingest_stores_the_views_only_when_asked(tmp_path):
    views = make_dpdd(tmp_path / "dpdd")
    res = ingest("--dpdd", str(tmp_path / "dpdd"), "--dual-pixel", "--out", str(tmp_path / "dp"))
    assert res.exit_code == 0, res.output
    samples = list(reader.iter_samples(tmp_path / "dp"))
    assert len(samples) == 5
    for s in samples:
        left, right = views[f"{s['meta']['split']}/{s['meta']['scene']}"]
        np.testing.assert_array_equal(s["left"], left)  # 16-bit as written
        np.testing.assert_array_equal(s["right"], right)
        assert any(o.endswith("_L.png") for o in s["meta"]["origin"])
    res = ingest("--synthetic", "builtin", "--dual-pixel", "--out", str(tmp_path / "no"))
    assert res.exit_code == 1 and "--dual-pixel needs --dpdd DIR (it stores DPDD's dual-pixel views)" in res.output
    assert not (tmp_path / "no").exists()
    with pytest.raises(IngestError, match="--dual-pixel needs --dpdd"):  # from Python too, where it was ignored
        run_ingest({"synthetic": "builtin"}, IngestOptions(out=str(tmp_path / "py"), dual_pixel=True))
    res = ingest("--dpdd", str(tmp_path / "dpdd"), "--out", str(tmp_path / "plain"), "--max-side", "24")
    assert res.exit_code == 0, res.output
    assert all(s["left"] is None and s["right"] is None for s in reader.iter_samples(tmp_path / "plain"))
    res = ingest("--dpdd", str(tmp_path / "dpdd"), "--dual-pixel", "--max-side", "24", "--out", str(tmp_path / "small"))
    assert res.exit_code == 0, res.output
    assert all(s["left"].shape == s["blur"].shape == (20, 24, 3) for s in reader.iter_samples(tmp_path / "small"))


def test_a_split_without_views_is_a_reject_naming_the_folder(tmp_path):
    make_dpdd(tmp_path / "dpdd", views_in=("train",))
    res = ingest("--dpdd", str(tmp_path / "dpdd"), "--dual-pixel", "--out", str(tmp_path / "dp"))
    assert res.exit_code == 0, res.output
    assert {s["meta"]["split"] for s in reader.iter_samples(tmp_path / "dp")} == {"train"}
    rejects = (tmp_path / "dp" / "rejects.jsonl").read_text()
    assert "no test_l/source/ folder beside test_c/" in rejects


def test_flips_keep_the_disparity_horizontal_and_the_views_in_order():
    h, w = 16, 16
    ramp = np.tile(np.arange(w, dtype=np.uint16), (h, 1))[..., None].repeat(3, axis=2)
    images = {"blur": ramp.copy(), "left": ramp, "right": ramp[:, ::-1].copy()}
    seen = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        out = crop_and_augment(images, 16, True, rng)
        left = out["left"][..., 0].astype(int)
        assert (np.diff(left, axis=0) == 0).all()  # never turned by 90 degrees: rows still hold the ramp
        assert (np.diff(left, axis=1) == 1).all()  # mirrored blur comes with the views swapped
        seen.add(bool(np.diff(out["blur"][..., 0].astype(int), axis=1)[0, 0] < 0))
    assert seen == {True, False}  # both mirrored and unmirrored crops were drawn


def test_stream_gives_views_or_zeros_with_a_flag():
    cfg = DataConfig(image_size=16, augment=False)
    base = {"key": "k", "sharp": _img(1, (16, 16)), "blur": _img(2, (16, 16)), "meta": {"f_number": 4.0}}
    with_views = to_tensors({**base, "left": _img(3, (16, 16)), "right": _img(4, (16, 16))}, "paired", cfg,
                            np.random.default_rng(0), views=True)
    without = to_tensors({**base, "left": None, "right": None}, "paired", cfg, np.random.default_rng(0), views=True)
    assert bool(with_views["has_views"]) and not bool(without["has_views"])
    assert with_views["left"].shape == (3, 16, 16) and float(with_views["left"].abs().sum()) > 0
    assert float(without["left"].abs().sum()) == 0 and without["right"].shape == (3, 16, 16)
    plain = to_tensors({**base, "left": None, "right": None}, "paired", cfg, np.random.default_rng(0))
    assert "left" not in plain and "has_views" not in plain


def test_disparity_warp_shifts_rows_as_the_release_does():
    x = torch.rand(2, 3, 5, 9)
    out = disparity_warp(x, torch.full((2, 1, 5, 9), 2.0))  # sample at x + 2, zero beyond the border
    torch.testing.assert_close(out[..., :7], x[..., 2:])
    assert float(out[..., 7:].abs().max()) == 0.0
    half = disparity_warp(x, torch.full((2, 1, 5, 9), -0.5))
    torch.testing.assert_close(half[..., 1:], 0.5 * (x[..., 1:] + x[..., :-1]))


def test_the_disparity_loss_reaches_the_estimator_only_through_samples_with_views():
    torch.manual_seed(0)
    net = IFAN(3, 4, 1, 2, 3, True, False)
    left, right = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss = dual_pixel_loss(net, left, right, torch.tensor([True, False]))
    loss.backward()
    assert float(loss.detach()) > 0 and net.dme[0][0].weight.grad.abs().sum() > 0
    net.zero_grad()
    only_first = dual_pixel_loss(net, left[:1], right[:1], torch.tensor([True]))
    torch.testing.assert_close(loss, only_first)  # the sample without views adds nothing
    none = dual_pixel_loss(net, left, right, torch.tensor([False, False]))
    assert float(none.detach()) == 0.0


def test_the_disparity_loss_runs_through_the_models_forward():
    """Under several processes `model` is DistributedDataParallel, which averages the gradients of a backward through
    its forward only: the DME's term, as the others, must reach the weights through it (not through `unwrap`)."""
    import copy

    class Wrapper(torch.nn.Module):  # DDP's stand-in: `module` (what unwrap returns) is a copy
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net, self.module = net, copy.deepcopy(net)

        def forward(self, *args):
            return self.net(*args)

    torch.manual_seed(0)
    model = Wrapper(IFAN(3, 4, 1, 2, 3, True, True, 2, 3))
    objective = load_recipe("ifan-tiny", ["objective.dual_pixel_weight=1"]).objective
    batch = {name: torch.rand(2, 3, 32, 32) for name in ("blur", "sharp", "left", "right")}
    get_method("ifan").loss(model, {**batch, "has_views": torch.tensor([True, False])}, objective).backward()
    assert model.net.dme[0][0].weight.grad.abs().sum() > 0 and model.net.reblur.body[0][0].weight.grad is not None
    assert all(p.grad is None for p in model.module.parameters())


def test_ifan_trains_with_the_disparity_loss_through_the_loop(tmp_path):
    weight = 1.0
    make_dpdd(tmp_path / "dpdd")
    assert ingest("--dpdd", str(tmp_path / "dpdd"), "--dual-pixel", "--out", str(tmp_path / "dp")).exit_code == 0
    assert ingest("--dpdd", str(tmp_path / "dpdd"), "--out", str(tmp_path / "plain")).exit_code == 0
    recipe_file = str(ROOT / "recipes" / "ifan-tiny.yaml")
    common = ["data.num_workers=0", "train.max_steps=4", "train.checkpoint_every=4", "train.log_every=2"]
    recipe = load_recipe(recipe_file, [f"data.train={tmp_path / 'dp'}", f"output_dir={tmp_path / 'run'}",
                                       f"objective.dual_pixel_weight={weight}", *common])
    model = train(recipe)
    assert model.is_file()
    off = load_recipe(recipe_file, [f"data.train={tmp_path / 'dp'}", f"output_dir={tmp_path / 'off'}",
                                    "objective.dual_pixel_weight=0", *common])
    train(off)
    first = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[0])["loss"] for d in ("run", "off")]
    assert first[0] > first[1]  # the same batches: the disparity term adds to the loss
    plain = load_recipe(recipe_file, [f"data.train={tmp_path / 'plain'}", f"output_dir={tmp_path / 'run2'}",
                                      f"objective.dual_pixel_weight={weight}", *common])
    with pytest.raises(ValueError, match=r"objective.dual_pixel_weight is 1.0 but .* no sample with .*left.png"):
        train(plain)
    assert get_method("ifan").views
