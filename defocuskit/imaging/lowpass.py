"""The Gaussian low-pass of an image that any sigma can ask for: its kernel no wider than the image allows."""

from __future__ import annotations

import cv2
import numpy as np


def gaussian_lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` (H, W) or (H, W, C) blurred by a Gaussian of `sigma` px (reflected borders), in its own shape and dtype.

    OpenCV's kernel spans +/-4 sigma; here at most +/-(side - 1) on each axis (what one reflection of the image
    covers), so a sigma far beyond the image (1e6 px) costs what one as wide as the image does instead of gigabytes
    and gives the widest low-pass the image allows (nearly flat weights over that span), and every sigma up to
    (side - 1) / 4 gives OpenCV's result exactly."""
    if not sigma > 0 or not np.isfinite(sigma):
        raise ValueError(f"low-pass: sigma must be a positive number of pixels, got {sigma}")
    h, w = image.shape[:2]
    full = int(round(min(sigma * 4, max(h, w)))) * 2 + 1  # OpenCV's kernel for float images (a sigma near the
    # float maximum, 1e308, has no integer kernel: it is cut to the image first)
    ksize = (min(full, 2 * (w - 1) + 1), min(full, 2 * (h - 1) + 1))
    return cv2.GaussianBlur(image, ksize, sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT).reshape(image.shape)
