"""The size a model deblurs a photo at, side by side: the photo's own size, the training images' long side
(`--work-side trained`) and the blur-matched side (`--work-side auto`), scored by `defocuskit eval` on the same shards.

    python tools/bench_work_side.py --checkpoint RUN/model.safetensors --shards FULL_SIZE_SHARDS --report OUT \
        [--train-shards RENDERS ...] [--align-by flow] [--split test]

A model exported before `train_blur_px` was recorded gets it here from its training shards (`--train-shards`, as
`train` records it: data.image_scale.median_blur_px), in a copy under OUT; a model that records it is used as it is.
Every model runs gated as its recipe says (its own focus gate). Prints the gain over the input per f-number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True, help="the test shards, at the photos' own size")
    ap.add_argument("--report", type=Path, required=True, help="output folder (the report and a model copy)")
    ap.add_argument("--train-shards", type=Path, nargs="*", default=[],
                    help="the model's training shard folders: its train_blur_px where the file lacks it")
    ap.add_argument("--align-by", choices=("ecc", "flow"), default=None, help="eval --align --align-by (EBB: flow)")
    ap.add_argument("--split", default="test")
    args = ap.parse_args(argv)

    from defocuskit.data.image_scale import median_blur_px
    from defocuskit.data.reader import shard_urls
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.inference.scale import trained_blur
    from defocuskit.io.modelfile import blur_entry, read_model_file, save_model

    args.report.mkdir(parents=True, exist_ok=True)
    model, recorded = args.checkpoint, trained_blur(args.checkpoint)
    if recorded is None:
        if not args.train_shards:
            print(f"{model} records no train_blur_px: give --train-shards", file=sys.stderr)
            return 2
        urls = [u for folder in args.train_shards for u in shard_urls(folder, "train")]
        blur = median_blur_px(urls)
        tensors, meta = read_model_file(model)
        extra = {k: v for k, v in meta.items() if k not in ("method", "recipe")}
        model = args.report / "model.safetensors"
        save_model(model, tensors, meta["method"], meta["recipe"], extra={**extra, **blur_entry(blur)})
        recorded = trained_blur(model)
        print(f"train_blur_px {recorded} from {len(urls)} training shard(s)", file=sys.stderr)
    base = model.parent.name if model.stem == "model" else model.stem  # eval's label (eval.runners._label)
    config = EvalConfig(split=args.split, report_dir=args.report / "report", progress=False,
                        work_sides=[f"{base}:0", f"{base}#2:trained", f"{base}#3:auto"], align=args.align_by or False)
    report = evaluate(args.shards, [model, model, model], ["input"], config)
    names = {base: "whole", f"{base}#2": "trained", f"{base}#3": "auto"}
    rows = [r for r in report["rows"] if r["method"] in names]
    print(f"train_blur_px {recorded}; gain over the input, dB (n)")
    for r in rows:
        where = f"f/{r['f_number']}" if r['f_number'] is not None else 'all'
        print(f"{names[r['method']]:8s} {where}: {r['psnr'] - r['psnr_input']:+.3f} (n={r['n']}, input "
              f"{r['psnr_input']:.2f})")
    (args.report / "gains.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
