"""Ingest throughput on the builtin synthetic set, with 1 worker and with all cores.

    python tools/bench_ingest.py [--size 256] [--workers 1,0] [--shard-size 64]

Prints a markdown table: samples written per second and source pairs decoded (here: rendered)
per second, with the machine's CPU count and platform. Workers 0 means all cores.
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


def bench(workers: int, size: int, shard_size: int) -> dict:
    """One ingest of the builtin synthetic set into a temporary folder; returns the run numbers."""
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        opts = IngestOptions(out=str(Path(tmp) / "shards"), workers=workers, shard_size=shard_size, synthetic_size=size)
        manifest = run_ingest({"synthetic": Path("builtin")}, opts, progress=False)
    return manifest["run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="longer side of the synthetic scenes")
    parser.add_argument("--workers", default="1,0", help="comma-separated worker counts (0: all cores)")
    parser.add_argument("--shard-size", type=int, default=64)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    machine = f"{platform.system()} {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}"
    print("| machine | cpus | workers | size | pairs | samples | seconds | samples/s | pairs/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for w in (int(x) for x in args.workers.split(",")):
        run = bench(w, args.size, args.shard_size)
        s = run["seconds"]
        print(f"| {machine} | {cpus} | {run['workers']} | {args.size} | {run['pairs_loaded']} | {run['samples_written']} "
              f"| {s:.1f} | {run['samples_written'] / s:.1f} | {run['pairs_loaded'] / s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
