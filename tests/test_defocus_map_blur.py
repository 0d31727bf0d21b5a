"""The defocus-map estimator's blur-detection head, its data kind "map" (coc.png and/or blurmask.png samples
in one batch), list-valued data.train, and encoder weights from `model.pretrained` (never from the hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import webdataset as wds
import yaml
from safetensors.torch import save_file

from defocuskit.config.typed import RecipeError
from defocuskit.data.shards import encode_coc
from defocuskit.inference.load import load_model
from defocuskit.io.images import encode_png
from defocuskit.methods import get_method
from defocuskit.methods.defocus_map import ModelConfig, ObjectiveConfig, loss_terms
from defocuskit.methods.recipes import load_recipe
from defocuskit.models.defocus_map import DefocusMapEstimator
from defocuskit.train.data import check_data, make_loader, train_urls

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = str(REPO / "recipes" / "defocus-map-tiny.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
SHAPE = dict(hidden_sizes=[8, 16, 32, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
             decoder_hidden_size=16, drop_path_rate=0.0)
TINY = ModelConfig(**SHAPE)
HEAD = ModelConfig(**SHAPE, blur_head=True)
METHOD = get_method("defocus-map")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach the Hugging Face hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # (read at import, and at each call)


# ------------------------------------------------------------------------------------------------ shards


def blur_map_sample(rng: np.random.Generator, key: str, size: int = 40) -> dict[str, bytes]:
    """blur.png + blurmask.png + json, no sharp.png: textured where in focus, flat where blurred (about 3/4)."""
    mask = np.full((size, size), 255, np.uint8)
    y, x = rng.integers(0, size // 2, 2)
    mask[y:y + size // 2, x:x + size // 2] = 0
    flat = np.kron(rng.random((2, 2, 3)), np.ones((size // 2, size // 2, 1)))
    texture = rng.random((size, size, 3))
    img = np.where(mask[..., None] == 255, flat, texture)
    return {"__key__": key, "blur.png": encode_png((img * 255).astype(np.uint8)), "blurmask.png": encode_png(mask),
            "json": json.dumps({"source": "cuhk-blur"}).encode()}


def coc_sample(rng: np.random.Generator, key: str, size: int = 40) -> dict[str, bytes]:
    """sharp.png + blur.png + coc.png + json (a synthetic triplet)."""
    blur = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    coc = np.tile(np.linspace(0, 6, size, dtype=np.float32), (size, 1))
    return {"__key__": key, "sharp.png": encode_png(blur), "blur.png": encode_png(blur),
            "coc.png": encode_png(encode_coc(coc)), "json": json.dumps({"f_number": 2.8}).encode()}


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as w:
        for s in samples:
            w.write(s)
    return path


def folders(tmp: Path, n: int = 6) -> tuple[Path, Path]:
    """A synthetic CoC folder and a CUHK-like blur-map folder, each with one train shard."""
    rng = np.random.default_rng(0)
    write_shard(tmp / "syn" / "train-000000.tar", [coc_sample(rng, f"c{i}") for i in range(n)])
    write_shard(tmp / "cuhk" / "train-000000.tar", [blur_map_sample(rng, f"m{i}") for i in range(n)])
    return tmp / "syn", tmp / "cuhk"


# ------------------------------------------------------------------------------------------------- model


def test_blur_head_shapes_and_one_pass_maps():
    torch.manual_seed(0)
    model = METHOD.build(HEAD, ObjectiveConfig(blur_weight=1.0), True)
    assert model.has_blur_head and model.segformer.config.num_labels == 2
    passes = []
    model.segformer.register_forward_hook(lambda *a: passes.append(1))
    x = torch.rand(2, 3, 40, 56)
    maps = model.maps(x)
    assert len(passes) == 1 and set(maps) == {"coc", "blur_logit"}
    assert maps["coc"].shape == maps["blur_logit"].shape == (2, 1, 40, 56) and maps["coc"].min() >= 0
    torch.testing.assert_close(maps["coc"], model(x))
    torch.testing.assert_close(maps["blur_logit"], model.blur_logit(x))

    plain = METHOD.build(TINY, ObjectiveConfig(), True)
    assert not plain.has_blur_head and set(plain.maps(x)) == {"coc"}
    with pytest.raises(ValueError, match="blur head"):
        plain.blur_logit(x)


def test_bce_reaches_the_head_and_coc_only_batches_give_zero():
    torch.manual_seed(0)
    obj = ObjectiveConfig(coc_weight=1.0, blur_weight=0.5)
    model = METHOD.build(HEAD, obj, True)
    blur = torch.rand(2, 3, 32, 32)
    zeros = torch.zeros(2, 1, 32, 32)
    mask_only = {"blur": blur, "coc": zeros, "blurmask": (blur[:, :1] > 0.5).float(),
                 "has_coc": torch.tensor([False, False]), "has_blurmask": torch.tensor([True, True])}
    terms = loss_terms(model, mask_only, obj)
    assert terms["coc"].item() == 0 and terms["blur"].item() > 0.1
    METHOD.loss(model, mask_only, obj).backward()
    grad = model.segformer.decode_head.classifier.weight.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0  # only the blur channel learns here

    model.zero_grad()
    coc_only = {"blur": blur, "coc": torch.rand(2, 1, 32, 32) * 4, "blurmask": zeros,
                "has_coc": torch.tensor([True, True]), "has_blurmask": torch.tensor([False, False])}
    terms = loss_terms(model, coc_only, obj)
    assert terms["blur"].item() == 0 and terms["blur"].requires_grad and terms["coc"].item() > 0
    METHOD.loss(model, coc_only, obj).backward()
    grad = model.segformer.decode_head.classifier.weight.grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0


def test_weights_are_checked():
    with pytest.raises(ValueError, match=r"objective.blur_weight.*model.blur_head"):
        METHOD.build(TINY, ObjectiveConfig(blur_weight=0.5), True)
    with pytest.raises(ValueError, match="both 0"):
        ObjectiveConfig(coc_weight=0.0, blur_weight=0.0)
    with pytest.raises(RecipeError, match="objective.coc_weight"):
        load_recipe(TINY_RECIPE, ["objective.coc_weight=-1"])


# -------------------------------------------------------------------------------------------------- data


def test_mixed_batch_collates_with_aligned_crops(tmp_path):
    rng = np.random.default_rng(3)
    blur = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    coc = blur[..., 1].astype(np.float32) / 255 * 4  # CoC and blur mask drawn from the image: alignment shows
    samples = [
        {"__key__": "sharp-only", "sharp.png": encode_png(blur), "json": b"{}"},  # not usable: skipped
        {"__key__": "triplet", "sharp.png": encode_png(blur), "blur.png": encode_png(blur),
         "coc.png": encode_png(encode_coc(coc)), "json": b"{}"},
        {"__key__": "blurmap", "blur.png": encode_png(blur),
         "blurmask.png": encode_png(np.where(blur[..., 0] > 127, 255, 0).astype(np.uint8)), "json": b"{}"},
    ]
    write_shard(tmp_path / "train-000000.tar", samples)
    recipe = load_recipe(TINY_RECIPE, [f"data.train={tmp_path}", "data.num_workers=0", "data.shuffle_buffer=0",
                                       "data.batch_size=2", "data.augment=true", "data.image_size=32"])
    batch = next(iter(make_loader(recipe, METHOD, 0, 1)))
    assert batch["key"] == ["triplet", "blurmap"]
    assert batch["blur"].shape == (2, 3, 32, 32)
    assert batch["coc"].shape == batch["blurmask"].shape == (2, 1, 32, 32)
    assert batch["has_coc"].tolist() == [True, False] and batch["has_blurmask"].tolist() == [False, True]
    assert batch["has_coc"].dtype == torch.bool
    torch.testing.assert_close(batch["coc"][0], batch["blur"][0, 1:2] * 4, atol=1 / 256, rtol=0)
    assert batch["coc"][1].abs().sum() == 0 and batch["blurmask"][0].abs().sum() == 0
    assert set(batch["blurmask"].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(batch["blurmask"][1, 0], (batch["blur"][1, 0] * 255 > 127.5).float())


def test_list_valued_data_train_is_checked_per_spec(tmp_path):
    syn, cuhk = folders(tmp_path, n=2)
    recipe = load_recipe(TINY_RECIPE, [f"data.train=[{syn}, {cuhk}]"])
    assert recipe.data.train == [str(syn), str(cuhk)]
    assert train_urls(recipe.data) == [str(syn / "train-000000.tar"), str(cuhk / "train-000000.tar")]
    assert len(check_data(recipe, METHOD)) == 2
    assert load_recipe(TINY_RECIPE, [f"data.train={syn}"]).data.train == str(syn)  # a string still works

    with pytest.raises(FileNotFoundError, match=r"data.train\[1\].*nowhere"):
        check_data(load_recipe(TINY_RECIPE, [f"data.train=[{syn}, {tmp_path / 'nowhere'}]"]), METHOD)
    with pytest.raises(ValueError, match=r"data.train\[1\].*cuhk.*sharp.png \+ blur.png"):  # a paired method
        check_data(load_recipe(str(REPO / "recipes" / "nafnet-tiny.yaml"), [f"data.train=[{syn}, {cuhk}]"]),
                   get_method("nafnet"))
    blur_on_syn = load_recipe(TINY_RECIPE, [f"data.train=[{syn}]", "model.blur_head=true",
                                            "objective.blur_weight=0.5"])
    with pytest.raises(ValueError, match=r"objective.blur_weight is 0.5 but the shards of .*syn.* blurmask.png"):
        check_data(blur_on_syn, METHOD)
    with pytest.raises(ValueError, match=r"objective.coc_weight is 1.0 .* coc.png"):
        check_data(load_recipe(TINY_RECIPE, [f"data.train={cuhk}"]), METHOD)


# ------------------------------------------------------------------------------------------------ training


def blur_bce(model: torch.nn.Module, folder: Path) -> float:
    """Mean BCE of the blur logit over the blur-map samples of `folder` (full images)."""
    from defocuskit.data.reader import iter_samples

    losses = []
    for s in iter_samples(folder):
        x = torch.from_numpy(s["blur"].astype(np.float32) / 255).permute(2, 0, 1)[None]
        target = torch.from_numpy((s["blurmask"] >= 128).astype(np.float32))[None, None]
        with torch.no_grad():
            losses.append(F.binary_cross_entropy_with_logits(model.blur_logit(x), target).item())
    return float(np.mean(losses))


def test_cli_trains_the_blur_head_on_mixed_folders(tmp_path):
    syn, cuhk = folders(tmp_path / "data")
    out = tmp_path / "run"
    overrides = [f"data.train=[{syn}, {cuhk}]", f"output_dir={out}", "train.max_steps=60", "train.log_every=1",
                 "train.checkpoint_every=1000", "data.batch_size=4", "model.blur_head=true",
                 "objective.blur_weight=0.5", "optim.lr=3e-3", "optim.warmup_steps=0", "optim.schedule=constant",
                 "train.ema_decay=0"]
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "train", TINY_RECIPE, *overrides], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, recipe, trained = load_model(out / "model.safetensors")
    assert recipe.data.train == [str(syn), str(cuhk)] and trained.has_blur_head
    torch.manual_seed(recipe.seed)  # the loop's initial weights
    initial = METHOD.build(recipe.model, recipe.objective, True).eval()
    before, after = blur_bce(initial, cuhk), blur_bce(trained, cuhk)
    assert after < 0.85 * before, (before, after)  # 0.69 (chance) -> about 0.50 (the 3/4 prior alone: 0.56)


# ------------------------------------------------------------------------------------------ pretrained


def _segformer(kind: str = "semantic", hidden_sizes: list[int] | None = None):
    from transformers import SegformerConfig, SegformerForImageClassification, SegformerForSemanticSegmentation

    cfg = SegformerConfig(hidden_sizes=hidden_sizes or SHAPE["hidden_sizes"], depths=SHAPE["depths"],
                          num_attention_heads=SHAPE["num_attention_heads"], decoder_hidden_size=16, num_labels=3)
    torch.manual_seed(7)
    return (SegformerForImageClassification if kind == "classify" else SegformerForSemanticSegmentation)(cfg)


def _assert_encoder_equal(model: DefocusMapEstimator, source: torch.nn.Module) -> None:
    mine = model.segformer.segformer.state_dict()
    theirs = source.segformer.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["semantic", "classify"])
def test_pretrained_from_a_save_pretrained_folder(tmp_path, kind):
    source = _segformer(kind)
    source.save_pretrained(tmp_path / "mit")
    model = METHOD.build(ModelConfig(**SHAPE, blur_head=True, pretrained=str(tmp_path / "mit")),
                         ObjectiveConfig(blur_weight=1.0), True)
    _assert_encoder_equal(model, source)
    assert model.segformer.config.num_labels == 2  # the head is ours (random), not the file's


@pytest.mark.parametrize("prefix", ["segformer.", "", "old names"])
def test_pretrained_from_a_safetensors_state_dict(tmp_path, prefix):
    source = _segformer("classify")
    state = dict(source.state_dict())
    if prefix == "old names":  # the hub's and transformers 4's names (segformer.encoder.block.0.0.attention.self...)
        core = pytest.importorskip("transformers.core_model_loading")
        state = core.revert_weight_conversion(source, state)
        assert any(".attention.self.query." in k for k in state)
    state = {(k if prefix else k.removeprefix("segformer.")): v.contiguous() for k, v in state.items()}
    save_file(state, str(tmp_path / "mit.safetensors"))
    model = DefocusMapEstimator(**SHAPE, pretrained=str(tmp_path / "mit.safetensors"))
    _assert_encoder_equal(model, source)


def test_pretrained_errors_name_the_key_and_ways_out(tmp_path):
    def build(value: str, for_training: bool = True) -> torch.nn.Module:
        return METHOD.build(ModelConfig(**SHAPE, pretrained=value), ObjectiveConfig(), for_training)

    missing = str(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=r"model.pretrained.*nope.safetensors.*local copy.*pretrained: null"):
        build(missing)
    build(missing, for_training=False)  # an exported model never loads the pretrained weights

    _segformer(hidden_sizes=[8, 16, 32, 64]).save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match=r"model.pretrained.*wide.*hidden_sizes"):
        build(str(tmp_path / "wide"))
    save_file({"decode_head.classifier.weight": torch.zeros(3, 16, 1, 1)}, str(tmp_path / "head.safetensors"))
    with pytest.raises(ValueError, match=r"model.pretrained.*no SegFormer encoder weight"):
        build(str(tmp_path / "head.safetensors"))
    with pytest.raises(ValueError, match=r"model.pretrained.*nvidia/no-such-model-xyz.*pretrained: null"):
        build("nvidia/no-such-model-xyz")  # offline (HF_HUB_OFFLINE=1): fails at once, contacts nothing


# ---------------------------------------------------------------------------------------------- recipes


def test_released_recipe_shape_and_sources():
    recipe = load_recipe(str(REPO / "recipes" / "defocus-map.yaml"))
    m, o = recipe.model, recipe.objective
    assert m.hidden_sizes == [64, 128, 320, 512] and m.depths == [2, 2, 2, 2] and m.blur_head
    assert m.pretrained == "nvidia/mit-b1" and o.blur_weight == 1.0 and o.coc_weight == 1.0
    assert isinstance(recipe.data.train, list) and len(recipe.data.train) == 2
    model = METHOD.build(m, o, False)  # no download: pretrained weights are for training only
    n = sum(p.numel() for p in model.parameters())
    assert 13.0e6 < n < 14.0e6  # SegFormer-B1: 13.7 M
    text = (REPO / "recipes" / "defocus-map.yaml").read_text().splitlines()
    raw = yaml.safe_load("\n".join(text))
    assert raw["model"]["pretrained"] == "nvidia/mit-b1"
    for i, line in enumerate(text):  # every value says where it comes from
        body = line.split("#")[0]
        if ":" in body and body.split(":", 1)[1].strip() and not line.lstrip().startswith("- "):
            said = line + (text[i - 1] if i else "")
            assert any(s in said for s in ("release:", "paper:", "port")), line
