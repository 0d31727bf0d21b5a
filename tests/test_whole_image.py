"""Inference at the size the model can take: whole images for convolutional models (within a pixel budget), tiles
for attention models, padding to the network's multiple; progress inside an image and under a training time budget."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from defocuskit.inference.files import deblur_files
from defocuskit.inference.restore import restore_image
from defocuskit.inference.tiling import DEFAULT_MAX_TILE_PIXELS, TilingOptions, plan_tiling, tile_starts
from defocuskit.io.images import read_image, to_float, write_image
from defocuskit.methods import get_method
from defocuskit.methods.recipes import load_recipe, resolve_recipe

REPO = Path(__file__).resolve().parents[1]
VABD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train"
TINY_RDDM = {"method": "rddm", "data": {"image_size": 32},
             "model": {"map_model": {"hidden_sizes": [8, 8, 8, 8], "depths": [1, 1, 1, 1],
                                     "num_attention_heads": [1, 1, 1, 1], "decoder_hidden_size": 8},
                       "pre_width": 8, "pre_enc_blocks": [1], "pre_dec_blocks": [1], "pre_enc_dw": ["dcn"],
                       "pre_dec_dw": ["conv"], "width": 8, "enc_blocks": [1], "dec_blocks": [1], "enc_dw": ["dcn"],
                       "dec_dw": ["conv"], "resnet_hidden_sizes": [8, 8, 8], "resnet_depths": [1, 1, 1],
                       "resnet_embedding_size": 8, "resnet_pretrained": None}}


def _tiny(name: str):
    """(method, recipe, network in eval mode) of the method's tiny recipe, random weights."""
    recipe = resolve_recipe(TINY_RDDM) if name == "rddm" else load_recipe(REPO / "recipes" / f"{name}-tiny.yaml", [])
    method = get_method(name)
    torch.manual_seed(0)
    return method, recipe, method.build(recipe.model, recipe.objective, False).eval()


def _recording(method):
    """The method with its restore wrapped to record the batch shapes it is given."""
    shapes: list[tuple[int, ...]] = []

    def restore(model, blur, *args, **kwargs):
        shapes.append(tuple(blur.shape))
        return method.restore(model, blur, *args, **kwargs)

    return dataclasses.replace(method, restore=restore), shapes


def _photo(h: int, w: int) -> np.ndarray:
    return np.ascontiguousarray(to_float(read_image(VABD / "1_8" / "0002.JPG"))[300 : 300 + h, 500 : 500 + w])


# ------------------------------------------------------------------------------------ which methods run whole


@pytest.mark.parametrize("name, multiple", [("nafnet", 8), ("dncnn", 1), ("ffdnet", 2), ("cyclegan", 4),
                                            ("jdrl", 4), ("rddm", 32)])
def test_convolutional_methods_run_an_odd_image_whole_in_one_padded_pass(name: str, multiple: int) -> None:
    method, recipe, net = _tiny(name)
    assert method.whole_image and method.pad_multiple(net) == multiple
    recorded, shapes = _recording(method)
    image = _photo(37, 45)
    coc = np.full((37, 45), 2.0, np.float32) if "coc" in recipe.sampler.resolved().needs() else None
    out = restore_image(recorded, recipe, net, image, progress=False, coc=coc)
    up = lambda n: -(-n // multiple) * multiple  # noqa: E731
    assert shapes == [(1, 3, up(37), up(45))]  # one pass over the image padded to the network's multiple
    assert out.shape == (37, 45, 3) and np.isfinite(out).all()


@pytest.mark.parametrize("name", ["hidd", "defocus-map"])
def test_attention_methods_keep_tiles_of_the_training_size(name: str) -> None:
    method = get_method(name)
    assert not method.whole_image
    recipe = resolve_recipe({"method": name, "data": {"image_size": 32}})
    plan = plan_tiling(method, recipe, torch.nn.Identity(), 70, 53)
    assert not plan.whole and plan.tile == (32, 32) and plan.overlap == 8
    assert plan.tiles == len(tile_starts(70, 32, 8)) * len(tile_starts(53, 32, 8))
    assert plan.describe() == "tiles 32x32 overlap 8"


# ------------------------------------------------------------------------------------------ exactness


def test_whole_image_equals_a_single_tile_of_the_same_size() -> None:
    method, recipe, net = _tiny("nafnet")
    image = _photo(32, 32)
    whole = restore_image(method, recipe, net, image, progress=False)
    tiled = restore_image(method, recipe, net, image, progress=False, tiling=TilingOptions(tile=32))
    assert plan_tiling(method, recipe, net, 32, 32).whole
    assert np.array_equal(whole, tiled)


def test_layer_norm_of_a_channels_last_map_equals_the_nchw_one() -> None:
    from defocuskit.models.nafnet import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 9, 11) * 3 + 1
    last = x.contiguous(memory_format=torch.channels_last)
    out = norm(last)
    torch.testing.assert_close(out, norm(x), atol=1e-5, rtol=1e-5)
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["nafnet", "dncnn"])
def test_cpu_inference_hands_channels_last_input_where_the_method_asks(name: str) -> None:
    """Method.channels_last: NHWC input to the network on a CPU (faster, tools/bench_channels_last.py), the same
    output to float rounding; channels_last=False keeps NCHW."""
    method, recipe, net = _tiny(name)
    assert method.channels_last
    seen: list[bool] = []
    hook = net.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                     and not args[0].is_contiguous()))
    with torch.no_grad():  # weights off their (partly zero) initialisation, so that every layer matters
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    image = _photo(40, 48)
    default = restore_image(method, recipe, net, image, progress=False)
    nchw = restore_image(method, recipe, net, image, progress=False, channels_last=False)
    restore_image(method, recipe, net, image, progress=False,
                  tiling=TilingOptions(tile=16))  # tiles get channels-last input too
    hook.remove()
    assert seen[0] and not seen[1] and all(seen[2:])
    np.testing.assert_allclose(default, nchw, atol=1e-5)
    assert np.abs(default - image).max() > 1e-2  # the network changed the image: the comparison means something


def test_a_non_multiple_size_is_reflect_padded_and_cropped_back() -> None:
    method, recipe, net = _tiny("nafnet")
    image = _photo(37, 45)
    padded = np.pad(image, ((0, 3), (0, 3), (0, 0)), mode="reflect")  # to 40 x 48, multiples of 8
    with torch.no_grad():
        expected = net(torch.from_numpy(padded.transpose(2, 0, 1).copy())[None]).clamp(0, 1)[0].numpy()
    out = restore_image(method, recipe, net, image, progress=False)
    np.testing.assert_allclose(out, expected.transpose(1, 2, 0)[:37, :45], atol=1e-6)
    # the network's own replicate padding would have given another result: the reflect padding is what ran
    with torch.no_grad():
        own = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None]).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    assert np.abs(own - out).max() > 1e-4


def test_tiles_differ_from_the_whole_image_only_near_the_seams() -> None:
    """A plain convolution stack (DnCNN, depth 4: receptive radius 4 px): tiled output equals the whole-image
    output wherever no tile border that is not an image border lies within 4 px; the rest differs slightly."""
    method = get_method("dncnn")
    recipe = resolve_recipe({"method": "dncnn", "data": {"image_size": 32},
                             "model": {"depth": 4, "features": 8, "identity_init": False}})
    torch.manual_seed(0)
    net = method.build(recipe.model, recipe.objective, False).eval()
    image = _photo(64, 80)
    whole = restore_image(method, recipe, net, image, progress=False)
    with torch.no_grad():
        direct = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None]).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(whole, direct, atol=1e-5)  # channels-last on CPU: the same to float rounding
    tiled = restore_image(method, recipe, net, image, progress=False, tiling=TilingOptions(tile=32, overlap=16))
    seam = np.zeros((64, 80), bool)
    for axis, length in ((0, 64), (1, 80)):
        for start in tile_starts(length, 32, 16):
            for border in (start, start + 32):
                if 0 < border < length:
                    index = [slice(None), slice(None)]
                    index[axis] = slice(max(0, border - 4), border + 4)
                    seam[tuple(index)] = True
    assert 0.1 < seam.mean() < 0.9
    np.testing.assert_allclose(tiled[~seam], whole[~seam], atol=1e-5)
    diff = np.abs(tiled - whole)
    assert diff[seam].max() > 1e-3 and diff.mean() < 0.01


# --------------------------------------------------------------------------------------------- budget


def test_a_budget_below_the_image_gives_the_largest_tiles_within_it() -> None:
    method, recipe, net = _tiny("nafnet")  # multiple 8
    plan = plan_tiling(method, recipe, net, 70, 53, tiling=TilingOptions(max_tile_pixels=1000))
    assert not plan.whole and plan.tile == (24, 24) and plan.max_tile_pixels == 1000  # 31 px rounded down to 8
    short = plan_tiling(method, recipe, net, 20, 300, tiling=TilingOptions(max_tile_pixels=1024))
    assert short.tile == (24, 40)  # the short side whole (padded to 24), the rest of the budget along the long one
    assert plan_tiling(method, recipe, net, 70, 53, tiling=TilingOptions(max_tile_pixels=72 * 56)).whole
    assert plan_tiling(method, recipe, net, 70, 53).max_tile_pixels == DEFAULT_MAX_TILE_PIXELS
    recorded, shapes = _recording(method)
    image = _photo(70, 53)
    out = restore_image(recorded, recipe, net, image, progress=False, tiling=TilingOptions(max_tile_pixels=1000,
                                                                                           batch=2))
    assert out.shape == (70, 53, 3) and sum(s[0] for s in shapes) == plan.tiles
    assert all(s[0] <= 2 and s[2:] == (24, 24) for s in shapes)
    with pytest.raises(ValueError, match=r"--max-tile-pixels 40 is less than one 8x8 block"):
        plan_tiling(method, recipe, net, 70, 53, tiling=TilingOptions(max_tile_pixels=40))


def test_a_tile_beyond_the_image_runs_the_image_not_a_frame_padded_to_the_tile() -> None:
    method, recipe, net = _tiny("nafnet")  # multiple 8, any size
    plan = plan_tiling(method, recipe, net, 70, 53, tiling=TilingOptions(tile=100_000))
    assert plan.tile == (72, 56) and plan.padded == (72, 56) and plan.tiles == 1  # was a 100000 x 100000 frame
    assert plan_tiling(method, recipe, net, 70, 53, tiling=TilingOptions(tile=64)).tile == (64, 56)
    recorded, shapes = _recording(method)
    out = restore_image(recorded, recipe, net, _photo(70, 53), progress=False, tiling=TilingOptions(tile=100_000))
    assert out.shape == (70, 53, 3) and shapes == [(1, 3, 72, 56)]
    tiled, t_recipe, t_net = _tiny("hidd")  # a method that tiles: never below its training size
    size = int(t_recipe.data.image_size)
    assert plan_tiling(tiled, t_recipe, t_net, 10, 12, tiling=TilingOptions(tile=100_000)).tile == (size, size)


def test_deblur_json_records_what_ran(tmp_path: Path) -> None:
    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model

    method, recipe, net = _tiny("nafnet")
    save_model(tmp_path / "naf.safetensors", net.state_dict(), "nafnet", recipe_to_dict(recipe))
    write_image(tmp_path / "in" / "shot.png", (_photo(37, 45) * 255).round().astype(np.uint8))
    for out, kwargs in (("whole", {}), ("tiles", {"tile": 16}), ("budget", {"max_tile_pixels": 256})):
        deblur_files([tmp_path / "in" / "shot.png"], tmp_path / "naf.safetensors", tmp_path / out, progress=False,
                     tiling=TilingOptions(**kwargs))
    (whole,) = json.loads((tmp_path / "whole" / "deblur.json").read_text())["images"]
    assert (whole["inference"], whole["tile"], whole["tiles"]) == ("whole", [40, 48], 1)
    assert whole["max_tile_pixels"] == DEFAULT_MAX_TILE_PIXELS
    (tiles,) = json.loads((tmp_path / "tiles" / "deblur.json").read_text())["images"]
    assert (tiles["inference"], tiles["tile"], tiles["overlap"]) == ("tiles", [16, 16], 4)
    assert tiles["tiles"] == len(tile_starts(37, 16, 4)) * len(tile_starts(45, 16, 4))
    (budget,) = json.loads((tmp_path / "budget" / "deblur.json").read_text())["images"]
    assert (budget["inference"], budget["tile"], budget["max_tile_pixels"]) == ("tiles", [16, 16], 256)


# ------------------------------------------------------------------------------------------- progress


def test_a_sampler_reports_its_steps_inside_an_image_on_the_callers_bar() -> None:
    from rich.console import Console
    from rich.progress import Progress

    def sampler(model, blur, ctx):
        for i in range(5):
            ctx.step(i, 5)
        return blur.clone()

    method = dataclasses.replace(get_method("hidd"), restore=sampler)
    recipe = resolve_recipe({"method": "hidd", "data": {"image_size": 32}})
    seen: list[tuple[str, float | None, float]] = []
    with Progress(console=Console(file=io.StringIO())) as bar:
        outer = bar.add_task("scoring", total=3)
        update = bar.update

        def spy(task_id, **kwargs):
            update(task_id, **kwargs)
            task = bar._tasks[task_id]
            seen.append((task.description, task.total, task.completed))

        bar.update = spy  # type: ignore[method-assign]
        restore_image(method, recipe, torch.nn.Identity(), _photo(40, 40), progress=bar, tiling=TilingOptions(batch=4))
        assert [t.id for t in bar.tasks] == [outer]  # its own tasks are gone when the image is done
    assert ("  steps", 5, 5) in seen  # the sampler's steps, with their total
    assert ("  tiles 32x32 overlap 8", 4, 4) in seen


def test_training_bar_shows_the_time_left_under_a_budget() -> None:
    from defocuskit.train.progress import training_bar

    budget = training_bar(1_000_000, 0, 1.0, file=io.StringIO(), mininterval=0)
    budget.start_t -= 30  # 30 s into a one-minute budget, 10 of a million steps done
    budget.update(10)
    text = str(budget)
    assert "10/1000000 steps" in text and re.search(r"\[00:30<00:(29|30) budget", text) and " 50%" in text
    steps = training_bar(20, 0, 60.0, file=io.StringIO(), mininterval=0)
    steps.start_t -= 30  # half the steps in 30 s: max_steps ends the run long before the hour
    steps.update(10)
    assert re.search(r"\[00:30<00:(29|30) max_steps", str(steps))
    plain = training_bar(20, 0, None, file=io.StringIO(), mininterval=0)
    assert "budget" not in str(plain) and "0/20" in str(plain)
