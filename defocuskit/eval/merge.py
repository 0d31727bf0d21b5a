"""The result of an evaluation from the parts its processes scored (one part when one process scored them all)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from defocuskit.eval.report import aggregate, group_of


def merge_parts(parts: list[dict[str, Any]], methods: list[str], by_aperture: bool) -> dict[str, Any]:
    """{"rows", "images", "skipped", "notes", "bit_depth", "pairs", "figure"} of every process's part
    (`evaluate._score_samples`), rows in sample-index order: what one process scoring every sample returns."""
    images = [row for _, row in sorted((r for p in parts for r in p["images"]), key=lambda r: r[0])]
    skipped = [s for _, s in sorted((s for p in parts for s in p["skipped"]), key=lambda s: s[0])]
    depths: dict[str, set[int]] = {}
    for p in parts:
        for source, found in p["depths"].items():
            depths.setdefault(source, set()).update(found)
    firsts: dict[float | None, tuple[int, Any]] = {}
    for p in parts:  # per group, the row of the pair a single process would have met first
        for group, (index, row) in p["figure"].items():
            if group not in firsts or index < firsts[group][0]:
                firsts[group] = (index, row)
    n_pairs, n_sharp_only, n_blur_map, n_no_f = (sum(p[k] for p in parts)
                                                 for k in ("pairs", "sharp_only", "blur_map", "no_f"))
    notes: list[str] = []
    if n_sharp_only:
        notes.append(f"{n_sharp_only} sharp-only sample(s) (no blur.png) were not scored")
    if n_blur_map:
        notes.append(f"{n_blur_map} blur-map sample(s) (no sharp.png reference) were not scored")
    if by_aperture and n_pairs and n_no_f == n_pairs:
        notes.append("no sample has an f_number: --by-aperture falls back to one 'all' row per method")
    elif by_aperture and n_no_f:
        notes.append(f"{n_no_f} sample(s) without an f_number are counted only in the 'all' rows")
    if by_aperture:
        notes += mixed_references(images)
    for s in skipped:
        notes.append(f"skipped {s['key']}" + (f" ({s['method']})" if s["method"] else "") + f": {s['reason']}")
    unregistered = sorted((u for p in parts for u in p["unregistered"]), key=lambda u: u[0])
    notes += [f"scored as produced, no registration found: {text}" for _, text in unregistered]
    return {
        "rows": aggregate(images, methods, by_aperture),
        "images": images,
        "skipped": skipped,
        "notes": notes,
        "bit_depth": {k: sorted(v) for k, v in sorted(depths.items())},
        "pairs": n_pairs,
        "figure": [firsts[g][1] for g in sorted(firsts, key=lambda g: (g is None, g or 0.0))],
    }


def mixed_references(images: list[dict[str, Any]]) -> list[str]:
    """A note per f-number row whose pairs were shot against different reference f-numbers (`ref_f_number`): the
    row's gain then pools easier and harder pairs (an f/2.8 shot is closer to an f/8 reference than to f/16)."""
    refs: dict[float, dict[str, str]] = {}
    for image in images:  # one entry per pair: every method's row of a pair names the same reference
        if image["f_number"] is not None:
            ref = group_of(image.get("ref_f_number_recorded"), False)
            refs.setdefault(image["f_number"], {})[image["key"]] = "none recorded" if ref is None else f"f/{ref:g}"
    notes = []
    for group, by_key in sorted(refs.items()):
        counts = Counter(by_key.values())
        if len(counts) > 1:
            listed = ", ".join(f"{name}: {n}" for name, n in sorted(counts.items(), key=_reference_order))
            notes.append(f"f/{group:g} pools pairs against different references ({listed}): its gain mixes easier "
                         "and harder pairs; each image's ref_f_number_recorded is in report.json")
    return notes


def _reference_order(item: tuple[str, int]) -> tuple[bool, float]:
    name = item[0]
    return (name == "none recorded", float(name[2:]) if name.startswith("f/") else 0.0)
