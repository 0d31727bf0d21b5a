"""`eval --coc-bound K` and the samples' f-numbers: K bounds an estimated map at its sample's f-number, so where no
paired sample of the split has one K would not be used (refused before any work), and where some lack one their
maps are used as read (a note naming them)."""

from __future__ import annotations

from typing import Any

from defocuskit.eval.config import EvalError
from defocuskit.eval.processes import pairs_without_f_number
from defocuskit.inference.coc_source import CocSource, unbounded_note, unused_bound


def check_bound_used(given: float | None, source: CocSource | None, urls: list[str], limit: int | None) -> None:
    """EvalError where --coc-bound K > 0 is given (`given`; a map model's own K is not checked) and none of the pairs
    scored (the first `limit` of local shards `urls`) has an f-number in its metadata; remote shards: the note."""
    if not given or source is None or source.bound is None:
        return
    found = pairs_without_f_number(urls, limit)
    if found is not None and found[1] and len(found[0]) == found[1]:
        raise EvalError(str(unused_bound(given, "sample", "no f_number in the shards' metadata",
                                         "leave --coc-bound out")))


def bound_notes(given: float | None, source: CocSource | None, images: list[dict[str, Any]]) -> list[str]:
    """The report's note naming the samples scored (`images`: report.json's rows) whose map --coc-bound K did not
    bound, for want of an f-number; [] where K was not given or every sample had one."""
    if source is None or source.bound is None:
        return []
    keys = dict.fromkeys(row["key"] for row in images)
    missing = list(dict.fromkeys(row["key"] for row in images if row.get("f_number_recorded") is None))
    note = unbounded_note(given, missing, len(keys), "sample")
    return [note] if note else []
