"""Data consistency for the deblurring samplers: pull a state towards agreement with the defocused input.

A `DataConsistency` is called as dc(x, w) with a weight w in (0, 1]: it returns the minimiser of

    ||A x' - y||^2 + rho ||x' - x||^2,   rho = (1 - w) / w

so w -> 0 leaves x as it is and w = 1 trusts the data alone. Two forward models A:

- `identity` (HIDD as released): A = I, y = X the defocused image; the minimiser is x - w (x - X).
- `physics`: A = K_c, the thin-lens defocus blur of `lens_blur.DefocusOperator`, solved by conjugate
  gradients, in linear light by default (sRGB in and out).
"""

from __future__ import annotations

from typing import Callable

import torch

from defocuskit.imaging.lens_blur import DefocusOperator, linear_to_srgb, srgb_to_linear

DataConsistency = Callable[[torch.Tensor, float], torch.Tensor]
KINDS = ("identity", "physics")


def identity_consistency(blurred: torch.Tensor) -> DataConsistency:
    """x <- x - w (x - X): the pull towards the defocused image X of the released HIDD sampler."""

    def dc(x: torch.Tensor, w: float) -> torch.Tensor:
        return x - w * (x - blurred)  # Li et al. 2025: data consistency, x <- x - w (x - X)

    return dc


def physics_consistency(
    blurred: torch.Tensor, operator: DefocusOperator, cg_steps: int = 30, linear_light: bool = True
) -> DataConsistency:
    """argmin ||K_c x' - y||^2 + rho ||x' - x||^2 with y the defocused image.

    With `linear_light` the solve runs on the sRGB-decoded images (defocus blur mixes light, not
    sRGB values); the part of x outside [0, 1] (noise of an early sampler state) is carried over
    unchanged, so the step acts on the image and not on the noise's clipping.
    """
    y = srgb_to_linear(blurred) if linear_light else blurred
    aty = operator.adjoint(y)  # K^T y: the same in every step's normal equations

    def dc(x: torch.Tensor, w: float) -> torch.Tensor:
        if not 0.0 < w <= 1.0:
            raise ValueError(f"data consistency weight must be in (0, 1], got {w}")
        rho = (1.0 - w) / w
        if not linear_light:
            return operator.prox(y, x, rho, cg_steps, aty=aty)
        inside = x.clamp(0.0, 1.0)
        solved = linear_to_srgb(operator.prox(y, srgb_to_linear(inside), rho, cg_steps, aty=aty))
        return solved + (x - inside)

    return dc
