"""The side-by-side figure of `eval --figure`: per f-number, one sample's crops of the blurred input, each
method's output and the sharp reference, in native pixels, each labelled with its PSNR on the crop.

Use from the sample loop: for the first sample of each f-number group,
`rows.append(figure_row(f"f/{group:g} · {key}", blur, sharp, {name: output, ...}))`; at the end
`write_figure(report_dir / "figure.png", rows, title)`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from defocuskit.eval import metrics
from defocuskit.imaging.drawing import BACKGROUND, FONT_PX, GAP, pick_crop, repeat_pixels, text_strip, to_display
from defocuskit.io.images import write_image

__all__ = ["CELL", "CROP", "FigureRow", "Panel", "crop_panel", "figure_row", "pick_crop", "write_figure"]

CROP = 96  # side of the crop taken from each image, native pixels
CELL = 256  # crops smaller than this are enlarged by whole-pixel repetition towards it
LEGEND = "under each crop: PSNR of the crop against the reference crop; (±x): gain over the input's crop"


@dataclasses.dataclass
class Panel:
    """One crop: RGB uint8 native pixels, its label (method name, "input", "reference") and its PSNR in dB
    against the reference crop (None for the reference itself)."""

    label: str
    image: np.ndarray
    psnr: float | None = None


@dataclasses.dataclass
class FigureRow:
    """One row of the figure: its heading (f-number, sample key, crop) and its panels, left to right."""

    label: str
    panels: list[Panel]


def crop_panel(image: np.ndarray, origin: tuple[int, int], size: int, label: str,
               reference: np.ndarray | None = None) -> Panel:
    """The `size` x `size` crop of `image` at `origin` (y, x) as a Panel; with `reference` (the full sharp
    image), the crop's PSNR against the same crop of it (data range 1; float images clipped to [0, 1])."""
    y, x = origin
    h, w = image.shape[:2]
    if not (0 <= y < h and 0 <= x < w) or size < 1:
        raise ValueError(f"crop '{label}': {size} px at (y {y}, x {x}) is outside a {w}x{h} image")
    crop = image[y:y + size, x:x + size]
    psnr = None
    if reference is not None:
        if reference.shape[:2] != image.shape[:2]:
            raise ValueError(f"crop '{label}': image is {w}x{h}, reference {reference.shape[1]}x{reference.shape[0]}")
        ref = metrics.to_unit(reference[y:y + size, x:x + size])
        psnr = metrics.psnr(np.clip(metrics.to_unit(crop), 0.0, 1.0), ref, max_db=100.0)
    return Panel(label, to_display(crop).copy(), psnr)  # a copy: never a view that keeps the whole image


def figure_row(label: str, blur: np.ndarray, sharp: np.ndarray, outputs: dict[str, np.ndarray],
               size: int = CROP) -> FigureRow:
    """A row for one sample: crops of the input, each output (in the given order) and the reference, all at
    the window `pick_crop(blur, sharp, size)` chooses; the heading gets the crop's place appended."""
    if blur.shape[:2] != sharp.shape[:2]:
        raise ValueError(f"{label}: blur is {blur.shape[1]}x{blur.shape[0]}, sharp {sharp.shape[1]}x{sharp.shape[0]}")
    s = min(int(size), *blur.shape[:2])
    y, x = pick_crop(blur, sharp, s)
    panels = [crop_panel(blur, (y, x), s, "input", sharp)]
    panels += [crop_panel(out, (y, x), s, name, sharp) for name, out in outputs.items()]
    panels.append(crop_panel(sharp, (y, x), s, "reference"))
    return FigureRow(f"{label} · crop {s}x{s} px at (x {x}, y {y})", panels)


def _cell_side(rows: list[FigureRow]) -> int:
    """The largest crop's side, times the whole factor that brings it closest to CELL without passing it."""
    largest = max(max(p.image.shape[:2]) for row in rows for p in row.panels)
    return largest * max(1, CELL // largest)


def _zoom(panel: Panel, side: int) -> int:
    return max(1, side // max(panel.image.shape[:2]))


def write_figure(path: str | Path, rows: list[FigureRow], title: str) -> Path:
    """Write `figure_image(rows, title)` as an RGB PNG and return its path."""
    image = figure_image(rows, title, str(path))
    path = Path(path)
    write_image(path, image)
    return path


def figure_image(rows: list[FigureRow], title: str, name: str = "figure") -> np.ndarray:
    """The grid (one row per FigureRow, one cell per panel) as an RGB uint8 image; ValueError (naming `name`)
    when no row has a crop.

    Cells share one side: the largest crop, or that crop enlarged by whole-pixel repetition to at most CELL;
    a row's crops are enlarged by one whole factor (stated in its heading). Under each crop: its label, its
    PSNR on the crop and, for each method, the gain over the input's crop.
    """
    if not rows or not any(row.panels for row in rows):
        raise ValueError(f"{name}: no crops to draw")
    rows = [row for row in rows if row.panels]
    side = _cell_side(rows)
    n_cols = max(len(row.panels) for row in rows)
    width = n_cols * side + (n_cols + 1) * GAP
    blocks = [text_strip(title, width, size=FONT_PX + 2),
              text_strip(LEGEND, width, fg=(190, 190, 190))]
    for row in rows:
        zooms = {_zoom(p, side) for p in row.panels}
        shown = f", each pixel shown {zooms.pop()}x" if len(zooms) == 1 and 1 not in zooms else ", native pixels"
        blocks.append(np.full((GAP, width, 3), BACKGROUND, np.uint8))
        blocks.append(text_strip(row.label + shown, width, bg=BACKGROUND + 24))
        base = next((p.psnr for p in row.panels if p.label == "input"), None)
        cells, captions = [], []
        for p in row.panels:
            cell = np.full((side, side, 3), BACKGROUND, np.uint8)
            big = repeat_pixels(p.image, _zoom(p, side))
            cell[:big.shape[0], :big.shape[1]] = big
            cells.append(cell)
            text = p.label if p.psnr is None else f"{p.label}\n{p.psnr:.2f} dB"
            if p.psnr is not None and base is not None and p.label != "input":
                text += f" ({p.psnr - base:+.2f})"
            captions.append(text_strip(text, side, align="center"))
        cap_h = max(c.shape[0] for c in captions)
        for group, height in ((cells, side), (captions, cap_h)):
            line = np.full((height, width, 3), BACKGROUND, np.uint8)
            for i, part in enumerate(group):
                left = GAP + i * (side + GAP)
                line[:part.shape[0], left:left + part.shape[1]] = part
            blocks.append(line)
    blocks.append(np.full((GAP, width, 3), BACKGROUND, np.uint8))
    return np.concatenate(blocks, axis=0)
