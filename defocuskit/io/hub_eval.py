"""The eval rows of a Hub model card: this model's rows of a `defocuskit eval` report.json, with the split, the
protocol and its settings (config.json's `eval`, the card's model-index). Plain JSON; nothing written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from defocuskit.io.hub import file_sha256


def eval_from_report(report: str | Path, model_file: Path, method: str, label: str | None = None,
                     model_sha256: str | None = None) -> dict[str, Any]:
    """This model's rows of a `defocuskit eval` report.json, with the split, protocol and its settings.

    The model is found among the report's checkpoints by `label` (its name in the report) or, without one,
    by the checkpoint path (the same file as `model_file`). A report that records the SHA-256 of the file it scored
    (eval since it does) must have scored this one (`model_sha256`, else `model_file`'s): ValueError where that file
    was another (a model retrained at the same path, a label naming another model of the method).
    """
    report = Path(report).expanduser()
    if report.is_dir():
        report = report / "report.json"
    try:
        data = json.loads(report.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"report not found: {report} (the report.json of `defocuskit eval --report DIR`)") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{report}: not valid JSON ({exc})") from None
    try:
        protocol, rows = data["protocol"], data["rows"]
        entries = {k: v for k, v in protocol["methods"].items() if v.get("kind") == "checkpoint"}
        if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                and isinstance(data.get("images") or [], list)):
            raise TypeError("rows or images")
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{report}: not a defocuskit eval report (needs protocol.methods and rows)") from None
    listing = ", ".join(f"{k} ({v.get('path')})" for k, v in entries.items()) or "none"
    if label is None:
        matches = [k for k, v in entries.items() if _same_file(v.get("path"), model_file)]
        if not matches:
            raise ValueError(f"{report}: none of its checkpoints is {model_file} (checkpoints: {listing}); "
                             "name the one that is this model with report_label=")
        label = matches[0]
    elif label not in entries:
        raise ValueError(f"{report}: no checkpoint labelled '{label}' (checkpoints: {listing})")
    entry = entries[label]
    if entry.get("method") != method:
        raise ValueError(f"{report}: checkpoint '{label}' is a '{entry.get('method')}' model, "
                         f"this one a '{method}' model")
    scored = entry.get("sha256")
    if isinstance(scored, str) and scored != (this := model_sha256 or file_sha256(model_file)):
        raise ValueError(f"{report}: checkpoint '{label}' is not this model: the report scored a file of SHA-256 "
                         f"{scored[:12]}..., this one is {this[:12]}... (trained again, or another file); its scores "
                         "are another model's: evaluate this one")
    mine = [r for r in rows if r.get("method") == label and r.get("source") is None]  # pooled rows, not --by-source
    if not mine:
        raise ValueError(f"{report}: no rows for checkpoint '{label}'")
    keep = ("f_number", "n", "psnr", "psnr_input", "psnr_gain", "ssim", "ssim_input", "ssim_gain", "mae", "lpips")
    for row in mine:  # the card prints them as numbers: a string or NaN failed there, after the folder was made
        bad = next((k for k in keep if row.get(k) is not None and not (isinstance(row[k], (int, float))
                                                                    and not isinstance(row[k], bool)
                                                                    and math.isfinite(row[k]))), None)
        if bad is not None:
            raise ValueError(f"{report}: a row of checkpoint '{label}' has {bad}={row[bad]!r}, not a finite number")
    sources = sorted({str(im["source"]) for im in data.get("images") or []
                      if isinstance(im, dict) and im.get("method") == label and im.get("source")})
    skipped = [s for s in data.get("skipped") or [] if isinstance(s, dict) and s.get("method") in (None, label)]
    return {
        "report": report.name, "label": label, "split": protocol.get("split"), "shards": protocol.get("shards"),
        "limit": protocol.get("limit"), "skipped": len(skipped),  # the split scored in part: its first N, pairs skipped
        "psnr": protocol.get("psnr"), "ssim": protocol.get("ssim"), "grouping": protocol.get("grouping"),
        "ssim_variant": protocol.get("ssim_variant"),  # eval --ssim: the SSIM's window (uniform7, the default)
        "scoring": scoring_terms(protocol),  # how the scores differ from the default protocol's
        "sources": sources,  # the shards' source names of the scored images (dpdd, raw, ...)
        "settings": {k: entry.get(k) for k in ("sampler", "nfe", "timesteps", "coc", "tile", "overlap", "seed",
                                                "inference", "focus_gate", "ensemble", "work_side")},
        "gate_recorded": "focus_gate" in entry,  # a report before eval recorded the gate says nothing of it
        "rows": [{k: r.get(k) for k in keep} for r in mine],
    }


def scoring_terms(protocol: dict[str, Any]) -> list[str]:
    """What a report's scores are, where they are not the default protocol's plain PSNR/SSIM of the images as
    produced: its protocol (dpdd8), alignment to the reference, the detail band; [] for the default."""
    terms = []
    if protocol.get("protocol") not in (None, "default"):
        terms.append(f"protocol {protocol['protocol']}")
    align, text = protocol.get("align"), str(protocol.get("alignment") or "none")
    if align or not text.startswith("none"):  # reports before "align" was recorded say it only in "alignment"
        terms.append(f"aligned to the reference ({align})" if align else "aligned to the reference")
    band = protocol.get("detail_band_px")
    if isinstance(band, (int, float)) and not isinstance(band, bool):
        terms.append(f"detail band {band:g} px")
    return terms


def _same_file(path: str | None, model_file: Path) -> bool:
    if not path:
        return False
    try:
        return Path(path).resolve() == model_file.resolve() or os.path.samefile(path, model_file)
    except OSError:
        return False
