"""Image file kinds by extension and the one error an unreadable image file raises (below images.py and raw.py)."""

from __future__ import annotations

from pathlib import Path

RAW_EXTENSIONS = {
    ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".raf",
    ".orf", ".rw2", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mos",
    ".mrw", ".rwl",
}
RASTER_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
IMAGE_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS


class ImageError(ValueError):
    """An image file that cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_raw(path: str | Path) -> bool:
    """True for camera RAW file extensions (decoded with rawpy)."""
    return Path(path).suffix.lower() in RAW_EXTENSIONS
