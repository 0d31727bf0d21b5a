"""JDRL: isotropic reblur kernels, the reblurring module, the flow warp's sign, both loss stages, restore,
the tiny recipe through the CLI, and the pseudo-CoC shard writer."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defocuskit.imaging.flow import backward_warp, consistency_mask, estimate_flow, in_frame_mask
from defocuskit.inference.restore import restore_batch
from defocuskit.methods import get_method
from defocuskit.methods.base import RestoreContext
from defocuskit.methods.jdrl import ModelConfig, ObjectiveConfig, SamplerConfig, charbonnier, in_reblur_stage
from defocuskit.models.jdrl import ReblurModule, disc_radius, orbit_offsets, orbit_values, orbits

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = ModelConfig(widths=[8, 16, 32], dropout_levels=1, map_channels=8, map_blocks=1, fusion_channels=8,
                   reblur_channels=8, reblur_blocks=1)


# The explicit per-pixel kernels: the reference the orbit-filter reblurring is checked against.


def isotropic_kernels(profile: torch.Tensor, norm: str = "softmax") -> torch.Tensor:
    """Per-pixel radial profiles (B, r + 1, H, W) -> explicit kernels (B, K, K, H, W), K = 2 r + 1."""
    radius = profile.shape[1] - 1
    size = 2 * radius + 1
    index = torch.empty(size, size, dtype=torch.long)
    for o, (a, b) in enumerate(orbits(radius)):
        for dy, dx in orbit_offsets(a, b):
            index[dy + radius, dx + radius] = o
    values = orbit_values(profile, norm)
    return values[:, index.to(values.device)]  # (B, K, K, H, W)


def reblur_with_kernels(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-pixel kernels (B, K, K, H, W) applied to image (B, C, H, W) by unfolding (replicate padding)."""
    b, c, h, w = image.shape
    k = kernels.shape[1]
    patches = F.unfold(F.pad(image, (k // 2,) * 4, mode="replicate"), k)  # (B, C*K*K, H*W)
    patches = patches.view(b, c, k * k, h, w)
    return (patches * kernels.reshape(b, 1, k * k, h, w)).sum(2)


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img.transpose(2, 0, 1))[None]


# ------------------------------------------------------------------------------------------ kernels


@pytest.mark.parametrize("norm", ["softmax", "sum"])
@pytest.mark.parametrize("radius", [1, 4, 7])
def test_kernels_are_isotropic_and_normalised(norm, radius):
    torch.manual_seed(radius)
    k = isotropic_kernels(torch.randn(3, radius + 1, 4, 5), norm)  # (B, K, K, H, W)
    size = 2 * radius + 1
    assert k.shape == (3, size, size, 4, 5)
    assert torch.allclose(k.sum((1, 2)), torch.ones(3, 4, 5), atol=1e-5)
    assert (k >= 0).all()
    for moved in (k.flip(1), k.flip(2), k.transpose(1, 2), *(torch.rot90(k, n, (1, 2)) for n in (1, 2, 3))):
        assert torch.allclose(moved, k, atol=1e-7)
    # the value depends on the distance only: offsets at one distance in different orbits agree
    d2 = torch.tensor([[(y - radius) ** 2 + (x - radius) ** 2 for x in range(size)] for y in range(size)])
    for value in d2.unique():
        ring = k[:, d2 == value]  # (B, n, H, W)
        assert torch.allclose(ring, ring[:, :1].expand_as(ring), atol=1e-7)


def test_kernel_values_interpolate_the_radial_profile():
    profile = torch.tensor([4.0, 2.0, -1.0, 0.5]).view(1, 4, 1, 1)  # |profile| is used (kpn.py: torch.abs)
    k = isotropic_kernels(profile, "sum")[0, :, :, 0, 0]
    c = 3
    assert torch.allclose(k[c, c + 1] / k[c, c], torch.tensor(0.5))  # distance 1 -> |p1| / |p0|
    assert torch.allclose(k[c + 1, c + 1] / k[c, c], torch.tensor(((2 - 2**0.5) * 2 + (2**0.5 - 1) * 1) / 4))
    assert k[0, 0] == 0 and k[0, 1] == 0  # beyond the radius (distance > 3)
    flat = orbit_values(torch.ones(1, 8, 1, 1), "sum")  # a uniform disc of radius 7
    assert abs(disc_radius(flat).item() - 7.0) < 0.2


def test_reblur_module_matches_unfolded_kernels_and_keeps_constants():
    torch.manual_seed(0)
    module = ReblurModule(3, 8, 1, [3, 5, 7])
    deblurred, blurry = torch.rand(2, 3, 12, 10), torch.rand(2, 3, 12, 10)
    out, radius = module(deblurred, blurry)
    x = torch.cat([deblurred, blurry], 1)
    profiles = torch.split(module.kernel(x), [2, 3, 4], dim=1)
    w = torch.softmax(module.weights(x), 1)
    expect = w[:, :1] * deblurred
    for i, p in enumerate(profiles, start=1):
        expect = expect + w[:, i : i + 1] * reblur_with_kernels(deblurred, isotropic_kernels(p))
    assert torch.allclose(out, expect, atol=1e-5)
    assert radius.shape == (2, 1, 12, 10) and (radius >= 0).all() and (radius <= 3 * 2**0.5 + 1e-4).all()
    constant = torch.full((2, 3, 12, 10), 0.3)
    flat, _ = module(constant, blurry)
    assert torch.allclose(flat, constant, atol=1e-6)  # kernels sum to 1; replicate padding at the borders


# --------------------------------------------------------------------------------------------- flow


def test_flow_warp_moves_a_known_shift_the_right_way():
    sharp = _texture(64, 80)
    dx, dy = 3, -2
    shifted = torch.roll(sharp, shifts=(dy, dx), dims=(2, 3))  # shifted(x) = sharp(x - d): content moved by +d
    flow = estimate_flow(shifted, sharp)  # sharp(x + flow) = shifted(x) -> flow = -d
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert abs(flow[inner][:, 0].mean().item() + dx) < 0.3 and abs(flow[inner][:, 1].mean().item() + dy) < 0.3
    err = lambda a: (a - shifted)[inner].abs().mean().item()  # noqa: E731
    assert err(backward_warp(sharp, flow)) < 0.1 * err(sharp)
    assert err(backward_warp(sharp, -flow)) > err(sharp)  # the opposite sign moves it further away
    frame = in_frame_mask(flow)
    # x + flow = (x - 3, y + 2) leaves the frame at the left and bottom edges
    assert frame[0, 0, :, 0].sum() == 0 and frame[0, 0, -1].sum() == 0 and frame[inner].mean() == 1
    assert consistency_mask(flow, estimate_flow(sharp, shifted))[inner].mean() > 0.95


# ---------------------------------------------------------------------------------------- the method


def test_paper_sizes_match_the_released_networks():
    model = get_method("jdrl").build(ModelConfig(), ObjectiveConfig(), False)
    unet = _count(model.deblur) - _count(model.deblur.estimator) - _count(model.deblur.fusions)
    assert unet == 31_033_411  # models/model_deblur.py VGG_Deblur
    assert _count(model.reblur) == 474_987  # models/kpn.py Reblur_Model: KPN (35 outputs) + KERNEL_MAP (8)


def test_loss_is_finite_and_backpropagates_in_both_stages():
    method = get_method("jdrl")
    assert method.data == "paired" and method.output == "image"
    objective = ObjectiveConfig(reblur_start_step=1)
    torch.manual_seed(1)
    # the released output (no global residual): a zero-initialised output layer would pass no gradient inward yet
    model = method.build(dataclasses.replace(TINY, global_residual=False), objective, True)
    sharp = _texture(32, 32, 1).repeat(2, 1, 1, 1)
    batch = {"blur": F.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), "sharp": torch.roll(sharp, 1, 3)}
    grads = []
    for stage in (1, 2):
        assert in_reblur_stage(model, objective) == (stage == 2)
        model.zero_grad()
        value = method.loss(model, batch, objective)
        assert value.dim() == 0 and torch.isfinite(value)
        value.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
        assert int(model.step) == stage
    first, second = grads
    assert all(g is not None for g in first.values())  # every parameter gets a gradient (DDP needs it)
    assert first["deblur.encoders.0.0.weight"].abs().sum() > 0
    assert first["reblur.kernel.0.weight"].abs().sum() == 0  # stage 1: no reblur loss
    assert second["reblur.kernel.0.weight"].abs().sum() > 0 and second["reblur.weights.0.weight"].abs().sum() > 0
    assert second["deblur.estimator.0.weight"].abs().sum() > 0  # the map learns the reblur module's map
    assert "step" in model.state_dict()  # saved in checkpoints, EMA and the exported file


def test_aligned_pairs_are_compared_unwarped_and_the_others_through_the_flow(monkeypatch):
    import defocuskit.imaging.flow as flow_module

    method = get_method("jdrl")
    torch.manual_seed(3)
    model = method.build(TINY, ObjectiveConfig(), True)
    sharp = torch.cat([_texture(32, 32, 4), _texture(32, 32, 5)])
    blur = F.avg_pool2d(torch.roll(sharp, 2, 3), 5, 1, 2, count_include_pad=False)  # both shifted by 2 px
    aligned = torch.tensor([True, False])
    sizes = []
    real_flow = flow_module.estimate_flow
    monkeypatch.setattr(flow_module, "estimate_flow",
                        lambda t, m, p="medium": sizes.append(t.shape[0]) or real_flow(t, m, p))
    for stage2 in (False, True):
        sizes.clear()
        out = model(blur, sharp, stage2, "medium", True, aligned)
        assert sizes == ([1] if not stage2 else [1, 1])  # no flow estimated for the aligned pair
        assert torch.equal(out["target"][0], sharp[0])  # the aligned pair's target: the reference, not resampled
        assert (out["target"][1] - sharp[1]).abs().mean() > 0.02  # the other: moved onto its grid by the flow
        if stage2:
            assert torch.equal(out["output_on_sharp"][0], out["output"][0])
            assert out["mask"][0].min() == 1 and out["mask_back"][0].min() == 1
    # the loss: "auto" reads batch["aligned"], "always" (the release) warps every pair, and so does a batch without it
    batch = {"blur": blur, "sharp": sharp, "aligned": torch.tensor([True, True])}
    losses = {}
    for warp in ("auto", "always"):
        for with_flag in (True, False):
            torch.manual_seed(4)
            net = method.build(TINY, ObjectiveConfig(warp=warp), True)
            b = batch if with_flag else {k: v for k, v in batch.items() if k != "aligned"}
            losses[warp, with_flag] = float(method.loss(net, b, ObjectiveConfig(warp=warp)).detach())
    torch.manual_seed(4)
    net = method.build(TINY, ObjectiveConfig(), True)
    expected = float(charbonnier(net.deblur(blur)[0], sharp).detach())  # stage 1, aligned: output against sharp
    assert losses["auto", True] == pytest.approx(expected, rel=1e-6)
    assert losses["always", True] == losses["always", False] == losses["auto", False] != losses["auto", True]
    with pytest.raises(ValueError, match="objective.warp"):
        method.build(TINY, ObjectiveConfig(warp="never"), False)


def test_a_detached_reblur_loss_trains_the_reblurring_module_and_not_the_deblurring_net():
    method = get_method("jdrl")
    sharp = torch.cat([_texture(32, 32, 6), _texture(32, 32, 7)])
    batch = {"blur": F.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False), "sharp": sharp,
             "aligned": torch.tensor([True, True])}
    model_cfg = dataclasses.replace(TINY, dropout=0.0)

    def grads(**objective) -> dict[str, torch.Tensor]:
        torch.manual_seed(5)
        cfg = ObjectiveConfig(reblur_start_step=0, **objective)
        net = method.build(model_cfg, cfg, True)
        with torch.no_grad():
            net.deblur.out.weight.normal_(0, 0.05)  # off the identity, so that the output depends on the net
        method.loss(net, batch, cfg).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    released, detached = grads(), grads(reblur_trains_deblur=False)  # the default: the release's
    no_reblur = grads(reblur_weight=0.0)
    deblur = [n for n in released if n.startswith("deblur.") and not n.startswith("deblur.estimator")]
    for n in deblur:  # the deblurring net learns as if there were no reblur loss ...
        torch.testing.assert_close(detached[n], no_reblur[n], rtol=1e-5, atol=1e-8)
    assert any(not torch.allclose(released[n], detached[n]) for n in deblur)  # ... which the release's does not
    for n in ("reblur.kernel.0.weight", "reblur.weights.0.weight"):  # the reblurring module still learns
        torch.testing.assert_close(detached[n], released[n])
        assert detached[n].abs().sum() > 0


def test_restore_keeps_odd_sizes_and_the_range():
    method = get_method("jdrl")
    torch.manual_seed(2)
    model = method.build(TINY, ObjectiveConfig(), False).eval()
    blur = torch.rand(2, 3, 37, 53)
    out = restore_batch(method, model, blur, RestoreContext(SamplerConfig(), ObjectiveConfig()), 3)
    assert out.shape == blur.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="channels"):
        restore_batch(method, model, blur[:, :1], RestoreContext(SamplerConfig(), ObjectiveConfig()), 3)
    with pytest.raises(ValueError, match="objective.mask"):
        method.build(TINY, ObjectiveConfig(mask="colour"), False)


# ------------------------------------------------------------------------- tiny recipe and pseudo CoC


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions

    out = tmp_path_factory.mktemp("jdrl") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=64,
                                                             synthetic_f_numbers=(1.4, 4.0)), progress=False)
    return out


def test_rendered_pairs_reach_the_loss_flagged_aligned_and_real_ones_do_not(shards: Path) -> None:
    import tarfile

    from defocuskit.config.recipe import DataConfig
    from defocuskit.data.metadata import to_python
    from defocuskit.train.augment import to_tensors

    with tarfile.open(sorted(shards.glob("train-*.tar"))[0]) as tar:  # as --synthetic builtin writes it
        meta = next(json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json"))
    rendered = to_python(meta)
    cases = {
        "rendered": (rendered, True),
        "misalignment injected": ({**rendered, "align": {"method": "injected"}}, False),
        "ingest --render": ({**rendered, "source": "render"}, True),
        "registered real pair": ({**rendered, "source": "vabd", "align": {"method": "ecc", "score": 0.97}}, False),
        "as shot (--register none)": ({**rendered, "source": "ebb", "align": {"method": "none"}}, False),
        "no record": ({"source": "dpdd"}, False),
    }
    cfg = DataConfig(image_size=16, augment=False)
    img = np.zeros((16, 16, 3), np.uint8)
    for name, (m, expected) in cases.items():
        for kind in ("paired", "coc"):
            sample = {"key": "k", "sharp": img, "blur": img, "coc": np.zeros((16, 16), np.float32), "meta": m}
            out = to_tensors(sample, kind, cfg, np.random.default_rng(0))
            assert bool(out["aligned"]) is expected, (name, kind)
    sharp_only = to_tensors({"key": "k", "sharp": img, "meta": rendered}, "sharp", cfg, np.random.default_rng(0))
    assert "aligned" not in sharp_only


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "defocuskit", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_tiny_recipe_trains_both_stages_and_feeds_pseudo_coc(shards: Path, tmp_path: Path) -> None:
    from defocuskit.data.reader import iter_samples, read_manifest
    from defocuskit.io.modelfile import read_model_file

    run = tmp_path / "run"
    proc = _cli("train", str(REPO / "recipes" / "jdrl-tiny.yaml"), f"data.train={shards}", f"output_dir={run}",
                "train.log_every=1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and all(np.isfinite(losses))
    tensors, meta = read_model_file(run / "model.safetensors")
    assert meta["method"] == "jdrl"
    assert int(tensors["step"]) == 20 >= meta["recipe"]["objective"]["reblur_start_step"]  # stage 2 was reached

    out = tmp_path / "coc"
    proc = _cli("pseudo-coc", "--checkpoint", str(run / "model.safetensors"), "--shards", str(shards),
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    pairs = [s for s in iter_samples(shards) if s["blur"] is not None]
    samples = list(iter_samples(out))
    assert len(samples) == len(pairs) > 0 and read_manifest(out)["counts"]["samples"] == len(pairs)
    by_key = {s["key"]: s for s in pairs}
    for s in samples:
        assert s["coc"] is not None and s["coc"].shape == s["blur"].shape[:2]
        assert np.isfinite(s["coc"]).all() and s["coc"].min() >= 0
        assert np.array_equal(s["blur"], by_key[s["key"]]["blur"]) and s["meta"]["coc_source"] == "jdrl-reblur"

    # --out is owned as ingest's is: another dataset's folder is refused, a file of the user's is kept
    other = tmp_path / "other-ingest"
    shutil.copytree(shards, other)
    (other / "backup-2024.tar").write_bytes(b"backup")
    before = {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()}
    proc = _cli("pseudo-coc", "--checkpoint", str(run / "model.safetensors"), "--shards", str(shards),
                "--out", str(other))
    assert proc.returncode == 2 and "holds another dataset" in proc.stderr and "--overwrite" in proc.stderr
    assert {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()} == before
    proc = _cli("pseudo-coc", "--checkpoint", str(run / "model.safetensors"), "--shards", str(shards),
                "--out", str(other), "--overwrite")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (other / "backup-2024.tar").read_bytes() == b"backup"
    assert read_manifest(other)["counts"]["samples"] == len(pairs)


def jdrl_model_file(path: Path) -> Path:
    """A jdrl-tiny model file with the network's initial weights at `path`."""
    from defocuskit.config.recipe import recipe_to_dict
    from defocuskit.io.modelfile import save_model
    from defocuskit.methods.recipes import load_recipe

    recipe = load_recipe("jdrl-tiny")
    save_model(path, get_method("jdrl").build(recipe.model, recipe.objective, False).state_dict(), "jdrl",
               recipe_to_dict(recipe))
    return path


def test_pseudo_coc_never_writes_over_its_input_shard_named_inside_out(shards: Path, tmp_path: Path) -> None:
    from defocuskit.cli.pseudo_coc import write_pseudo_coc

    model = jdrl_model_file(tmp_path / "jdrl.safetensors")
    folder = tmp_path / "shards"
    shutil.copytree(shards, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "one.tar").symlink_to(sorted(folder.glob("train-*.tar"))[0])
    for given in (sorted(folder.glob("train-*.tar"))[0], folder / "*.tar", tmp_path / "links" / "one.tar"):
        with pytest.raises(ValueError, match=r"a shard in --out .*, which would replace it; give a new folder"):
            write_pseudo_coc(model, given, folder, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_untrained_jdrl_returns_its_input_by_default_and_the_released_output_does_not():
    from defocuskit.methods import get_method

    method = get_method("jdrl")
    cfg = dict(widths=[8, 16], map_channels=4, map_blocks=1, fusion_channels=4, reblur_channels=4, reblur_blocks=1)
    blur = torch.rand(1, 3, 21, 30)
    net = method.build(method.ModelConfig(**cfg), method.ObjectiveConfig(), False).eval()
    out = method.restore(net, blur, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig()))
    torch.testing.assert_close(out, blur, atol=1e-6, rtol=0)
    released = method.build(method.ModelConfig(**cfg, global_residual=False), method.ObjectiveConfig(), False).eval()
    out = method.restore(released, blur, RestoreContext(method.SamplerConfig(), method.ObjectiveConfig()))
    assert (out - blur).abs().mean() > 0.05
