"""Residual DDIM (Song et al. 2021) for RDDM: diffuse the residual r_0 = sharp - pre-deblurred.

The network predicts the clean residual r_0 from (r_t, t, cond); the schedule is the `diffusers`
DDIMScheduler with RDDM's settings (1300 training steps, scaled-linear betas 1e-4..0.02).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
from diffusers import DDIMScheduler

# denoiser(r_t, t, cond) -> predicted clean residual r_0; t is a (B,) long tensor of training timesteps.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ResidualSchedule:
    """The noise schedule of the residual diffusion."""

    num_train_timesteps: int = 1300
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "scaled_linear"
    timestep_spacing: str = "leading"  # sampling grid; diffusers' default, as released ("trailing" starts at T - 1)
    clip_sample: bool = True  # clip the predicted r_0 to [-1, 1] at each step (diffusers' default, as released)


def make_scheduler(schedule: ResidualSchedule = ResidualSchedule()) -> DDIMScheduler:
    """A fresh DDIMScheduler predicting the clean sample (RDDM's `SR3scheduler` settings)."""
    return DDIMScheduler(
        num_train_timesteps=schedule.num_train_timesteps,
        beta_start=schedule.beta_start,
        beta_end=schedule.beta_end,
        beta_schedule=schedule.beta_schedule,
        prediction_type="sample",
        clip_sample=schedule.clip_sample,
        set_alpha_to_one=True,
        timestep_spacing=schedule.timestep_spacing,
    )


@lru_cache(maxsize=8)
def alphas_cumprod(schedule: ResidualSchedule = ResidualSchedule()) -> torch.Tensor:
    """abar_t for t = 0 .. T-1 (float32, CPU)."""
    return make_scheduler(schedule).alphas_cumprod.clone()


def q_sample(
    r0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: ResidualSchedule = ResidualSchedule()
) -> torch.Tensor:
    """r_t ~ q(r_t | r_0) = N(sqrt(abar_t) r_0, (1 - abar_t) I)."""
    # Ho et al. 2020, eq. (4)
    abar = alphas_cumprod(schedule).to(device=r0.device, dtype=r0.dtype)[t]
    abar = abar.view(-1, *([1] * (r0.dim() - 1)))
    return abar.sqrt() * r0 + (1 - abar).sqrt() * noise


def sample_timesteps(batch: int, schedule: ResidualSchedule, device: torch.device) -> torch.Tensor:
    """Uniform training timesteps in [0, T) from torch's global RNG."""
    return torch.randint(0, schedule.num_train_timesteps, (batch,), device=device)


@torch.no_grad()
def sample_residual_ddim(
    denoiser: Denoiser,
    cond: torch.Tensor,
    shape: tuple[int, ...],
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    schedule: ResidualSchedule = ResidualSchedule(),
) -> torch.Tensor:
    """DDIM sampling of the residual in `steps` steps from r_T ~ N(0, I); returns r_0 of `shape`.

    `callback({"i", "n", "x", "sigma", "denoised"})` is called after each step i (0-based) of n (k-diffusion's
    keys: x the residual r_{t-1}, sigma the timestep t, denoised the predicted r_0).
    """
    if steps < 1:
        raise ValueError(f"DDIM steps must be >= 1, got {steps}")
    scheduler = make_scheduler(schedule)
    scheduler.set_timesteps(steps, device=cond.device)
    gen_device = generator.device if generator is not None else cond.device
    r = torch.randn(shape, generator=generator, device=gen_device, dtype=cond.dtype).to(cond.device)
    n = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        t_batch = torch.full((shape[0],), int(t), device=cond.device, dtype=torch.long)
        r0_hat = denoiser(r, t_batch, cond)
        # Song et al. 2021, eq. (12): x_{t-1} from the predicted x_0 and the implied noise
        r = scheduler.step(r0_hat, t, r, eta=eta, generator=generator).prev_sample
        if callback is not None:
            callback({"i": i, "n": n, "x": r, "sigma": int(t), "denoised": r0_hat})
    return r
