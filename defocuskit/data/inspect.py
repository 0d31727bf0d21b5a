"""`defocuskit inspect`: a shard folder's manifest as a table, and a contact sheet of a few pairs.

Blur-map samples (blur.png + blurmask.png, no sharp.png) show the photo beside its mask (white = blurred)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defocuskit.data.shards import iter_raw, decode_sample, read_manifest, shard_urls
from defocuskit.images import write_image

TILE = 192  # height of one image in the contact sheet, pixels
LABEL = 22  # height of the label strip above each pair


def manifest_table(manifest: Mapping[str, Any], title: str | None = None) -> Any:
    """A rich Table: samples by split, source and f-number, with totals and the reject count."""
    from rich.table import Table

    counts = manifest["counts"]
    table = Table(title=title or f"{counts['samples']} samples in {len(manifest['shards'])} shards, "
                                 f"{manifest['rejects']} rejects")
    for col in ("split", "source", "f-number"):
        table.add_column(col)
    table.add_column("samples", justify="right")
    for row in counts["table"]:
        f = row["f_number"]
        table.add_row(row["split"], row["source"], "—" if f == "none" else f"f/{f}", str(row["samples"]))
    table.add_section()
    for split, n in counts["by_split"].items():
        table.add_row(split, "all", "all", str(n))
    table.add_row("total", "", "", str(counts["samples"]))
    table.add_row("rejects", "", "", str(manifest["rejects"]))
    return table


def _to_u8(image: np.ndarray) -> np.ndarray:
    return (image >> 8).astype(np.uint8) if image.dtype == np.uint16 else image


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    return cv2.resize(_to_u8(image), (width, height), interpolation=cv2.INTER_AREA)


def _label(text: str, width: int) -> np.ndarray:
    strip = np.full((LABEL, width, 3), 24, np.uint8)
    cv2.putText(strip, text, (4, LABEL - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def _pair_tile(sample: Mapping[str, Any]) -> np.ndarray:
    """blur | sharp (or blur | blur map) side by side, with a label naming source, f-number and key."""
    if sample.get("sharp") is None:
        mask = sample.get("blurmask")
        if mask is None:
            raise ValueError(f"sample {sample['key']}: neither a sharp image nor a blur map")
        right = _fit(np.repeat(np.asarray(mask, np.uint8)[..., None], 3, axis=2), TILE)
        body = np.concatenate([_fit(sample["blur"], TILE), np.full((TILE, 4, 3), 255, np.uint8), right], axis=1)
        text = f"{sample['meta'].get('source')}  blur map (white = blurred)  {sample['key']}"
        return np.concatenate([_label(text, body.shape[1]), body], axis=0)
    sharp = _fit(sample["sharp"], TILE)
    if sample["blur"] is None:
        blur = np.full_like(sharp, 64)
        cv2.putText(blur, "sharp only", (6, TILE // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (220, 220, 220), 1, cv2.LINE_AA)
    else:
        blur = _fit(sample["blur"], TILE)
    body = np.concatenate([blur, np.full((TILE, 4, 3), 255, np.uint8), sharp], axis=1)
    meta = sample["meta"]
    f = meta.get("f_number")
    ref = meta.get("ref_f_number")
    text = f"{meta.get('source')}  {'f/%g' % f if f else 'f/?'}"
    text += f" vs f/{ref:g}" if ref else ""
    text += f"  {sample['key']}"
    return np.concatenate([_label(text, body.shape[1]), body], axis=0)


def pick_samples(folder: str | Path, n: int, scan: int = 16) -> list[dict[str, Any]]:
    """Up to `n` decoded samples, preferring distinct (source, f-number), from the first samples of each shard."""
    chosen: list[dict[str, Any]] = []
    spare: list[dict[str, Any]] = []
    seen = set()
    for url in shard_urls(folder):
        for i, raw in enumerate(iter_raw(url)):
            if i >= max(1, scan // 4):
                break
            sample = decode_sample(raw)
            group = (sample["meta"].get("source"), sample["meta"].get("f_number"))
            (spare if group in seen else chosen).append(sample)
            seen.add(group)
            if len(chosen) >= n:
                return chosen
        if len(chosen) + len(spare) >= n * scan:
            break
    return (chosen + spare)[:n]


def contact_sheet(samples: list[Mapping[str, Any]], columns: int = 2) -> np.ndarray:
    """A grid of labelled blur | sharp pairs (RGB uint8)."""
    if not samples:
        raise ValueError("no samples to show")
    tiles = [_pair_tile(s) for s in samples]
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    gap = 8
    vgap = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    rows = []
    for r in range(0, len(tiles), columns):
        parts = [p for t in tiles[r:r + columns] for p in (t, vgap)][:-1]
        rows.append(np.concatenate(parts, axis=1))
    hgap = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([p for row in rows for p in (row, hgap)][:-1], axis=0)


def inspect_shards(folder: str | Path, sheet: str | Path | None = None, n: int = 6) -> Path:
    """Write a contact sheet of `n` samples of the shard folder (default `folder/contact_sheet.png`)."""
    folder = Path(folder)
    read_manifest(folder)  # a clear error when this is not a shard folder
    sheet = Path(sheet) if sheet else folder / "contact_sheet.png"
    samples = pick_samples(folder, n)
    if not samples:
        raise FileNotFoundError(f"{folder}: the shards hold no samples")
    write_image(sheet, contact_sheet(samples, columns=min(2, len(samples))))
    return sheet
