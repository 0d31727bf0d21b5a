"""Warm-started plug-and-play deblurring with a VE score prior (CCDF / SDEdit start, DiffPIR-style steps).

Instead of starting from pure noise at sigma_max, the sampler starts from the defocused image
noised to a small sigma_start (Chung et al. 2022, "Come-Closer-Diffuse-Faster": the reverse process
contracts, so a start near the answer needs few steps). Each step i at sigma_i:

    x0   = x + sigma_i^2 s(x, sigma_i)                 Tweedie's formula for the VE-SDE (E[x0 | x])
    x0   <- dc(x0, w_i),  w_i = sigma_i^2 / (sigma_i^2 + dc_sigma^2)
                                                       data step with rho_i = (dc_sigma / sigma_i)^2
                                                       (Zhu et al. 2023, DiffPIR, eq. 13: rho = lambda sigma_n^2 / sigma_t^2)
    x    = x0 + sigma_{i+1} (sqrt(1 - zeta) eps_hat + sqrt(zeta) z),  eps_hat = (x - x0) / sigma_i
                                                       re-noising (DiffPIR, eq. 15)

and the last step returns the data-consistent x0. One network evaluation per step.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from defocuskit.diffusion.consistency import DataConsistency
from defocuskit.diffusion.pc_sampler import ScoreModel, check_sigmas, randn_like


def fast_sigmas(steps: int, sigma_start: float, sigma_end: float, device: torch.device | str | None = None) -> torch.Tensor:
    """`steps` geometric noise levels from sigma_start down to sigma_end, then 0 (k-diffusion convention)."""
    if steps < 1:
        raise ValueError(f"fast sampler: steps must be >= 1, got {steps}")
    if not 0 < sigma_end <= sigma_start:
        raise ValueError(f"fast sampler: need 0 < sigma_end <= sigma_start, got {sigma_end}, {sigma_start}")
    if steps == 1 or sigma_end == sigma_start:
        levels = torch.full((steps,), float(sigma_start), dtype=torch.float64)
        levels = levels - torch.arange(steps, dtype=torch.float64) * 1e-6  # strictly descending
    else:
        levels = torch.exp(torch.linspace(math.log(sigma_start), math.log(sigma_end), steps, dtype=torch.float64))
    return torch.cat([levels, levels.new_zeros(1)]).to(dtype=torch.float32, device=device)


@torch.no_grad()
def sample_fast(
    model: ScoreModel,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    consistency: DataConsistency | None,
    dc_sigma: float = 0.05,
    zeta: float = 0.3,
    clamp_x0: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """Deblur from the warm start x = X + sigmas[0] z (B, C, H, W); returns the last data-consistent estimate.

    `clamp_x0` keeps each Tweedie estimate in the images' range [0, 1] before the data step.
    """
    levels = check_sigmas(sigmas, x, "sample_fast")
    if not 0.0 <= zeta <= 1.0:
        raise ValueError(f"sample_fast: zeta must be in [0, 1], got {zeta}")
    if dc_sigma <= 0:
        raise ValueError(f"sample_fast: dc_sigma must be positive, got {dc_sigma}")
    n = len(levels) - 1
    x0 = x
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        score = model(x, torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype))
        x0 = x + sigma**2 * score  # Tweedie: E[x0 | x] = x + sigma^2 grad log p(x)
        if clamp_x0:
            x0 = x0.clamp(0.0, 1.0)
        if consistency is not None:
            x0 = consistency(x0, sigma**2 / (sigma**2 + dc_sigma**2))  # DiffPIR eq. 13, rho = (dc_sigma / sigma)^2
        if sigma_next > 0:
            eps_hat = (x - x0) / sigma
            z = randn_like(x, generator)
            x = x0 + sigma_next * ((1.0 - zeta) ** 0.5 * eps_hat + zeta**0.5 * z)  # DiffPIR eq. 15
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": sigma, "denoised": x0})
    return x0
