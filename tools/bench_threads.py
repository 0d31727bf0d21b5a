"""Threads side by side: deblur time of a 64x80 image and training steps/s (nafnet-tiny), with 1 thread, with
every core (torch's default), and with the toolkit's default, on an idle machine and beside a busy neighbour
(a process running matrix products on torch's default threads, as a second job on a shared machine does).

    python tools/bench_threads.py           # run it alone
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

CASE = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
import defocuskit
from test_infer import _export_nafnet
from pathlib import Path
model = defocuskit.load(_export_nafnet(Path(sys.argv[2]) / "m.safetensors", identity=False), device="cpu")
img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
model.deblur(img)
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 3.0:
    model.deblur(img); n += 1
deblur_s = (time.perf_counter() - t) / n
net = model._net.train()
opt = torch.optim.Adam(net.parameters(), 1e-4)
x = torch.rand(8, 3, 64, 64)
t = time.perf_counter(); n = 0
while time.perf_counter() - t < 3.0:
    loss = (net(x) - x).abs().mean(); opt.zero_grad(); loss.backward(); opt.step(); n += 1
print(json.dumps({"deblur_s": deblur_s, "steps_per_s": n / (time.perf_counter() - t)}))
"""

NEIGHBOUR = "import torch\na = torch.rand(1024, 1024)\nwhile True:\n    a = (a @ a).clamp_(-1, 1)\n"


def measure(threads: int, tmp: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", CASE, str(threads), tmp], env=env, capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from defocuskit.io.threads import available_cores, default_threads

    cores = available_cores()
    settings = {"1 thread": 1, f"every core ({cores}, torch's default)": cores,
                f"defocuskit's default ({default_threads()})": default_threads()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("idle", "busy neighbour"):
            neighbour = None
            if load != "idle":
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env)
                time.sleep(2.0)
            try:
                for name, n in settings.items():
                    r = measure(n, tmp)
                    rows.append((load, name, r["deblur_s"], r["steps_per_s"]))
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    print(f"| machine | threads | deblur 64x80, s | training steps/s (batch 8, 64 px) |\n|---|---|---:|---:|")
    for load, name, d, s in rows:
        print(f"| {load} | {name} | {d:.4f} | {s:.1f} |")


if __name__ == "__main__":
    main()
