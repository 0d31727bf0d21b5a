"""`eval --figure`: figure.png holds one row per f-number (the group's first pair) of crops of the input, each
method's output as scored and the reference; rows from several processes merge into the one-process rows."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from defocuskit.cli.app import app
from defocuskit.config.recipe import recipe_to_dict
from defocuskit.data.reader import iter_samples, shard_urls
from defocuskit.eval import metrics
from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.figure import CELL
from defocuskit.eval.processes import ProcessGroup, shard_share
from defocuskit.imaging.drawing import GAP, pick_crop, repeat_pixels, to_display
from defocuskit.io.images import read_image
from defocuskit.io.modelfile import save_model
from defocuskit.methods import get_method
from defocuskit.methods.recipes import resolve_recipe

H, W = 64, 96  # crops are min(96, 64) = 64 px: the crop's place along x is chosen
# (key, f-number) in shard order: the first pair of f/4 is s0, of f/2 s1, of f/8 s4; in 2 processes,
# process 0 gets s0, s2, s4 and process 1 s1, s3: each has the first pair of one group both share
SAMPLES = [("a/s0", 4.0), ("a/s1", 2.0), ("a/s2", 2.0), ("a/s3", 4.0), ("a/s4", 8.0)]
FIRST = {2.0: "a/s1", 4.0: "a/s0", 8.0: "a/s4"}


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random texture; the blurred copy is blurred right of x = 40 only, so the crop that shows it is not at x 0."""
    sharp = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    blur = sharp.copy()
    blur[:, 40:] = cv2.GaussianBlur(sharp, (0, 0), 1.5)[:, 40:]
    return sharp, blur


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test split of 5 pairs at f/4, f/2, f/2, f/4, f/8 and a tiny random NAFNet."""
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    root = tmp_path_factory.mktemp("fig")
    (root / "shards").mkdir()
    with wds.ShardWriter(str(root / "shards" / "test-%06d.tar"), maxcount=3, verbose=0) as sink:
        for i, (key, f) in enumerate(SAMPLES):
            sharp, blur = _pair(i)
            sink.write({"__key__": key, **encode_members(sharp, blur, None, {"source": "a", "f_number": f})})
    naf = resolve_recipe({"method": "nafnet", "data": {"image_size": 32},
                          "model": {"width": 8, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}})
    torch.manual_seed(0)
    net = get_method("nafnet").build(naf.model, naf.objective, False)
    for p in net.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.05)  # not the identity: the output differs from the input
    save_model(root / "naf" / "model.safetensors", net.state_dict(), "nafnet", recipe_to_dict(naf))
    return root


def _locate(image: np.ndarray, part: np.ndarray) -> tuple[int, int]:
    found = cv2.matchTemplate(image.astype(np.float32), part.astype(np.float32), cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(np.argmin(found)), found.shape)
    return int(y), int(x)


def test_figure_png_rows_columns_and_crops(setup: Path, tmp_path: Path) -> None:
    report, images = tmp_path / "report", tmp_path / "images"
    command = ["eval", "--shards", str(setup / "shards"), "--baseline", "input", "--baseline", "wiener",
               "--checkpoint", str(setup / "naf" / "model.safetensors"), "--device", "cpu", "--report", str(report)]
    res = CliRunner().invoke(app, [*command, "--figure", "--save-images", str(images)])
    assert res.exit_code == 0, res.output
    assert f"figure: {report / 'figure.png'}" in res.output.replace("\n", "")
    figure = read_image(report / "figure.png")
    side = 64 * (CELL // 64)  # 64 px crops, each pixel shown 4x
    columns = ["input", "wiener", "naf", "reference"]  # input, each method but the input, reference
    assert figure.shape[1] == len(columns) * side + (len(columns) + 1) * GAP
    samples = {s["key"]: s for s in iter_samples(setup / "shards", "test")}
    tops = []
    for f, key in sorted(FIRST.items()):  # one row per f-number, in f-number order, of the group's first pair
        blur, sharp = samples[key]["blur"], samples[key]["sharp"]
        y, x = pick_crop(blur, sharp, 64)
        assert (y, x) == (0, W - 64)  # the blurred part: the crop is not the whole image
        name = key.replace("/", "_") + ".png"
        crops = [blur, read_image(images / "wiener" / name), read_image(images / "naf" / name), sharp]
        crops = [repeat_pixels(to_display(c[y:y + 64, x:x + 64]), side // 64) for c in crops]
        assert not np.array_equal(crops[2], crops[0])  # the network's output is not its input
        top, left = _locate(figure, crops[0])
        assert left == GAP and np.array_equal(figure[top:top + side, left:left + side], crops[0])
        for i, crop in enumerate(crops):  # the outputs as saved (rounded as scored), the reference as stored
            left = GAP + i * (side + GAP)
            assert np.array_equal(figure[top:top + side, left:left + side], crop), (f, columns[i])
        tops.append(top)
    pitch = tops[1] - tops[0]  # three rows, in f-number order, and no room for a fourth
    assert pitch > side and tops[2] - tops[1] == pitch and figure.shape[0] - tops[2] < pitch

    again = CliRunner().invoke(app, command)  # the same report folder without --figure: no (stale) figure
    assert again.exit_code == 0, again.output
    assert not (report / "figure.png").exists() and "figure:" not in again.output
    assert (report / "aperture.png").exists()


def test_with_the_detail_band_the_input_is_shown_and_scored_as_the_outputs_are(setup: Path) -> None:
    """--detail-band --figure: the outputs' crops were their detail band and the input's crop the raw shot, so a
    model that changes nothing showed a gain over the input under its crop (+0.01 dB here, +0.13 on 40 px pairs)."""
    from defocuskit.eval.scoring import Scoring

    urls = shard_urls(setup / "shards", "test")
    result = evaluate_samples(shard_share(urls, ProcessGroup()), {"same": lambda blur, sample: blur.copy()},
                              scoring=Scoring(detail_band=3.0), progress=False, figure=True)
    for row in result["figure"]:
        inp, same, _ = row.panels
        assert same.psnr == inp.psnr and np.array_equal(same.image, inp.image)
    assert all(im["psnr"] == im["psnr_input"] for im in result["images"])  # as the report scores them


def test_rows_keep_crops_only_skip_incomplete_pairs_and_merge_like_one_process(setup: Path) -> None:
    urls = shard_urls(setup / "shards", "test")

    def invert(blur: np.ndarray, sample: dict) -> np.ndarray:
        if sample["key"] == "a/s1":
            raise ValueError("no output for this one")  # a reported skip: f/2's row comes from a/s2
        return 1.0 - blur

    runners = {"input": lambda blur, sample: blur, "invert": invert}
    single = evaluate_samples(shard_share(urls, ProcessGroup()), runners, progress=False, figure=True)
    labels = [row.label for row in single["figure"]]
    assert [re.sub(r" · crop.*", "", lb) for lb in labels] == ["f/2 · a/s2", "f/4 · a/s0", "f/8 · a/s4"]
    samples = {s["key"]: s for s in iter_samples(setup / "shards", "test")}
    for row, key in zip(single["figure"], ("a/s2", "a/s0", "a/s4")):
        assert [p.label for p in row.panels] == ["input", "invert", "reference"]
        x, y = map(int, re.search(r"at \(x (\d+), y (\d+)\)", row.label).groups())
        assert (y, x) == pick_crop(samples[key]["blur"], samples[key]["sharp"], 64)
        blur = samples[key]["blur"][y:y + 64, x:x + 64]
        assert np.array_equal(row.panels[0].image, blur)
        assert np.array_equal(row.panels[1].image, 255 - blur)  # the output rounded to 8 bits, as scored
        ref = metrics.to_unit(samples[key]["sharp"][y:y + 64, x:x + 64])
        assert row.panels[1].psnr == metrics.psnr(metrics.to_unit(255 - blur), ref, max_db=100.0)
        assert np.array_equal(row.panels[2].image, samples[key]["sharp"][y:y + 64, x:x + 64])
        assert all(p.image.base is None and p.image.shape == (64, 64, 3) for p in row.panels)  # crops, not views
    assert evaluate_samples(shard_share(urls, ProcessGroup()), runners, progress=False)["figure"] == []

    runners["invert"] = lambda blur, sample: 1.0 - blur  # every pair scored: f/2's first pair is a/s1
    single = evaluate_samples(shard_share(urls, ProcessGroup()), runners, progress=False, figure=True)
    parts: list[dict] = []
    evaluate_samples(shard_share(urls, ProcessGroup(0, 2)), runners, progress=False, figure=True,
                     gather=lambda obj: parts.append(obj) or [obj])  # process 0: a/s0, a/s2, a/s4
    merged = evaluate_samples(shard_share(urls, ProcessGroup(1, 2)), runners, progress=False, figure=True,
                              gather=lambda obj: [parts[0], obj])  # process 1: a/s1, a/s3
    assert {g: r.label.split(" · ")[1] for g, (_, r) in parts[0]["figure"].items()} == {
        4.0: "a/s0", 2.0: "a/s2", 8.0: "a/s4"}  # each process: its own first pair per group
    # per group, the pair that comes first in shard order: a/s1 (process 1) for f/2, a/s0 (process 0) for f/4
    assert [row.label.split(" · ")[1] for row in merged["figure"]] == ["a/s1", "a/s0", "a/s4"]
    assert [row.label for row in merged["figure"]] == [row.label for row in single["figure"]]
    for mine, one in zip(merged["figure"], single["figure"]):
        assert all(np.array_equal(a.image, b.image) and a.psnr == b.psnr for a, b in zip(mine.panels, one.panels))
