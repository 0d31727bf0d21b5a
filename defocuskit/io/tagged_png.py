"""PNG files that say which defocuskit command wrote them (a text chunk), so a later run replaces its own file and
never a user's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

KEY = "Software"  # the PNG text chunk's keyword


def tagged_png(image: np.ndarray, tag: str) -> bytes:
    """PNG bytes of an RGB (or grey) uint8 image carrying the text chunk KEY = `tag`."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, tag)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_tagged_png(path: Path, image: np.ndarray, tag: str, option: str | None = None) -> None:
    """`tagged_png` of `image` written to `path` atomically (its folder made where missing). With `option` (the
    command's option naming `path`), looked at again as it is written: only over a file `tag`'s command wrote
    (`check_replaceable`'s ValueError otherwise), and never over one put there since (its own look at the start)."""
    from defocuskit.io.atomic import atomic_write

    data = tagged_png(image, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    if option is None:
        atomic_write(path, data)
        return
    check_replaceable(path, tag, option)
    try:
        atomic_write(path, data, exclusive=not (path.exists() or path.is_symlink()))
    except FileExistsError:  # put there just now: the user's is refused, naming it; the same command's is replaced
        check_replaceable(path, tag, option)
        atomic_write(path, data)


def written_by(path: Path, tag: str) -> bool:
    """Whether `path` is a regular PNG file (not a link) carrying the text chunk KEY = `tag`."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.info.get(KEY) == tag
    except (OSError, ValueError):
        return False


def check_replaceable(path: Path, tag: str, option: str) -> None:
    """Refuse (ValueError naming it) a target that is a folder, not named .png, or a file that `tag`'s command did not
    write."""
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a PNG file name")
    if path.suffix.lower() != ".png":
        raise ValueError(f"{option} {path}: the file is a PNG; give a name ending in .png")
    if (path.exists() or path.is_symlink()) and not written_by(path, tag):
        raise ValueError(f"{path}: exists and was not written by {tag}; it is left as it is: move it or give "
                         f"{option} another file name")
