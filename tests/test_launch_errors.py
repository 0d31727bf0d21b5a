"""Under `accelerate launch` a user error every process meets alike is said once (by the main process); an error
the main process does not report is said by the process that met it."""

from __future__ import annotations

import subprocess

import pytest
from test_train import ENV, REPO, launch_two, write_shards

LAUNCH_ENV = {**ENV, "ACCELERATE_USE_CPU": "1"}


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_user_error_under_accelerate_launch_is_said_once(tmp_path):
    """Each of the two processes printed it: `error: optim.lr ...` twice, `error: --limit must be positive` twice."""
    shards = write_shards(tmp_path / "shards", n_shards=1, per_shard=2, paired=True)
    for args, said in (
        (["train", "nafnet-tiny", "optim.lr=.nan", f"output_dir={tmp_path / 'run'}"],  # train's checks
         "optim.lr and optim.grad_clip must be positive (got nan, 1.0)"),
        (["train", "nafnet-tiny", "max_steps=many", f"output_dir={tmp_path / 'run'}"],  # the recipe as it is read
         "train.max_steps: expected an integer, got 'many' (override 'max_steps=many')"),
        (["eval", "--shards", str(tmp_path / "shards"), "--baseline", "input", "--limit", "0", "--report",
          str(tmp_path / "rep")], "error: --limit must be positive, got 0"),  # eval refusing its input
    ):
        proc = subprocess.run([*launch_two(), *args], cwd=REPO, env=LAUNCH_ENV, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode != 0 and len(errors(proc.stderr)) == 1 and said in errors(proc.stderr)[0], \
            proc.stderr[-3000:]
        assert "exitcode  : 2" in proc.stderr and "defocuskit/" not in proc.stderr, proc.stderr[-3000:]  # no traceback
    assert shards and not (tmp_path / "run").exists() and not (tmp_path / "rep").exists()


SCRIPT = """
import os, sys, time
import typer
from defocuskit.cli import once
once.WAIT_S = 3.0
rank = os.environ["RANK"]
try:
    if sys.argv[1] == "differ":
        once.fail(f"a check failed on process {rank}")
    elif rank == "1":
        once.fail("only process 1 failed")
    time.sleep(60)  # the main process goes on, until the launcher stops it
except typer.Exit as stop:
    sys.exit(stop.exit_code)
"""


@pytest.mark.parametrize("case, said", [
    ("differ", ["error: a check failed on process 0", "error: a check failed on process 1"]),
    ("one", ["error: only process 1 failed"]),
])
def test_an_error_the_main_process_does_not_report_is_said_by_its_process(tmp_path, case, said):
    script = tmp_path / "fails.py"
    script.write_text(SCRIPT)
    launch = [*launch_two()[:-2], str(script), case]  # the launcher's options, then the script instead of -m defocuskit
    proc = subprocess.run(launch, cwd=REPO, env=LAUNCH_ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and sorted(errors(proc.stderr)) == said, proc.stderr[-3000:]
