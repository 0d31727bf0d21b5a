"""Reference points for the evaluator: the blurred input itself, Wiener deconvolution with a disc PSF, and the
thin-lens proximal step without a prior."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from defocuskit.imaging import optics

BASELINES = ("input", "wiener", "wiener-plain", "prox", "prox-gaussian", "prox-plain")

DEFAULT_NSR = 0.01
PROX_RHO, PROX_CG_STEPS = 0.2, 30

# Whether a baseline's change is weighed against the image's own noise (imaging/noise.py; measured: docs/benchmarks.md
# "The proximal step weighed against the image's noise"); the "-plain" ones are as every figure before it was measured.
WIENER_VARIANTS = {"wiener": True, "wiener-plain": False}
# each prox baseline: its kernel (optics.PSF_SHAPES) and whether it is weighed
PROX_VARIANTS = {"prox": ("disc", True), "prox-gaussian": ("gaussian", True), "prox-plain": ("disc", False)}
_PROX_KERNEL = {"disc": "", "gaussian": ", each blurred by the Gaussian of its disc's second moment, optics.defocus_psf"}
NOISE_WEIGHING = ("; its change kept in proportion to how far it exceeds, locally, the change the image's own noise "
                  "(Poisson-Gaussian, level estimated from the image) causes through the same step (imaging/noise.py)")


def prox_description(psf: str = "disc", noise: bool = True) -> str:
    """What the report says of the prox baseline with kernel `psf`, its change shrunk against the noise or not."""
    return (f"the thin-lens proximal step alone, no learned prior: argmin ||K_c x - y||^2 + {PROX_RHO:g} ||x - y||^2 "
            f"in linear light (lens_blur.DefocusOperator, 'over' layers{_PROX_KERNEL[psf]}), {PROX_CG_STEPS} "
            f"conjugate-gradient steps, sRGB in and out{NOISE_WEIGHING if noise else ''}; CoC as the Wiener baseline's")

WIENER_PRIOR = "gradient"  # measured: on held-out scenes +1.15 dB with the true CoC against -0.15 for the textbook
# flat NSR in sRGB (the former baseline), docs/benchmarks.md "A conservative map"

WIENER_ASSUMPTIONS = (
    "Wiener deconvolution with a uniform disc PSF in linear light (sRGB in and out); diameter from the CoC source "
    f"(default: the shard's coc.png where present, else {optics.COC_FROM_METADATA}); noise-to-signal ratio "
    f"{DEFAULT_NSR:g} x |D|^2 (D the discrete gradient: a 1/f^2 image spectrum, so the mean and low frequencies "
    "pass unchanged)"
)


def wiener_description(noise: bool = True) -> str:
    """What the report says of the Wiener baseline, its change weighed against the noise or not."""
    return WIENER_ASSUMPTIONS + (NOISE_WEIGHING if noise else "")


def weighed(blur: np.ndarray, step: Callable[[np.ndarray], np.ndarray], noise: bool) -> np.ndarray:
    """`step` (sRGB float image -> its restoration) on `blur` clipped to [0, 1], its change weighed against the image's
    own noise (imaging.noise.shrink_to_signal) if `noise`; float in [0, 1]."""
    from defocuskit.imaging.noise import shrink_to_signal
    from defocuskit.io.images import srgb_to_linear

    blur = np.clip(np.asarray(blur, np.float32), 0.0, 1.0)
    out = shrink_to_signal(blur, step, srgb_to_linear(blur)) if noise else step(blur)
    return np.clip(out, 0.0, 1.0)


def input_baseline(blur: np.ndarray) -> np.ndarray:
    """The blurred input, unchanged: the score every method must beat."""
    return blur


def wiener_coc_px(meta: dict[str, Any], size: tuple[int, int], coc: np.ndarray | None = None) -> float | np.ndarray:
    """The disc diameter (pixels) for the Wiener baseline of an image of `size` (H, W): the coc map if given (signed
    or not), else from the f-number (its sensor width across the width, or 36 mm across the long side where the
    metadata has none: optics.sensor_span_px)."""
    if coc is not None:
        return np.asarray(coc, np.float32)
    try:
        return optics.coc_from_metadata(meta, optics.sensor_span_px(meta, *size))
    except ValueError as exc:
        raise ValueError(f"the Wiener baseline needs coc.png or an f_number: {exc}") from None


def wiener_baseline(blur: np.ndarray, meta: dict[str, Any], coc: np.ndarray | None = None, nsr: float = DEFAULT_NSR,
                    noise: bool = True) -> np.ndarray:
    """Wiener-deconvolve a float (H, W, 3) image in [0, 1] with the disc PSF of `wiener_coc_px`
    (`wiener_description(noise)`); float in [0, 1]."""
    from defocuskit.imaging.deconv import wiener_deblur
    from defocuskit.io.images import linear_to_srgb, srgb_to_linear

    coc_px = np.abs(wiener_coc_px(meta, blur.shape[:2], coc))  # a disc of |CoC|

    def step(image: np.ndarray) -> np.ndarray:
        linear = srgb_to_linear(image)  # defocus blur mixes light, not sRGB values
        return np.clip(linear_to_srgb(wiener_deblur(linear, coc_px, nsr, prior=WIENER_PRIOR)), 0.0, 1.0)

    return weighed(blur, step, noise)


def prox_baseline(blur: np.ndarray, meta: dict[str, Any], coc: np.ndarray | None = None, psf: str = "disc",
                  rho: float = PROX_RHO, steps: int = PROX_CG_STEPS, noise: bool = True) -> np.ndarray:
    """The physics data step alone (`prox_description(psf, noise)`; `rho`, `steps` for studies of it,
    tools/prox_noise.py) on a float (H, W, C) image in [0, 1]; float in [0, 1]."""
    import torch

    from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb, srgb_to_linear

    coc_px = wiener_coc_px(meta, blur.shape[:2], coc)
    coc_map = np.array(np.broadcast_to(np.asarray(coc_px, np.float32), blur.shape[:2]))
    operator = DefocusOperator(torch.from_numpy(np.ascontiguousarray(coc_map))[None, None], psf=psf)

    def step(image: np.ndarray) -> np.ndarray:
        y = srgb_to_linear(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), np.float32))[None])
        return linear_to_srgb(operator.prox(y, y, rho, steps))[0].numpy().transpose(1, 2, 0)

    return weighed(blur, step, noise)
