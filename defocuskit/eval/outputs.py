"""The files an evaluation writes, claimed before any process scores: the main process checks that nothing of the
user's is in the way (the report folder, the --save-images folder) and holds both folders' locks, and every other
process waits for its verdict, so no process writes an image before the check has run (issue 21)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from defocuskit.eval.config import EvalError
from defocuskit.eval.processes import ProcessGroup
from defocuskit.eval.report import check_report_folder
from defocuskit.eval.saved import SAVED_LOCK, SavedImages
from defocuskit.io import locks

RUN_LOCK = ".eval.lock"  # in the report folder, held by the main process while it scores and writes


def _check_and_hold(report_dir: Path, saver: SavedImages | None, runners: dict[str, Any], keys: list[str] | None,
                    limit: int | None) -> contextlib.ExitStack:
    # the folders this run makes: where it fails it leaves no lock in them, nor them where they are empty
    made_report, made_saved = locks.folders_to_make(report_dir), [] if saver is None else locks.folders_to_make(saver.folder)
    with contextlib.ExitStack() as held:  # a lock taken is released again where the next one is refused
        held.push(locks.unmake_on_error(made_report))  # after the locks are released
        held.push(locks.unmake_on_error(made_saved))
        if saver is not None:  # every file an output would replace is checked before any work
            saver.check(runners, [] if keys is None else keys[:limit])
        check_report_folder(report_dir)
        try:
            held.enter_context(locks.hold(report_dir / RUN_LOCK, "eval",
                                          f"report folder {report_dir}: another evaluation is writing it",
                                          remove_on_error=bool(made_report)))
            if saver is not None:  # and the images folder: its journal and list are one evaluation's at a time
                held.enter_context(locks.hold(saver.folder / SAVED_LOCK, "eval",
                                              f"--save-images {saver.folder}: another evaluation is saving into it",
                                              remove_on_error=bool(made_saved)))
        except locks.LockedError as exc:
            raise EvalError(f"{exc}; wait for it to finish or give another --report / --save-images") from None
        return held.pop_all()


def claim_outputs(group: ProcessGroup, report_dir: Path, saver: SavedImages | None, runners: dict[str, Any],
                  keys: list[str] | None, limit: int | None) -> contextlib.ExitStack:
    """On the main process: the checks, then the locks it holds while the evaluation scores and writes (an
    ExitStack to enter). Every other process waits here for the main one's verdict and stops with its error
    where it failed (an empty ExitStack otherwise)."""
    held = contextlib.ExitStack()
    if group.is_main:
        try:
            held = _check_and_hold(Path(report_dir), saver, runners, keys, limit)
        except Exception as exc:
            if group.world > 1:
                group.gather(str(exc))  # the others stop as well, instead of scoring into a folder refused
            raise
    if group.world > 1:
        verdict = group.gather(None)[0]  # the main process's: None once it has checked and holds the folders
        if verdict is not None:
            raise EvalError(f"the main process stopped before scoring: {verdict}")
    return held


def retire_report(report_dir: Path) -> None:
    """Remove the report files an earlier evaluation wrote into `report_dir` (every one checked to be its own and
    unchanged, as `check_report_folder` does; a file of the user's stops it with EvalError), holding the folder's
    lock: for a command that is about to replace the models that report scored (`demo`), so that a run of it killed
    before its evaluation leaves no report of models no longer there."""
    from defocuskit.eval.report import REPORT_FILES
    from defocuskit.io.staging import staged_files

    report_dir = Path(report_dir)
    if not report_dir.is_dir():
        return
    try:
        with locks.hold(report_dir / RUN_LOCK, "eval", f"report folder {report_dir}: an evaluation is writing it"):
            check_report_folder(report_dir)
            with staged_files(report_dir, REPORT_FILES):
                pass  # nothing staged: the earlier files are removed together
    except locks.LockedError as exc:
        raise EvalError(f"{exc}; wait for it to finish") from None
