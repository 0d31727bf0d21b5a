"""Where an RDDM model's output differs from the reference: its pre-deblur and its residual, apart.

    python tools/rddm_parts.py MODEL.safetensors SHARDS [--split test] [--steps 2] [--seed 0]

For every blurred pair of the split: the mean offset from the reference (brightness) of the input, of the
pre-deblurred image and of the output, the residual's mean against the one it should predict (reference minus
pre-deblur), and the squared error of each after a 9 x 9 box low-pass (the light), averaged over the pairs.
docs/benchmarks.md, "RDDM's pre-deblur anchored".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.inference.load import load_model  # noqa: E402
from defocuskit.methods.base import RestoreContext, unwrap  # noqa: E402


def lowpass(x: torch.Tensor) -> torch.Tensor:
    """A 9 x 9 box mean per channel, borders reflected."""
    flat = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (4, 4, 4, 4), mode="reflect")
    return F.avg_pool2d(flat, 9, 1).reshape(x.shape)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return torch.from_numpy(image.astype(np.float32) / scale).permute(2, 0, 1)[None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("shards", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--steps", type=int, default=2, help="DDIM steps (the recipes' 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    method, recipe, model = load_model(args.model, expect_method="rddm")
    sampler = dataclasses.replace(recipe.sampler, steps=args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    multiple = method.pad_multiple(model)
    rows: dict[str, list[float]] = {}
    for sample in iter_samples(args.shards, args.split):
        if sample["blur"] is None:
            continue
        blur, ref = to_tensor(sample["blur"]), to_tensor(sample["sharp"])
        h, w = blur.shape[-2:]
        padded = F.pad(blur, (0, -w % multiple, 0, -h % multiple), mode="reflect")  # the network's multiple
        with torch.no_grad():
            pre = unwrap(model).condition(padded)[0][..., :h, :w]  # what rddm.restore adds the residual to
            out = method.restore(model, padded, RestoreContext(sampler, recipe.objective, generator))[..., :h, :w]
        residual = out - pre  # the sampled residual, as the clamp to [0, 1] leaves it
        for name, value in (
            ("input - reference, mean", (blur - ref).mean()),
            ("pre-deblur - reference, mean", (pre - ref).mean()),
            ("output - reference, mean", (out - ref).mean()),
            ("residual (output - pre-deblur), mean", residual.mean()),
            ("residual it should be, mean", (ref - pre).mean()),
            ("input, low-pass squared error", ((lowpass(blur) - lowpass(ref)) ** 2).mean()),
            ("pre-deblur, low-pass squared error", ((lowpass(pre) - lowpass(ref)) ** 2).mean()),
            ("output, low-pass squared error", ((lowpass(out) - lowpass(ref)) ** 2).mean()),
        ):
            rows.setdefault(name, []).append(float(value))
    if not rows:
        sys.exit(f"{args.shards}: no blurred pair in the {args.split} split")
    n = len(next(iter(rows.values())))
    for name, values in rows.items():
        print(f"{name:38s} {np.mean(values):+.5f}   ({n} pairs)")


if __name__ == "__main__":
    main()
