"""The focus gate: a restoration kept where the defocus map reads blur, the shot kept where it reads focus.

A model trained on renders also changes what is already sharp: on nearly sharp real shots (f/8) it sharpens and
smooths where nothing needs to change, and loses to its input (docs/benchmarks.md, "Why f/8 loses"). The gate
weighs the model's change per pixel by how much blur the CoC map reads there,

    gated = blur + w * (restored - blur),   w = min(1, |coc| / full_px),

so pixels the map reads as in focus (CoC 0) are returned as shot and pixels at `full_px` or more get the model's
output. The map is the `--coc` source's (a defocus-map model, the training-free edge estimate, ...): no model here.

By default only the change's detail is gated: its low-pass L = G_smooth * (restored - blur) (a Gaussian of
`smooth_px`) is kept everywhere,

    gated = blur + L + w * (restored - blur - L),

because what a model changes at large scale (the lift a wide-open lens's veiling glare and a blur in linear light
give the shadows and textured regions) is as wrong in focus as out of it, while the losses the gate exists for are
in the detail: on the real held-out stacks this gate is within 0.01 dB of the whole-change one or better at every
f-number of every fold (docs/benchmarks.md, "The focus gate on the detail only"). `smooth_px` = 0 gates the
whole change (the former behaviour).

A recipe can make the gate its model's default (`inference.focus_gate`, recipes/nafnet-cpu.yaml): deblur, eval and
the API then gate that model's output unless told otherwise (`resolve_gate`), by the edge estimate where no CoC map is
given (DEFAULT_GATE_COC).
"""

from __future__ import annotations

import numpy as np

from defocuskit.imaging.lowpass import gaussian_lowpass

GATE_SMOOTH_PX = 16.0  # Gaussian sigma (px) of the change's low-pass kept ungated; chosen on fold VABD 0001
DEFAULT_GATE_COC = "edge"  # the map of a model's default gate where none is given: training-free, any photograph


def check_full_px(full_px: float) -> float:
    """`full_px` as a float; a ValueError unless it is a positive, finite number of pixels."""
    if not full_px > 0 or not np.isfinite(full_px):
        raise ValueError(f"focus gate (--focus-gate): the CoC at full weight must be a positive number of pixels, "
                         f"got {full_px}")
    return float(full_px)


def resolve_gate(given: float | None, default: float | None) -> float | None:
    """The gate's full-weight CoC in pixels, or None for no gate: `given` (an option; 0 turns the gate off) or, when
    not given, `default` (the model's own: its recipe's inference.focus_gate). A ValueError for a bad `given`."""
    if given is None:
        return default
    if given == 0:
        return None
    return check_full_px(given)


def gate_and_map(given: float | None, default: float | None, has_map: bool, needs_map: bool
                 ) -> tuple[float | None, str | None]:
    """`resolve_gate`'s gate, and the CoC source the caller must add for it (DEFAULT_GATE_COC: the model's own gate
    where no map is given and the model needs none) or None."""
    gate = resolve_gate(given, default)
    own_without_map = given is None and gate is not None and not has_map and not needs_map
    return gate, DEFAULT_GATE_COC if own_without_map else None


def check_smooth_px(smooth_px: float) -> float:
    """`smooth_px` as a float; a ValueError unless it is a finite number of pixels >= 0 (0: gate the whole change)."""
    if not smooth_px >= 0 or not np.isfinite(smooth_px):
        raise ValueError(f"focus gate: smooth_px must be a number of pixels >= 0, got {smooth_px}")
    return float(smooth_px)


def resolve_smooth(given: float | None, gate: float | None, option: str = "--gate-smooth ",
                   gate_option: str = "--focus-gate ") -> float:
    """A gate's smooth_px: `given` (an option, checked) or, not given, GATE_SMOOTH_PX; a ValueError naming `option`
    where it is given and no gate runs (`gate` None): it would not be used."""
    if given is None:
        return GATE_SMOOTH_PX
    smooth = check_smooth_px(given)
    if gate is None:
        raise ValueError(f"{option}{given:g}: the change's low-pass a focus gate keeps, but no focus gate runs here "
                         f"(none given by {gate_option}PX or by the model's recipe, or {gate_option}0); leave it out")
    return smooth


def gate_weight(coc: np.ndarray, full_px: float) -> np.ndarray:
    """The (H, W) float32 weight min(1, |coc| / full_px) of the model's change; `coc` in pixels, signed or not."""
    check_full_px(full_px)
    coc = np.asarray(coc, np.float32)
    if coc.ndim != 2:
        raise ValueError(f"focus gate: the CoC map must be (H, W), got shape {coc.shape}")
    if not np.isfinite(coc).all():
        raise ValueError("focus gate: the CoC map has non-finite values")
    return np.minimum(np.abs(coc) / np.float32(full_px), np.float32(1.0))


def focus_gate(blur: np.ndarray, restored: np.ndarray, coc: np.ndarray, full_px: float,
               smooth_px: float = GATE_SMOOTH_PX) -> np.ndarray:
    """`restored` (H, W, C) where the CoC map reads at least `full_px` of blur; where it reads 0, `blur` plus the
    change's low-pass (a Gaussian of `smooth_px`; 0: `blur` itself), and a linear mix between; float32, the restored
    image's shape, clipped to [0, 1]."""
    if blur.shape != restored.shape:
        raise ValueError(f"focus gate: input {blur.shape} and restored {restored.shape} differ in shape")
    if coc.shape != blur.shape[:2]:
        raise ValueError(f"focus gate: CoC map {coc.shape[1]}x{coc.shape[0]} does not match the image "
                         f"{blur.shape[1]}x{blur.shape[0]}")
    w = gate_weight(coc, full_px)[:, :, None]
    blur = np.asarray(blur, np.float32)
    change = np.asarray(restored, np.float32) - blur
    if check_smooth_px(smooth_px) == 0:
        return (blur + w * change).astype(np.float32)
    low = gaussian_lowpass(change, smooth_px)
    return np.clip(blur + low + w * (change - low), 0.0, 1.0).astype(np.float32)
