"""The largest CoC at f/1 that a set of shards holds: each sample's coc.png times its f-number, as a fraction of
the photo's long side (a training patch's: the image it was cut from, `optics.source_long_side`; the K of
`imaging.optics.bound_coc`; a defocus-map recipe's `inference.coc_bound: auto`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from defocuskit.data import metadata
from defocuskit.data.reader import COC_SCALE, ShardError, damage, iter_raw, shard_urls, where
from defocuskit.imaging import optics
from defocuskit.io.images import decode_image

QUANTILE = 99.0  # per sample: the CoC that 1% of its pixels exceed (a stray pixel of a depth edge does not set it)


@dataclass(frozen=True)
class CocBound:
    """`bound`: the largest per-sample CoC x f-number / long side (None without a sample); `samples`: how many
    samples carried coc.png and an f-number; `key`: the sample that set it."""

    bound: float | None
    samples: int
    key: str | None


def coc_bound_of(urls: Iterable[str]) -> CocBound:
    """The largest CoC x f-number of the samples of these local tar shards that carry coc.png and an f-number,
    relative to each photo's long side (a patch's: its `patch_of` image's; per sample the QUANTILE-th percentile of
    its coc.png); a damaged member is a ShardError naming its shard and sample."""
    best, best_key, n = None, None, 0
    for url in urls:
        for raw in iter_raw(url):
            coc_png, meta = raw.get("coc.png"), raw.get("json")
            if coc_png is None or meta is None:
                continue
            key = raw.get("__key__", "<unknown>")
            try:
                info = metadata.to_python(json.loads(meta))
                f_number = info.get("f_number")
                if not f_number:
                    continue
                coc = decode_image(coc_png, f"{key}.coc.png")
            except Exception as exc:  # one line naming the shard, the sample and what is wrong
                raise ShardError(f"{where(raw)}sample {key}: {damage(exc)}") from None
            n += 1
            long_side = optics.source_long_side(info, *coc.shape[:2])
            value = float(np.percentile(coc, QUANTILE)) / COC_SCALE * float(f_number) / long_side
            if best is None or value > best:
                best, best_key = value, key
    return CocBound(best, n, best_key)


def describe_bounds(folder: Path, splits: list[str]) -> str:
    """One line per split of a shard folder: its CocBound, or that no sample carries coc.png and an f-number."""
    lines = []
    for split in splits:
        found = coc_bound_of(shard_urls(folder, split))
        lines.append(f"{split}: largest CoC x f-number / long side {found.bound:.5f} over {found.samples} samples "
                     f"(set by {found.key}): --coc-bound {found.bound:.5f}" if found.bound is not None else
                     f"{split}: no sample with coc.png and an f-number")
    return "\n".join(lines)
