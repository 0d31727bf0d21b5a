"""Variance-exploding SDE pieces (Song et al. 2021): noise levels, the score-matching loss, the reverse schedule.

Images live in [0, 1] (score_sde with data.centered = False); a model is called as
`score_model(x, sigma) -> score` with sigma of shape (B,).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ScoreModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def sigma_at(t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""
    # Song et al. 2021, App. C: VE-SDE noise scales, the continuous limit of NCSN's geometric sequence
    _check_range(sigma_min, sigma_max)
    return sigma_min * (sigma_max / sigma_min) ** t


def sample_sigmas(
    batch: int,
    sigma_min: float,
    sigma_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training noise levels sigma(t), t ~ U(0, 1): log-uniform on [sigma_min, sigma_max], shape (batch,)."""
    gen_device = generator.device if generator is not None else device
    t = torch.rand(batch, generator=generator, device=gen_device)
    return sigma_at(t, sigma_min, sigma_max).to(device if device is not None else t.device)


def dsm_loss(
    score_model: ScoreModel,
    x0: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    *,
    reduce_mean: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoising score matching with lambda(sigma) = sigma^2: || sigma s(x0 + sigma z, sigma) + z ||^2.

    reduce_mean=True averages over every element; False takes half the sum over each image's
    elements, averaged over the batch (score_sde's `reduce_mean=False`, which the HIDD-DM
    config uses: its training log starts at 3.28e4 = 0.5 * 256 * 256).
    """
    # Song et al. 2021, eq. (7) with lambda(t) = sigma(t)^2 (VE-SDE, continuous time)
    if x0.dim() != 4:
        raise ValueError(f"dsm_loss: expected images (B, C, H, W), got shape {tuple(x0.shape)}")
    sigma = sample_sigmas(x0.shape[0], sigma_min, sigma_max, generator, device=x0.device).to(x0.dtype)
    z = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device)
    z = z.to(device=x0.device, dtype=x0.dtype)
    score = score_model(x0 + sigma[:, None, None, None] * z, sigma)
    err = (sigma[:, None, None, None] * score.float() + z.float()).square()
    if reduce_mean:
        return err.mean()
    return 0.5 * err.flatten(1).sum(dim=1).mean()


def reverse_sigmas(
    steps: int, sigma_min: float, sigma_max: float, device: torch.device | str | None = None
) -> torch.Tensor:
    """Noise levels of the reverse process: `steps` geometric values from sigma_max down to sigma_min, then 0.

    Returns a tensor of length steps + 1 (k-diffusion convention: the last entry 0 is where the
    final step lands). Matches score_sde's discretisation sigma(t_i), t_i = linspace(1, eps, N).
    """
    _check_range(sigma_min, sigma_max)
    if steps < 1:
        raise ValueError(f"reverse_sigmas: steps must be >= 1, got {steps}")
    if steps == 1:
        levels = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        levels = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))
    return torch.cat([levels, levels.new_zeros(1)]).to(dtype=torch.float32, device=device)
