"""Ingest throughput on the builtin synthetic set, in the main process and with ingest's default workers.

    python tools/bench_ingest.py [--size 256] [--workers 0,default] [--shard-size 64]

Prints a markdown table: samples written per second and source pairs decoded (here: rendered)
per second, with the machine's CPU count and platform. `--workers` takes ingest's meaning (PyTorch's
num_workers): 0 = the main process, N = N worker processes, `default` = one per core, at most 8; the
table's workers column is the number of worker processes the run used.
Run it on an otherwise idle machine; cores shared with other jobs make the numbers meaningless.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.data.ingest import run_ingest  # noqa: E402
from defocuskit.data.sample import IngestOptions  # noqa: E402


def bench(workers: int | None, size: int, shard_size: int) -> dict:
    """One ingest of the builtin synthetic set into a temporary folder; returns the run numbers."""
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        opts = IngestOptions(out=str(Path(tmp) / "shards"), workers=workers, shard_size=shard_size, synthetic_size=size)
        manifest = run_ingest({"synthetic": Path("builtin")}, opts, progress=False)
    return manifest["run"]


def _worker_counts(text: str) -> list[int | None]:
    """`--workers`: comma-separated counts >= 0 or `default` (None: ingest's default)."""
    counts: list[int | None] = []
    for item in text.split(","):
        if item.strip() == "default":
            counts.append(None)
        elif item.strip().isdigit():
            counts.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"{item!r} is not a count >= 0 nor 'default' (in {text!r})")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="longer side of the synthetic scenes")
    parser.add_argument("--workers", type=_worker_counts, default="0,default",
                        help="comma-separated: 0 (the main process), N (N worker processes), default (one per core, at most 8)")
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    machine = f"{platform.system()} {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    print("| machine | cpus | workers | size | pairs | samples | seconds | samples/s | pairs/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w in args.workers:
        run = bench(w, args.size, args.shard_size)
        s = run["seconds"]
        print(f"| {machine} | {cpus} | {run['workers']} | {args.size} | {run['pairs_loaded']} | {run['samples_written']} "
              f"| {s:.1f} | {run['samples_written'] / s:.1f} | {run['pairs_loaded'] / s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
