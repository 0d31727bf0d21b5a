"""Does reblurring recover what misalignment costs? JDRL vs NAFNet on misaligned pairs vs NAFNet on aligned ones.

    python tools/bench_misaligned.py --work /tmp/bench/misaligned --minutes 3 [--fixtures ../shared/fixtures/real]

Real photographs: the VABD and EBB fixtures ingested twice at --max-side 384, as shot (`--register none`:
the references keep their shift, ~1 px for VABD and ~a dozen px at full size for EBB) and registered (ECC
affine, the aligned twin). Trained on the train split (VABD 0001-0003 at f/8, f/2.8, f/1.8, EBB train) for
the same minutes each: jdrl-tiny on the pairs as shot, nafnet-tiny on the pairs as shot, nafnet-tiny on
the registered pairs. Scored on the EBB test pairs as shot with JDRL's protocol (`--align --align-by flow`:
the reference warped onto each output) beside the input. The synthetic half of the question is
`defocuskit demo --preset misaligned` (docs/benchmarks.md gives both).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from tool_folders import fresh_work  # noqa: E402

MARK = ".bench-misaligned"  # in --work: this tool made the folder
OWN = ("shards-as-shot", "shards-registered", "runs", "report")  # what it makes there


def main() -> None:
    from report_table import table

    from defocuskit.data.ingest import run_ingest
    from defocuskit.data.sample import IngestOptions
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.methods.recipes import load_recipe
    from defocuskit.train.loop import train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=3.0, help="training minutes per model")
    ap.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "real")
    ap.add_argument("--max-side", type=int, default=384)
    args = ap.parse_args()
    fresh_work(args.work, OWN, MARK, Path(__file__).name)
    sources = {"vabd": args.fixtures / "VABD", "ebb": args.fixtures / "EBB"}
    shards = {}
    for name, register in (("as-shot", "none"), ("registered", "ecc")):
        shards[name] = args.work / f"shards-{name}"
        m = run_ingest(sources, IngestOptions(out=str(shards[name]), workers=0, max_side=args.max_side,
                                              register=register), progress=False)
        print(f"ingest {name}: {m['counts']['samples']} samples, {m['rejects']} rejects", flush=True)
    models = {}
    for label, recipe, data in (("jdrl", "jdrl-tiny.yaml", "as-shot"), ("nafnet-as-shot", "nafnet-tiny.yaml", "as-shot"),
                                ("nafnet-registered", "nafnet-tiny.yaml", "registered")):
        overrides = [f"data.train={shards[data]}", f"output_dir={args.work / 'runs' / label}", "train.max_steps=1000000",
                     f"train.max_minutes={args.minutes}", "train.checkpoint_every=1000000", "data.image_size=64"]
        models[label] = train(load_recipe(REPO / "recipes" / recipe, overrides), resume=False)
        steps = json.loads((args.work / "runs" / label / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        print(f"trained {label} on the {data} pairs: {steps} steps in {args.minutes:g} min", flush=True)
    report = evaluate(shards["as-shot"], list(models.values()), ["input"],
                      EvalConfig(split="test", by_aperture=True, align="flow", report_dir=args.work / "report",
                                 progress=False))
    print(report["protocol"]["alignment"])
    print(table(report, "psnr"))
    print()
    print(table(report, "ssim"))


if __name__ == "__main__":
    main()
