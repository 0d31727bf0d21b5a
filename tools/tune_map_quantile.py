"""Which quantile of the CoC the defocus map should estimate, judged by the methods the map drives, on held-out scenes.

    python tools/tune_map_quantile.py SHARDS OUT [--hold coffee,astronaut] [--quantiles 0.3,0.15,0.05]
        [--steps 2000] [--hidd HIDD.safetensors] [--set sampler.dc_sigma=0.02 ...]

SHARDS is an ingest output (e.g. the demo's `--synthetic builtin` shards); only its train split is read, so the
test split stays unseen. The train pairs are split by scene: those whose key starts with `synthetic/<name>` for
a --hold name become OUT/split/test-000000.tar, the rest OUT/split/train-000000.tar. For each quantile a
defocus-map estimator (recipes/defocus-map-tiny.yaml, `objective.quantile=Q`) is trained for --steps on the
split's train part, then `defocuskit eval --coc map` scores the prox baseline (and HIDD, if --hidd gives a model
file, with its recipe's sampler and any --set) on the held-out scenes; one run with `--coc oracle` (the true
CoC) is the reference. Prints the PSNR gain (dB) over the blurred input per f-number and overall; reports and
estimator files stay under OUT. The map over-reads small CoCs on unseen photographs (docs/benchmarks.md), and
deconvolution with too large a disc rings, so a lower quantile trades gain at large CoC for safety at small.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tool_args import number_list, whole  # noqa: E402  (same folder)
from tool_folders import fresh_work  # noqa: E402

from defocuskit.data.reader import shard_urls  # noqa: E402

RECIPE = "recipes/defocus-map-tiny.yaml"
ROOT = Path(__file__).resolve().parents[1]


def split_by_scene(shards: Path, hold: list[str], out: Path) -> dict[str, int]:
    """Copy the train split's members into out/{train,test}-000000.tar by scene; the number of members of each."""
    out.mkdir(parents=True, exist_ok=True)
    prefixes = tuple(f"synthetic/{name}" for name in hold)
    counts = {"train": 0, "test": 0}
    with tarfile.open(out / "train-000000.tar", "w") as train, tarfile.open(out / "test-000000.tar", "w") as test:
        for url in shard_urls(shards, "train"):
            with tarfile.open(url) as tar:
                for member in tar.getmembers():
                    held = member.name.startswith(prefixes)
                    (test if held else train).addfile(member, tar.extractfile(member))
                    counts["test" if held else "train"] += 1
    if not counts["test"]:
        raise SystemExit(f"--hold {','.join(hold)}: no pair of {shards}'s train split belongs to these scenes")
    return counts


def scenes(shards: Path, split: str) -> set[str]:
    """The built-in scene names of a split's samples (synthetic/<name>[_vN]/...), read from the shards' member
    names; SystemExit naming SHARDS where it has no such split."""
    try:
        urls = shard_urls(shards, split)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: SHARDS {exc}: give an `ingest --synthetic builtin` output") from None
    found = set()
    for url in urls:
        with tarfile.open(url) as tar:
            found.update(n.split("/")[1].split("_v")[0] for n in tar.getnames() if n.startswith("synthetic/"))
    return found


def check_hold(shards: Path, hold: list[str], splits: tuple[str, ...]) -> None:
    """SystemExit in one line where a --hold name is no built-in scene of these splits of SHARDS (before any
    estimator is trained: a later name was found missing only after the earlier ones had trained)."""
    known = set().union(*(scenes(shards, split) for split in splits))
    wrong = [name for name in hold if name not in known]
    if wrong:
        raise SystemExit(f"error: --hold {','.join(hold)}: {wrong[0]!r} is no scene of {shards}'s "
                         f"{'/'.join(splits)} split (scenes: {', '.join(sorted(known)) or 'none'})")


def check_model(path: Path, method: str, arg: str) -> None:
    """SystemExit in one line where `path` is not a model file of `method`."""
    from defocuskit.io.modelfile import read_model_metadata

    try:
        found = read_model_metadata(path)["method"]
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {arg} {exc}") from None
    if found != method:
        raise SystemExit(f"error: {arg} {path}: a '{found}' model, not a '{method}' one")


def defocuskit(*args: str, log: Path) -> None:
    """Run one `python -m defocuskit` command, its output to `log`; exit with its log's tail on failure."""
    with open(log, "w") as handle:
        code = subprocess.run([sys.executable, "-m", "defocuskit", *args], cwd=ROOT, stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"defocuskit {args[0]} failed (exit {code}); see {log}:\n" + log.read_text()[-2000:])


def gains(report: Path) -> dict[str, dict[str, float]]:
    """{method: {f-number label or 'all': mean PSNR gain}} from an eval report.json."""
    table: dict[str, dict[str, float]] = {}
    for row in json.loads(report.read_text())["rows"]:
        if row["method"] == "input" or row.get("source") is not None:
            continue
        label = "all" if row["f_number"] is None else f"f/{row['f_number']:g}"
        table.setdefault(row["method"], {})[label] = row["psnr_gain"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--hold", default="coffee,astronaut", help="scenes held out of the estimator's training")
    parser.add_argument("--quantiles", type=number_list(0.0, True, 1.0), default="0.3,0.15,0.05")
    parser.add_argument("--steps", type=whole(1), default=2000)
    parser.add_argument("--hidd", type=Path, default=None, help="a HIDD model file to score with each map")
    parser.add_argument("--set", nargs="*", default=[], help="sampler overrides for HIDD (eval --set)")
    args = parser.parse_args()
    out = args.out.resolve()
    check_hold(args.shards.resolve(), args.hold.split(","), ("train",))
    if args.hidd is not None:
        check_model(args.hidd, "hidd", "--hidd")
    fresh_work(out, ("split", "maps", "eval"), ".tune_map_quantile", "tune_map_quantile.py", "OUT")
    split = out / "split"
    counts = split_by_scene(args.shards.resolve(), args.hold.split(","), split)
    print(f"held out {args.hold}: {counts['test']} members; estimator trains on {counts['train']}", flush=True)
    checkpoints = ["--checkpoint", str(args.hidd.resolve())] if args.hidd else []
    sets = [x for s in args.set for x in ("--set", s)]
    runs: list[tuple[str, str, Path | None]] = [("oracle (true CoC)", "oracle", None)]
    for q in args.quantiles.split(","):
        run = out / "maps" / f"q{q}"
        run.parent.mkdir(parents=True, exist_ok=True)
        defocuskit("train", RECIPE, f"data.train={split}/train-000000.tar", f"output_dir={run}",
                   f"train.max_steps={args.steps}", "train.checkpoint_every=1000000", f"objective.quantile={q}",
                   log=out / "maps" / f"q{q}.log")
        runs.append((f"map, quantile {q}", f"q{q}", run / "model.safetensors"))
    results = {}
    (out / "eval").mkdir(exist_ok=True)
    for name, folder, coc in runs:
        source = ["--coc", "map", "--coc-model", str(coc)] if coc else ["--coc", "oracle"]
        defocuskit("eval", "--shards", str(split), "--baseline", "input", "--baseline", "prox", *checkpoints, *sets,
                   *source, "--report", str(out / "eval" / folder), log=out / "eval" / f"{folder}.log")
        results[name] = gains(out / "eval" / folder / "report.json")
    labels = list(next(iter(results.values()))["prox"])
    print("\n| map | method | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    for name, table in results.items():
        for method, row in table.items():
            print(f"| {name} | {method} | " + " | ".join(f"{row[label]:+.2f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
