"""A user error under `accelerate launch`, said once: every process checks the same command line and fails the same
check, so the main process says it and the others, once they have seen the main one say the same, stop quietly.
A process whose error the main process did not report (its own, or none from the main one) says it itself."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, NoReturn

import typer

WAIT_S = 10.0  # how long another process waits for the main one's error before it says its own


def _launch_store() -> Any:
    """The key-value store of the launch that started this process (torchrun's agent, `accelerate launch`), or None
    where there is none to reach (one process, or a launcher without one)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not os.environ.get("MASTER_PORT", "").isdigit():
        return None
    try:
        from torch.distributed import TCPStore

        return TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"]), is_master=False,
                        timeout=timedelta(seconds=WAIT_S))
    except Exception:  # noqa: BLE001 (no store to reach: every process says its error, as without a launcher)
        return None


def say_error(message: str) -> None:
    """`error: message` on stderr, once under `accelerate launch` (WORLD_SIZE > 1): the main process says it;
    another process stays quiet only where the main process reported the same error within WAIT_S (one that
    differs, one that wraps it included, it says as well)."""
    world, rank = os.environ.get("WORLD_SIZE", "1"), os.environ.get("RANK", "0")
    store = _launch_store() if world.isdigit() and int(world) > 1 else None
    if store is not None:
        key = f"defocuskit-error/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        try:
            store.set(f"{key}/{rank}", message)
            if rank != "0":
                store.wait([f"{key}/0"], timedelta(seconds=WAIT_S))
                if store.get(f"{key}/0").decode("utf-8", "replace") == message:
                    return
        except Exception:  # noqa: BLE001 (no word from the main process in time: this process says its error)
            pass
    _say(f"error: {message}\n")


def _say(line: str) -> None:
    """`line` on stderr in one write: two processes failing at once must not run their lines together."""
    try:
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), line.encode("utf-8", "replace"))
    except (AttributeError, OSError, ValueError):  # a captured stderr (no file descriptor)
        sys.stderr.write(line)
        sys.stderr.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    """Say `message` as `say_error` does and exit with `code` (every process: the launcher sees the same status)."""
    say_error(message)
    raise typer.Exit(code)
