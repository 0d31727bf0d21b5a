"""How sharp are a shard folder's references? The training-free edge CoC estimate (imaging.blur_estimate) of every
sharp-only sample (a scene's reference), per photograph: the share of pixels read as blurred by more than 2 px,
and the median and 90th percentile of the map, in pixels.

    python tools/reference_sharpness.py SHARDS          # e.g. the demo's --synthetic builtin shards

A reference that is itself out of focus in places (a photograph with a shallow depth of field) is scored as the
target all the same, so a method that deblurs what the map reads as blurred there loses PSNR against it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.data.reader import iter_samples, shard_urls  # noqa: E402
from defocuskit.eval.metrics import to_unit  # noqa: E402
from defocuskit.imaging.blur_estimate import estimate_coc  # noqa: E402


def photograph(key: str) -> str:
    """The photograph of a sample key: its scene without the variant (synthetic/chelsea_v2/sharp -> chelsea,
    vabd/test/0001/f16 -> 0001)."""
    parts = key.split("/")
    return re.sub(r"_v\d+$", "", parts[-2]) if len(parts) >= 2 else key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards", type=Path)
    ap.add_argument("--splits", default="train,test")
    args = ap.parse_args()
    splits = args.splits.split(",")
    for split in splits:  # every split checked before the first is read
        try:
            shard_urls(args.shards, split)
        except FileNotFoundError as exc:
            ap.error(f"{exc}; give an ingest --out folder and --splits among its splits")
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for split in splits:
        for sample in iter_samples(args.shards, split):
            if sample["blur"] is not None:
                continue
            photo = photograph(sample["key"])
            coc = estimate_coc(to_unit(sample["sharp"]).astype(np.float32))
            rows[(split, photo)].append(((coc > 2).mean(), float(np.median(coc)), float(np.percentile(coc, 90))))
    if not rows:  # a table of no reference is no measurement
        sys.exit(f"error: {args.shards}: no reference (a sample with no blurred image) in split "
                 f"{', '.join(splits)}; `ingest --synthetic` writes one per scene")
    print("| split | photograph | references | area read > 2 px | median px | 90th percentile px |")
    print("|---|---|---:|---:|---:|---:|")
    for (split, photo), values in sorted(rows.items()):
        area, median, p90 = np.mean(values, axis=0)
        print(f"| {split} | {photo} | {len(values)} | {area:.2f} | {median:.2f} | {p90:.2f} |")


if __name__ == "__main__":
    main()
