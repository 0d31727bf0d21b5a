"""Drawing primitives of the contact sheet (`defocuskit inspect`) and the evaluation figure: text strips, images
made displayable, pixel repetition, and the crop that shows the defocus best."""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

GAP = 6  # pixels between cells and rows
FONT_PX = 14  # label text size
BACKGROUND = 32  # grey level of the sheet's background


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    """DejaVu Sans (shipped with matplotlib) at `size` px; Pillow's built-in font where it cannot be read."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (OSError, ValueError, ImportError):
        return ImageFont.load_default()


def text_width(text: str, size: int = FONT_PX) -> int:
    """Width in pixels of `text` drawn at `size`."""
    left, _, right, _ = _font(size).getbbox(text)
    return int(right - left)


def _wrap(text: str, width: int, size: int) -> list[str]:
    """Lines of `text` no wider than `width`, broken at " · " separators, then at spaces; overlong words cut."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for part in paragraph.replace(" · ", " ·\x00").split("\x00"):
            candidate = current + (" " if current and not current.endswith(" ") else "") + part.strip()
            if not current or text_width(candidate, size) <= width:
                current = candidate
            else:
                lines.append(current)
                current = part.strip()
        lines.append(current)
    out = []
    for line in lines:
        while text_width(line, size) > width and len(line) > 1:
            line = line[:-2] + "…"
        out.append(line)
    return out


def text_strip(text: str, width: int, size: int = FONT_PX, fg: tuple[int, int, int] = (240, 240, 240),
               bg: int = BACKGROUND, align: str = "left") -> np.ndarray:
    """An RGB uint8 strip `width` wide holding `text`, wrapped to as many lines as it needs."""
    from PIL import Image, ImageDraw

    lines = _wrap(text, max(1, width - 8), size)
    line_h = int(size * 1.35)
    img = Image.new("RGB", (max(1, width), line_h * len(lines) + 6), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        x = 4 if align == "left" else max(4, (width - text_width(line, size)) // 2)
        draw.text((x, 3 + i * line_h), line, font=_font(size), fill=fg)
    return np.asarray(img, np.uint8).copy()


def to_display(image: np.ndarray) -> np.ndarray:
    """uint8 RGB for display: uint16 >> 8, float in [0, 1] scaled and rounded, one channel repeated to three."""
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.rint(np.clip(arr, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"cannot display an image of type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def repeat_pixels(image: np.ndarray, zoom: int) -> np.ndarray:
    """`image` enlarged `zoom` times by repeating each pixel (no resampling: every source pixel stays as is)."""
    return image if zoom == 1 else np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def _gray(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float32) / np.float32(scale)
    return arr.mean(axis=2) if arr.ndim == 3 else arr


def _detail(image: np.ndarray) -> np.ndarray:
    """Local fine-detail energy: the squared Laplacian, averaged over 5x5."""
    lap = cv2.Laplacian(_gray(image), cv2.CV_32F, ksize=3)
    return cv2.blur(lap * lap, (5, 5))


def pick_crop(blur: np.ndarray | None, sharp: np.ndarray | None, size: int) -> tuple[int, int]:
    """Top-left (y, x) of the `size` x `size` window that shows the defocus best: where the sharp image has the
    most fine detail that the blurred one lost (sum of max(detail(sharp) - detail(blur), 0)).

    With only one image given, the window with its most detail. Deterministic (the first best window);
    a window with no detail anywhere gives the centre. `size` is clamped to the image.
    """
    if blur is None and sharp is None:
        raise ValueError("pick_crop needs a blurred or a sharp image")
    if blur is not None and sharp is not None and blur.shape[:2] != sharp.shape[:2]:
        raise ValueError(f"pick_crop: blur is {blur.shape[1]}x{blur.shape[0]}, sharp is "
                         f"{sharp.shape[1]}x{sharp.shape[0]} (width x height)")
    if size < 1:
        raise ValueError(f"pick_crop: crop size must be positive, got {size}")
    h, w = (blur if blur is not None else sharp).shape[:2]  # type: ignore[union-attr]
    s = min(int(size), h, w)
    if blur is not None and sharp is not None:
        score = np.maximum(_detail(sharp) - _detail(blur), 0.0)
    else:
        score = _detail(blur if blur is not None else sharp)  # type: ignore[arg-type]
    ii = cv2.integral(score.astype(np.float64))
    sums = ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]
    if not np.isfinite(sums).all() or sums.max() <= 0:
        return (h - s) // 2, (w - s) // 2
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)
