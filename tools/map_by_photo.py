"""The defocus-map estimator with each built-in photograph held out in turn: is its miss the test photograph's?

    defocuskit ingest --synthetic builtin --synthetic-size 128 --out SHARDS --workers 1
    python tools/map_by_photo.py SHARDS OUT [--hold chelsea,coffee,rocket,camera] [--steps 2000] [--quantile 0.3]

For each --hold photograph an estimator (recipes/defocus-map-tiny.yaml, `objective.quantile`) is trained for --steps
on the pairs of the others and scored on that photograph's pairs. A photograph of SHARDS' test split (the ingest
default holds out chelsea) is scored there, the estimator trained on the train split; any other is cut out of the
train split by `tune_map_quantile.split_by_scene` into OUT/split-NAME (the test split's photographs are then in
neither part). Printed per photograph: the true and estimated CoC means, the MAE (pixels) and the per-image Pearson
correlation (tools/check_coc_estimator.py's), each averaged over images, at f/1.4, f/8 and over all pairs; then the MAE
after anchoring each estimate at its own 1st / 5th / 10th percentile (that value subtracted, clipped at 0: "the
sharpest region reads 0 px"). Model files and logs stay under OUT.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tools
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from check_coc_estimator import correlation  # noqa: E402
from tool_args import finite, whole  # noqa: E402
from tool_folders import fresh_work  # noqa: E402
from tune_map_quantile import RECIPE, check_hold, defocuskit, split_by_scene  # noqa: E402

from defocuskit.data.reader import iter_samples  # noqa: E402
from defocuskit.inference.coc_source import CocSource  # noqa: E402
from defocuskit.io.images import to_float  # noqa: E402

ANCHORS = (1, 5, 10)  # percentiles of an estimate taken as its in-focus level


def photo(key: str) -> str:
    """The built-in photograph of a sample key, e.g. synthetic/chelsea_v2/f2_8 -> chelsea."""
    return key.split("/")[1].split("_v")[0]


def score(model: Path, shards: Path) -> dict[str, dict[str, list[float]]]:
    """Per f-number label and 'all': true and estimated means, absolute errors, correlations, anchored errors."""
    source = CocSource.create("map", str(model), "cpu")
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sample in iter_samples(shards, "test"):
        if sample["blur"] is None or sample["coc"] is None:
            continue
        pred, true = source(to_float(sample["blur"]), name=sample["key"]), sample["coc"]
        for label in (f"f/{sample['meta']['f_number']:g}", "all"):
            row = rows[label]
            row["true"].append(float(true.mean()))
            row["pred"].append(float(pred.mean()))
            row["mae"].append(float(np.abs(pred - true).mean()))
            row["corr"].append(correlation(pred, true))
            for q in ANCHORS:
                anchored = np.maximum(pred - np.percentile(pred, q), 0.0)
                row[f"p{q}"].append(float(np.abs(anchored - true).mean()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path, help="an `ingest --synthetic builtin` output")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hold", default="chelsea,coffee,rocket,camera")
    parser.add_argument("--steps", type=whole(1), default=2000)
    parser.add_argument("--quantile", type=finite(0.0, True, 1.0), default=0.3,
                        help="the estimator's objective.quantile")
    args = parser.parse_args()
    shards, out = args.shards.resolve(), args.out.resolve()
    check_hold(shards, args.hold.split(","), ("train", "test"))
    fresh_work(out, ("split-*", "map-*", "*.log"), ".map_by_photo", "map_by_photo.py", "OUT")
    in_test = {photo(s["key"]) for s in iter_samples(shards, "test")}
    table = {}
    for name in args.hold.split(","):
        if name in in_test:
            train, test = str(shards), shards
        else:
            test = out / f"split-{name}"
            split_by_scene(shards, [name], test)
            train = str(test / "train-000000.tar")
        run = out / f"map-{name}"
        run.parent.mkdir(parents=True, exist_ok=True)
        defocuskit("train", RECIPE, f"data.train={train}", f"output_dir={run}", f"train.max_steps={args.steps}",
                   "train.checkpoint_every=1000000", f"objective.quantile={args.quantile:g}", log=out / f"{name}.log")
        rows = score(run / "model.safetensors", test)
        table[name] = rows
        print(f"{name}: {len(rows['all']['mae'])} pairs scored", flush=True)
    print("\n| held out | true CoC mean px | estimate mean px | MAE px | correlation f/1.4 | f/8 | all |"
          + "".join(f" MAE, anchored at p{q} |" for q in ANCHORS))
    print("|---|" + "---:|" * (6 + len(ANCHORS)))
    for name, rows in table.items():
        a = {k: float(np.mean(v)) for k, v in rows["all"].items()}
        corr = [float(np.mean(rows[f]["corr"])) if f in rows else float("nan") for f in ("f/1.4", "f/8")]
        print(f"| {name} | {a['true']:.2f} | {a['pred']:.2f} | {a['mae']:.2f} | {corr[0]:+.2f} | {corr[1]:+.2f} "
              f"| {a['corr']:+.2f} |" + "".join(f" {a[f'p{q}']:.2f} |" for q in ANCHORS))


if __name__ == "__main__":
    main()
