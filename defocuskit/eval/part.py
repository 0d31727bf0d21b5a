"""One process's part of an evaluation: every sample scored by every runner (`eval.merge` joins the parts): per-image
rows and skips, bit depths and counts, and with a figure, each f-number group's first complete pair."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from defocuskit.data.register import RegistrationError
from defocuskit.eval import metrics
from defocuskit.eval.eta import CostEta
from defocuskit.eval.report import group_of
from defocuskit.eval.runners import Runner
from defocuskit.eval.saved import SavedImages
from defocuskit.eval.scoring import Scoring, prepare_pair, score_pair
from defocuskit.inference.coc_source import CocError
from defocuskit.io.images import from_float, to_float


def _figure_label(group: float | None, key: str, by_aperture: bool) -> str:
    if group is not None:
        return f"f/{group:g} · {key}"
    return f"{'no f-number' if by_aperture else 'all'} · {key}"


def score_samples(samples: Iterable[dict[str, Any]], runners: dict[str, Runner], scoring: Scoring, stops: bool,
                  by_aperture: bool, limit: int | None, save_images: SavedImages | None, bar: Any,
                  total: int | None, figure: bool = False) -> dict[str, Any]:
    """This process's part: per-image rows and skips, each with the sample's index, bit depths and counts;
    with `figure`, per f-number group (index, figure row) of the first pair every method produced an output for."""
    part: dict[str, Any] = {"images": [], "skipped": [], "unregistered": [], "depths": {}, "pairs": 0, "sharp_only": 0,
                            "blur_map": 0, "no_f": 0, "figure": {}, "saved": save_images.written if save_images else {}}
    eta = CostEta(runners, total)  # the bar's time left, from each method's measured cost
    task = bar.add_task("scoring", total=None if total is None else total * len(runners), eta=eta) if bar else None
    for position, sample in enumerate(samples):
        if limit is not None and part["pairs"] >= limit:
            break
        index = sample.get("index", position)
        key, meta = sample["key"], dict(sample.get("meta") or {})
        if sample.get("blur") is None:
            part["sharp_only"] += 1
            continue
        if sample.get("sharp") is None:
            part["blur_map"] += 1
            continue
        sharp, blur = sample["sharp"], sample["blur"]
        eta.sample(blur.shape[0] * blur.shape[1])
        if sharp.shape != blur.shape:
            part["skipped"].append((index, {"key": key, "method": None, "reason": f"blur is {blur.shape[1]}x"
                                   f"{blur.shape[0]}, sharp is {sharp.shape[1]}x{sharp.shape[0]} (width x height)"}))
            eta.skip()
            if bar is not None:
                bar.advance(task, len(runners))
            continue
        part["pairs"] += 1
        depth = 16 if sharp.dtype == np.uint16 else 8
        part["depths"].setdefault(str(meta.get("source") or "unknown"), set()).add(depth)
        f_number = meta.get("f_number")
        group = group_of(f_number, stops) if by_aperture else None
        part["no_f"] += f_number is None
        ref = metrics.to_unit(sharp)
        blur_f = to_float(blur)
        how = (scoring.align, scoring.quantize, scoring.detail_band)

        def note(why: str) -> None:  # a sample scored as produced: no registration found
            part["unregistered"].append((index, f"{key}: {why}"))
        try:
            warp = scoring.sample_warp(blur_f, ref, depth, note)  # ecc: one warp per sample, from its input
            inp_scored = prepare_pair(blur_f, ref, depth, *how, warp=warp)
            inp_scores = score_pair(*inp_scored, scoring)
        except (ValueError, RegistrationError) as exc:
            part["skipped"].append((index, {"key": key, "method": None, "reason": f"blurred input: {exc}"}))
            eta.skip()
            if bar is not None:
                bar.advance(task, len(runners))
            continue
        shown: dict[str, np.ndarray] | None = {} if figure and group not in part["figure"] else None
        for name, run in runners.items():
            if bar is not None:
                bar.update(task, description=f"{name}: {key}")
            eta.start(name)
            try:
                out = run(blur_f, sample)
                # The input baseline returns the input itself: its scores are the input's, computed once.
                if out is blur_f:
                    scores = inp_scores
                else:
                    scored = prepare_pair(out, ref, depth, *how, warp=warp)  # the input's warp (ecc)
                    scores = score_pair(*scored, scoring)
                    if shown is not None:
                        shown[name] = scored[0]  # the output as scored (rounded; with ecc, registered)
            except CocError:
                raise  # a CoC source that cannot serve (e.g. --coc oracle without coc.png) stops the run
            except (ValueError, RegistrationError) as exc:  # a reported skip for this method and sample
                part["skipped"].append((index, {"key": key, "method": name, "reason": str(exc)}))
                shown = None  # a figure row needs every method's output: the next pair of this group gets it
                continue
            finally:
                eta.stop()
                if bar is not None:
                    bar.advance(task)
            part["images"].append((index, {
                "key": key, "method": name, "source": meta.get("source"), "f_number": group,
                "f_number_recorded": f_number, "ref_f_number_recorded": meta.get("ref_f_number"), **scores,
                **{f"{m}_input": v for m, v in inp_scores.items()},
            }))
            if save_images is not None:
                save_images.save(name, key, from_float(np.clip(out, 0.0, 1.0), depth))
        if shown is not None:
            from defocuskit.eval.figure import figure_row

            # the input as scored where the outputs shown are changed for scoring (registered, or their detail band)
            registered = scoring.align is True or scoring.align == "ecc" or scoring.detail_band is not None
            part["figure"][group] = (index, figure_row(_figure_label(group, key, by_aperture),
                                                       inp_scored[0] if registered else blur, sharp, shown))
    return part
