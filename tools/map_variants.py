"""Variants of the demo's defocus-map estimator side by side, trained in-process on the same data and seed.

    python tools/map_variants.py SPLIT [--steps 2000] [--seeds 0,1] [--variants base:64,base:128,pool:128,...]

SPLIT holds train-000000.tar and test-000000.tar (e.g. `tools/tune_map_quantile.py`'s split_by_scene of the
built-in set: coffee and astronaut held out). Each variant (MODE:CROP) is models/dilated_map.DilatedMapEstimator
as recipes/defocus-map-tiny.yaml builds it (width 24, dilations 1, 2, 4, 8, 1, 1/4 resolution, log band
energies), trained by the 30th-percentile pinball loss on CROP px crops (CROP >= the image: whole images), batch 8,
AdamW 1e-3 with cosine decay, gradient clip 1, horizontal flips; then run on each whole test image and bounded by
the f-number as `--coc map` bounds it (K: the training pairs' largest CoC x f-number / long side). MODE:
- base: the estimator as it is.
- pool: + whole-image context: after the fourth block the features' spatial mean and max, through two 1x1
  convolutions, are added at every cell (ParseNet / ASPP's image-level feature).
- rel: + each band's log energy minus the image's (crop's) own 95th percentile of it (sharpness relative to the
  image's sharpest region, the focal plane where there is one).
- edge: + the training-free edge map (`--coc edge`, computed once per whole image) as a sixth input, log(1 + px).
- avg: the base estimator's map averaged with the edge map (fused at the output).
Prints per variant and seed the estimate mean, MAE (px) and per-image correlation with coc.png, all f-numbers and
each. A benchmark of candidate designs, not a trainer: the chosen design goes into models/ and the recipe.
"""

from __future__ import annotations

import argparse
import math
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.data.reader import decode_sample  # noqa: E402
from defocuskit.inference.coc_source import edge_coc  # noqa: E402
from defocuskit.models.dilated_map import DilatedMapEstimator  # noqa: E402

MODES = ("base", "pool", "rel", "edge", "avg")
QUANTILE = 0.3  # the pinball loss's quantile (docs/benchmarks.md's tuning-split rows use 0.3)
COC_NORM = 4.0


def load(tar: Path, with_edge: bool) -> list[tuple[str, np.ndarray, np.ndarray, float | None]]:
    """(key, image float (H, W, 3 or 4: + the edge map), coc (H, W) px, f-number) of each pair with coc.png."""
    groups: dict[str, dict] = defaultdict(dict)
    with tarfile.open(tar) as t:
        for m in t.getmembers():
            if m.isfile():
                key, _, ext = m.name.partition(".")
                groups[key][ext] = t.extractfile(m).read()
    out = []
    for key, raw in sorted(groups.items()):
        sample = decode_sample({**raw, "__key__": key})
        if sample["blur"] is None or sample["coc"] is None:
            continue
        img = sample["blur"].astype(np.float32) / (65535.0 if sample["blur"].dtype == np.uint16 else 255.0)
        if with_edge:
            img = np.concatenate([img, edge_coc(img)[..., None].astype(np.float32)], 2)
        out.append((key, img, sample["coc"].astype(np.float32), sample["meta"].get("f_number")))
    return out


class Variant(DilatedMapEstimator):
    """The demo's estimator with one MODE's change (see the module's docstring)."""

    def __init__(self, mode: str, width: int = 24) -> None:
        super().__init__(width=width, dilations=(1, 2, 4, 8, 1), coc_scale=4.0)
        self.mode = mode
        extra = {"rel": 5, "edge": 1}.get(mode, 0)
        if extra:
            self.stem[0] = nn.Conv2d(5 + extra, width, 3, padding=1)
        if mode == "pool":
            self.image_level = nn.Sequential(nn.Conv2d(2 * width, width, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(width, width, 1))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        bands = super().inputs(x[:, :3])
        if self.mode == "rel":
            top = torch.quantile(bands.flatten(2), 0.95, dim=2)[..., None, None]
            return torch.cat([bands, bands - top], 1)
        if self.mode == "edge":
            return torch.cat([bands, torch.log1p(x[:, 3:4]) - 1.0], 1)
        return bands

    def logits(self, x: torch.Tensor, channels: slice) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.downsample
        z = F.avg_pool2d(F.pad(self.inputs(x), (0, (-w) % s, 0, (-h) % s), mode="replicate"), s)
        z = self.stem(z)
        for i, block in enumerate(self.blocks):
            z = z + block(z)
            if self.mode == "pool" and i == len(self.blocks) - 2:
                z = z + self.image_level(torch.cat([z.mean((2, 3), keepdim=True), z.amax((2, 3), keepdim=True)], 1))
        z = self.head(z)[:, channels]
        return F.interpolate(z, scale_factor=s, mode="bilinear", align_corners=False)[..., :h, :w]


def batch(data: list, crop: int, size: int, rng: np.random.Generator, channels: int) -> tuple[torch.Tensor, ...]:
    """`size` random crops (flipped at random) of images and CoC maps, cut to the smallest in the batch."""
    xs, ys = [], []
    for _ in range(size):
        _, img, coc, _ = data[rng.integers(len(data))]
        h, w = coc.shape
        c = min(crop, h, w)
        y0, x0 = rng.integers(h - c + 1), rng.integers(w - c + 1)
        a, b = img[y0:y0 + c, x0:x0 + c, :channels], coc[y0:y0 + c, x0:x0 + c]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        xs.append(a), ys.append(b)
    hh, ww = min(a.shape[0] for a in xs), min(a.shape[1] for a in xs)
    x = torch.from_numpy(np.stack([np.ascontiguousarray(a[:hh, :ww]) for a in xs])).permute(0, 3, 1, 2)
    return x, torch.from_numpy(np.stack([np.ascontiguousarray(b[:hh, :ww]) for b in ys]))[:, None]


def train(mode: str, crop: int, data: list, steps: int, seed: int) -> Variant:
    """One variant trained as the module's docstring says."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Variant(mode)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    channels = 4 if mode == "edge" else 3
    for _ in range(steps):
        x, y = batch(data, crop, 8, rng, channels)
        d = (y - model(x)) / COC_NORM
        loss = 2 * torch.maximum(QUANTILE * d, (QUANTILE - 1) * d).mean()  # pinball loss, as objective.loss=quantile
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model


def score(model: Variant, test: list, k: float) -> dict:
    """{f-number or 'all': (estimate mean, MAE, per-image correlation)}, the map bounded by k x long side / N."""
    rows = defaultdict(list)
    with torch.no_grad():
        for _, img, coc, fn in test:
            x = img if model.mode == "edge" else img[..., :3]
            p = model(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None])[0, 0].numpy()
            if model.mode == "avg":
                p = 0.5 * (p + img[..., 3])
            if fn:
                p = np.minimum(p, k * max(coc.shape) / fn)
            corr = float(np.corrcoef(p.ravel(), coc.ravel())[0, 1]) if p.std() > 1e-6 else 0.0
            for key in (fn, "all"):
                rows[key].append((p.mean(), np.abs(p - coc).mean(), corr))
    return {key: np.mean(v, 0) for key, v in rows.items()}


def edge_alone(test: list, k: float) -> np.ndarray:
    """(estimate mean, MAE, per-image correlation) of the edge map itself, bounded as the variants are."""
    rows = []
    for _, img, coc, fn in test:
        e = np.minimum(img[..., 3], k * max(coc.shape) / fn) if fn else img[..., 3]
        rows.append((e.mean(), np.abs(e - coc).mean(), float(np.corrcoef(e.ravel(), coc.ravel())[0, 1])))
    return np.mean(rows, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split", type=Path)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="base:64,base:128,pool:128,rel:64,rel:128,edge:64,edge:128,avg:128")
    args = ap.parse_args()
    variants = [(m, int(c)) for m, c in (v.split(":") for v in args.variants.split(","))]
    if bad := [m for m, _ in variants if m not in MODES]:
        raise SystemExit(f"error: --variants: unknown mode {bad[0]!r} (known: {', '.join(MODES)})")
    with_edge = any(m in ("edge", "avg") for m, _ in variants)
    train_set, test_set = (load(args.split / f"{s}-000000.tar", with_edge) for s in ("train", "test"))
    k = max(float(c.max()) * fn / max(c.shape) for _, _, c, fn in train_set if fn)
    print(f"{len(train_set)} training pairs, {len(test_set)} test pairs, bound K {k:.4f}, true CoC mean "
          f"{np.mean([c.mean() for _, _, c, _ in test_set]):.2f} px")
    if with_edge:
        r = edge_alone(test_set, k)
        print(f"the edge map alone: est {r[0]:.2f}  MAE {r[1]:.2f}  corr {r[2]:+.2f}")
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode, crop in variants:
            start = time.time()
            r = score(train(mode, crop, train_set, args.steps, seed), test_set, k)
            per = " ".join(f"f/{f:g} {r[f][1]:.2f}/{r[f][2]:+.2f}" for f in sorted(x for x in r if x != "all"))
            print(f"{mode}:{crop:<4d} seed {seed} {time.time() - start:5.0f} s  est {r['all'][0]:.2f}  MAE "
                  f"{r['all'][1]:.2f}  corr {r['all'][2]:+.2f} | MAE/corr {per}", flush=True)


if __name__ == "__main__":
    main()
