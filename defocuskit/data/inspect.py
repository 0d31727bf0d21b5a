"""`defocuskit inspect`: a shard folder's manifest as a table, and a contact sheet of samples.

The sheet has one row per sample: a label (key, source, split, f-number, the registration's recorded gain
and alignment score), the whole images (blur / sharp / |coc| and its sign / blurmask, as present) fitted to one height,
and crops of blur and sharp in native pixels (enlarged only by pixel repetition, never resampled) of the
region that shows the defocus best (`pick_crop`). Blur-map samples show the photo and its mask (white =
blurred). The drawing primitives (`imaging.drawing`: `pick_crop`, `text_strip`, `to_display`, `repeat_pixels`) also
serve the evaluation figure (defocuskit.eval.figure)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from defocuskit.data.reader import decode_same_size, read_manifest, shard_urls
from defocuskit.data.tar_index import index_shard, read_samples
from defocuskit.imaging.drawing import (
    BACKGROUND,
    FONT_PX,
    GAP,
    pick_crop,
    repeat_pixels,
    text_strip,
    text_width,
    to_display,
)
from defocuskit.io.tagged_png import check_replaceable, write_tagged_png

TILE = 256  # height of a row of the contact sheet, pixels
MAX_ASPECT = 1.5  # a whole image is at most this many TILEs wide
SHEET_TAG = "defocuskit inspect"  # the sheet's PNG text chunk: a file `inspect` may replace
IMAGE_COLUMNS = ("blur", "sharp", "coc", "coc sign", "blurmask")
MAX_ROWS = 64  # --n: a sheet holds at most this many samples (each decoded whole first: 100000 took them all)


def crop_size(height: int, width: int, limit: int = TILE) -> int:
    """Side of the native-pixel crop shown for an image: half its shorter side, at most `limit`."""
    return max(1, min(limit, min(height, width) // 2))


# ----------------------------------------------------------------------------- the manifest


def manifest_table(manifest: Mapping[str, Any], title: str | None = None) -> Any:
    """A rich Table: samples by split, source and f-number, with totals and the reject count."""
    from rich.table import Table

    counts = {"samples": 0, "by_split": {}, "table": [], **manifest.get("counts", {})}  # read_manifest checked them
    rejects = manifest.get("rejects", "?")
    table = Table(title=title or f"{counts['samples']} samples in {len(manifest['shards'])} shards, {rejects} rejects")
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
    table.add_row("rejects", "", "", str(rejects))
    return table


# ----------------------------------------------------------------------------- the contact sheet


def _fit(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The whole image fitted into TILE x MAX_ASPECT*TILE: enlarged by whole-pixel repetition, or reduced
    with area averaging; returns (view, scale)."""
    h, w = image.shape[:2]
    scale = min(TILE / h, MAX_ASPECT * TILE / w)
    if scale >= 1:
        zoom = int(scale)
        return repeat_pixels(image, zoom), float(zoom)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _coc_view(coc: np.ndarray, top: float) -> np.ndarray:
    """The CoC map in viridis, 0 px dark to `top` px bright."""
    unit = np.clip(np.nan_to_num(coc) / top, 0, 1) if top > 0 else np.zeros_like(coc)
    rgb = cv2.cvtColor(cv2.applyColorMap(np.rint(unit * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    return rgb


def _annotate(cell: np.ndarray, text: str) -> np.ndarray:
    """`text` on a dark band across the top of `cell`."""
    band = text_strip(text, cell.shape[1], size=12, bg=0)
    out = cell.copy()
    h = min(band.shape[0], out.shape[0])
    out[:h] = (0.35 * out[:h] + 0.65 * band[:h]).astype(np.uint8)
    return out


def _outline(view: np.ndarray, y: int, x: int, size: int, scale: float) -> np.ndarray:
    out = view.copy()
    top, left = round(y * scale), round(x * scale)
    side = max(2, round(size * scale))
    cv2.rectangle(out, (left, top), (left + side - 1, top + side - 1), (255, 210, 0), 1)
    return out


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def sample_label(sample: Mapping[str, Any]) -> str:
    """One sample's row label: key · source · split · f-number vs reference · gain · alignment (and its residual
    warp, where `ingest --refine-warp` applied one; and for a training patch, the image it was cut from)."""
    meta = sample.get("meta") or {}
    f, ref = meta.get("f_number"), meta.get("ref_f_number")
    if sample.get("blur") is None:
        aperture = "sharp only" + ("" if ref is None else f" (f/{ref:g})")
    else:
        aperture = ("f/?" if f is None else f"f/{f:g}") + ("" if ref is None else f" vs f/{ref:g}")
    align = meta.get("align") or {}
    score, refined = align.get("score"), align.get("refined_px")  # refined: --refine-warp's residual, median px
    return (f"{sample['key']} · {meta.get('source') or '?'} · {meta.get('split') or '?'} · {aperture}"
            f" · gain {_fmt(meta.get('gain'), '.3f')}"
            f" · align {align.get('method') or '—'} score {_fmt(score, '.3f')}"
            + (f" · refined {refined[0]:.2f} px" if refined and refined[0] > 0 else "")
            + (f" · patch at (x {source['x']}, y {source['y']}) of {source['width']}x{source['height']}"
               if isinstance(source := meta.get("patch_of"), Mapping) else ""))


@dataclasses.dataclass
class SheetRow:
    """One sample's cells (column name -> RGB uint8) and its label."""

    key: str
    label: str
    cells: dict[str, np.ndarray]


def sample_row(sample: Mapping[str, Any], coc_scale: float | None = None) -> SheetRow:
    """The cells of one sample: whole images fitted to TILE, and native-pixel crops of blur and sharp.

    The CoC map is coloured from 0 to `coc_scale` px (default: its own maximum), so that one scale can
    serve a whole sheet."""
    blur, sharp, coc, mask = (sample.get(k) for k in ("blur", "sharp", "coc", "blurmask"))
    if blur is None and sharp is None:
        raise ValueError(f"sample {sample.get('key')}: neither a blurred nor a sharp image")
    first = blur if blur is not None else sharp
    h, w = first.shape[:2]
    c = crop_size(h, w)
    y, x = pick_crop(blur, sharp, c)
    zoom = max(1, TILE // c)
    cells: dict[str, np.ndarray] = {}
    label = sample_label(sample)
    for name, image in (("blur", blur), ("sharp", sharp)):
        if image is None:
            continue
        view, scale = _fit(to_display(image))
        cells[name] = _outline(view, y, x, c, scale)
    if coc is not None:
        coc = np.asarray(coc, np.float32)
        top = float(np.nanmax(coc)) if coc.size else 0.0
        view, _ = _fit(_coc_view(coc, coc_scale if coc_scale is not None else top))
        cells["coc"] = _annotate(view, f"CoC max {top:.1f} px" + (f" (colours 0–{coc_scale:.1f} px)"
                                                                  if coc_scale is not None else ""))
    sign = sample.get("coc_sign")
    if coc is not None and sign is not None:  # cocsign.png: the |CoC| panel alone shows front and back alike
        behind = np.asarray(sign) > 0
        view, _ = _fit(to_display(np.where(behind, 255, 0).astype(np.uint8)))
        cells["coc sign"] = _annotate(view, f"{100 * (1 - behind.mean()):.0f} % in front of the focus")
    if mask is not None:
        cells["blurmask"], _ = _fit(to_display(np.asarray(mask, np.uint8)))
    for name, image in (("blur", blur), ("sharp", sharp)):
        if image is not None:
            cells[f"{name} crop"] = repeat_pixels(to_display(image)[y:y + c, x:x + c], zoom)
    label += f" · crop {c}x{c} px at (x {x}, y {y})" + (f", each pixel shown {zoom}x{zoom}" if zoom > 1 else ", 1:1")
    return SheetRow(str(sample["key"]), label, cells)


def _columns(rows: list[SheetRow]) -> list[str]:
    present = {name for row in rows for name in row.cells}
    order = [*IMAGE_COLUMNS, "blur crop", "sharp crop"]
    return [name for name in order if name in present]


COLUMN_TITLES = {"blur": "blur (whole)", "sharp": "sharp (whole)", "coc": "|CoC| map (whole, viridis)",
                 "coc sign": "CoC sign (white = behind the focus)",
                 "blurmask": "blur map (white = blurred)", "blur crop": "blur crop (native pixels)",
                 "sharp crop": "sharp crop (native pixels)"}


def _place(cell: np.ndarray, width: int) -> np.ndarray:
    out = np.full((TILE, width, 3), BACKGROUND, np.uint8)
    out[:cell.shape[0], :cell.shape[1]] = cell[:TILE, :width]
    return out


def _absent(width: int) -> np.ndarray:
    cell = np.full((TILE, width, 3), BACKGROUND + 16, np.uint8)
    strip = text_strip("absent", width, bg=BACKGROUND + 16, fg=(150, 150, 150), align="center")
    top = (TILE - strip.shape[0]) // 2
    cell[top:top + strip.shape[0]] = strip
    return cell


@dataclasses.dataclass
class ContactSheet:
    """The sheet image (RGB uint8), its column names and the sample key of each row, top to bottom."""

    image: np.ndarray
    columns: list[str]
    keys: list[str]


def contact_sheet(samples: list[Mapping[str, Any]], title: str | None = None) -> ContactSheet:
    """One labelled row per sample under a header naming the columns."""
    if not samples:
        raise ValueError("no samples to show")
    cocs = [float(np.nanmax(s["coc"])) for s in samples if s.get("coc") is not None and np.size(s["coc"])]
    coc_scale = max(cocs) if cocs else None
    rows = [sample_row(s, coc_scale) for s in samples]
    columns = _columns(rows)
    widths = [max(row.cells[c].shape[1] for row in rows if c in row.cells) for c in columns]
    widths = [max(w, text_width(COLUMN_TITLES[c]) + 8) for w, c in zip(widths, columns)]
    total = sum(widths) + GAP * (len(columns) + 1)
    vgap = np.full((TILE, GAP, 3), BACKGROUND, np.uint8)

    def line(parts: list[np.ndarray]) -> np.ndarray:
        height = max(p.shape[0] for p in parts)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=BACKGROUND) for p in parts]
        gap = np.full((height, GAP, 3), BACKGROUND, np.uint8)
        return np.concatenate([gap] + [q for p in padded for q in (p, gap)], axis=1)

    blocks = []
    if title:
        blocks.append(text_strip(title, total, size=FONT_PX + 2))
    blocks.append(line([text_strip(COLUMN_TITLES[c], w, fg=(255, 220, 120)) for c, w in zip(columns, widths)]))
    for row in rows:
        blocks.append(np.full((GAP, total, 3), BACKGROUND, np.uint8))
        blocks.append(text_strip(row.label, total, bg=BACKGROUND + 24))
        cells = [_place(row.cells[c], w) if c in row.cells else _absent(w) for c, w in zip(columns, widths)]
        blocks.append(np.concatenate([vgap] + [q for cell in cells for q in (cell, vgap)], axis=1))
    blocks.append(np.full((GAP, total, 3), BACKGROUND, np.uint8))
    return ContactSheet(np.concatenate(blocks, axis=0), columns, [row.key for row in rows])


def _group(raw: Mapping[str, Any]) -> tuple[Any, ...]:
    try:
        meta = dict(json.loads(raw["json"]))  # no json object (or none at all): decode_sample names what is wrong
    except (KeyError, TypeError, ValueError):
        meta = {}
    return meta.get("source"), meta.get("split"), meta.get("f_number"), "blurmask.png" in raw


def pick_samples(folder: str | Path, n: int, scan: int = 16) -> list[dict[str, Any]]:
    """Exactly `n` decoded samples (fewer only when the shards hold fewer), preferring distinct
    (source, split, f-number), from the first `n * scan` samples of the shards in manifest order."""
    if not 1 <= n <= MAX_ROWS:
        raise ValueError(f"--n {n}: samples on the contact sheet, 1 to {MAX_ROWS}")
    chosen: list[dict[str, Any]] = []
    spare: list[dict[str, Any]] = []
    seen = set()
    budget = n * max(1, scan)
    for url in shard_urls(folder):
        entries = index_shard(url)  # the tar's headers: a sample written twice, a count the manifest does not list
        for raw in read_samples(url, entries[:budget]):
            budget -= 1
            group = _group(raw)
            if group not in seen:
                chosen.append(raw)
            elif len(spare) < n:
                spare.append(raw)
            seen.add(group)
            if len(chosen) >= n or budget <= 0:
                break
        if len(chosen) >= n or budget <= 0:
            break
    return [decode_same_size(raw) for raw in (chosen + spare)[:n]]


def check_sheet(folder: str | Path, sheet: str | Path | None = None) -> Path:
    """The contact sheet's path (default `folder/contact_sheet.png`), refused (ValueError naming it) where a file
    stands there that no earlier inspect wrote, or the name is not a PNG's: judged before the shards are read."""
    sheet = Path(sheet) if sheet else Path(folder) / "contact_sheet.png"
    check_replaceable(sheet, SHEET_TAG, "--sheet")
    return sheet


def inspect_shards(folder: str | Path, sheet: str | Path | None = None, n: int = 6) -> Path:
    """Write a contact sheet of `n` samples of the shard folder (default `folder/contact_sheet.png`)."""
    folder = Path(folder)
    manifest = read_manifest(folder)  # a clear error when this is not a shard folder
    sheet = check_sheet(folder, sheet)
    samples = pick_samples(folder, n)
    if not samples:
        raise FileNotFoundError(f"{folder}: the shards hold no samples")
    total = manifest.get("counts", {}).get("samples", "?")  # the sheet alone must not read as the whole folder
    title = (f"{folder.name}: {len(samples)} of its {total} samples (distinct source / split / f-number first, in "
             "shard order); above each row: key · source · split · f-number · the registration's recorded gain and "
             "alignment score · the crop; the yellow box marks the crop")
    write_tagged_png(sheet, contact_sheet(samples, title).image, SHEET_TAG, "--sheet")  # looked at again
    return sheet

