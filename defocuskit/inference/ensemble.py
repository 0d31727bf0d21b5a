"""Geometric self-ensemble (Timofte et al. 2016, "Seven ways to improve example-based single image super
resolution"; Lim et al. 2017, EDSR+): restore an image under flips (4) or flips and transpositions (8, the whole
dihedral group), undo each transform on its output, and average; pure functions of arrays."""

from __future__ import annotations

from typing import Callable

import numpy as np

ENSEMBLE_SIZES = (1, 4, 8)  # 1: the image as given; 4: + flips (the image's shape kept); 8: + transposes

# (transpose, flip rows, flip columns), applied in that order; the identity first
Transform = tuple[bool, bool, bool]


def check_ensemble(n: int) -> int:
    """`n` when it is a self-ensemble size (ENSEMBLE_SIZES); ValueError naming the value otherwise."""
    if isinstance(n, bool) or n not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble {n!r}: expected one of {', '.join(map(str, ENSEMBLE_SIZES))} (1: off; 4: flips; "
                         "8: flips and transposes)")
    return int(n)


def transforms(n: int) -> list[Transform]:
    """The `n` (1, 4 or 8) transforms of a self-ensemble, the identity first."""
    check_ensemble(n)
    flips = [(False, v, h) for v in (False, True) for h in (False, True)]
    return [(False, False, False)] if n == 1 else flips if n == 4 else flips + [(True, v, h) for _, v, h in flips]


def apply(x: np.ndarray, t: Transform) -> np.ndarray:
    """`x` (H, W) or (H, W, C) under transform `t` (a view)."""
    transpose, rows, cols = t
    y = x.swapaxes(0, 1) if transpose else x
    y = y[::-1] if rows else y
    return y[:, ::-1] if cols else y


def undo(x: np.ndarray, t: Transform) -> np.ndarray:
    """The inverse of `apply(., t)`: apply(undo(x, t), t) == x."""
    transpose, rows, cols = t
    y = x[:, ::-1] if cols else x
    y = y[::-1] if rows else y
    return y.swapaxes(0, 1) if transpose else y


def self_ensemble(restore: Callable[[np.ndarray, np.ndarray | None, int], np.ndarray], image: np.ndarray,
                  coc: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    """The mean over the `n` transforms t of undo(restore(apply(image, t), apply(coc, t), seed + k), t), k the
    transform's index; `restore(image, coc, seed)` maps a float (H, W, C) image (and its (H, W) CoC map or None) to
    an (H, W, C') float image. n = 1 is `restore(image, coc, seed)` itself."""
    members = transforms(n)
    if n == 1:
        return restore(image, coc, seed)
    total: np.ndarray | None = None
    for k, t in enumerate(members):
        out = undo(restore(np.ascontiguousarray(apply(image, t)),
                           None if coc is None else np.ascontiguousarray(apply(coc, t)), seed + k), t)
        total = out.astype(np.float32, copy=True) if total is None else total + out
    assert total is not None
    return total / np.float32(n)
