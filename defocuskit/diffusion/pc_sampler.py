"""Predictor-corrector deblurring samplers of HIDD (Li et al., Sci. Rep. 2025; code: HIDD-DM), k-diffusion style.

One step at noise level sigma_i (sigmas descending, ending in 0):
    1. reverse-diffusion predictor      x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i)  [+ noise]
    2. data consistency                 x <- dc(x, w1)     (identity: x - w1 (x - X), w1 = 0.08)
    3. annealed-Langevin corrector      x <- x + eps s(., sigma_i)      [+ noise], eps from the snr
    4. data consistency                 x <- dc(x, w2)     (w2 = 0.15)
    5. `sample_released` only: min-max rescaling of x to [0, 1]

`sample_released` is the released HIDD-DM loop bit for bit: pure-noise start at sigma_max (the
caller passes x = sigma_max z), identity consistency, and min-max rescaling of every batch item
after every step. That rescaling is harmful outside the paper's setting: a batch item is one tile
(and, for a one-channel model, one colour channel), so each tile and channel is stretched to
[0, 1] on its own: colour shifts and seams. It is kept for reproduction only.

`sample_pc` is the same predictor / consistency / corrector loop with no rescaling, and any data
consistency (`diffusion.consistency`).

Options, with the released loop's values as defaults:
- `carry_mean=True`: the state carried from update to update is the noise-free mean: the
  predictor's noisy sample is discarded (the loop keeps `x_mean`).
- `corrector_chains=3`: the corrector evaluates the score at three chain states c_j, moves the
  state by eps times the mean of the three scores, with eps = 2 (snr mean_j|z_j| / mean_j|s_j|)^2,
  and then respawns the chains as c_j = x + sqrt(2 eps) z_j. The chains start at the initial
  noise, are scored at the step's sigma_i (the level the predictor starts from), and are not
  touched by the second consistency step or the rescaling. 1 + 3 = 4 network evaluations a step.
  The released code takes the norms' mean over the batch (its batch is one image); here they
  are per image so that batch items (e.g. colour channels) stay independent. (HIDD-DM calls
  `corrector_update_fn(x1, x2, x3, x_mean, t)`; its own sampling.py was not available to us;
  this is the three-chain LangevinCorrector with that signature in the same group's repositories.)

`corrector_chains=0` is score_sde's ordinary Langevin corrector on the state itself; together
with `carry_mean=False` and no consistency this is the plain score_sde PC sampler (predictor
first). No noise is added in the last step (score_sde's `denoise=True`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from defocuskit.diffusion.consistency import DataConsistency, identity_consistency

ScoreModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def randn_like(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `like`, drawn on the generator's device."""
    device = generator.device if generator is not None else like.device
    z = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


def check_sigmas(sigmas: torch.Tensor, x: torch.Tensor, who: str) -> list[float]:
    """The noise levels as floats; an error unless strictly descending, non-negative, >= 2, and x is (B, C, H, W)."""
    if x.dim() != 4:
        raise ValueError(f"{who}: expected x (B, C, H, W), got shape {tuple(x.shape)}")
    levels = [float(s) for s in torch.as_tensor(sigmas).reshape(-1).tolist()]
    if len(levels) < 2 or any(a <= b for a, b in zip(levels, levels[1:])) or levels[-1] < 0:
        raise ValueError(f"{who}: sigmas must be strictly descending, non-negative, at least 2 values")
    return levels


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _langevin_step_size(snr: float, noise_norm: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
    # Song et al. 2021, Alg. 2 / App. G: eps = 2 (r ||z|| / ||s||)^2 (VE-SDE, alpha = 1)
    eps = 2.0 * (snr * noise_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny)) ** 2
    return torch.where(grad_norm > 0, eps, torch.zeros_like(eps))[:, None, None, None]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    lo = flat.min(dim=1).values[:, None, None, None]
    span = (flat.max(dim=1).values[:, None, None, None] - lo).clamp_min(1e-12)
    return (x - lo) / span


def nfe_per_step(predictor: bool, corrector: bool, corrector_chains: int) -> int:
    """Network evaluations per step of the PC loop: 1 for the predictor, max(1, chains) for the corrector."""
    return int(predictor) + (max(1, corrector_chains) if corrector else 0)


@torch.no_grad()
def sample_pc(
    model: ScoreModel,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    consistency: DataConsistency | None,
    weights: tuple[float, float] = (0.08, 0.15),
    snr: float = 0.021,
    predictor: bool = True,
    corrector: bool = True,
    corrector_chains: int = 3,
    carry_mean: bool = True,
    rescale_each_step: bool = False,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """Guided reverse diffusion from the state x (B, C, H, W) at sigmas[0]; returns the final state.

    model(x, sigma) -> score with sigma of shape (B,); sigmas: descending noise levels ending in
    0 (see `vesde.reverse_sigmas`), one step per consecutive pair; `consistency(x, w)` pulls
    towards the data after the predictor (w = weights[0]) and after the corrector (weights[1]);
    None or a zero weight skips it. `callback({"i", "n", "x", "sigma"})` is called after each step i of n
    (k-diffusion's keys).
    """
    levels = check_sigmas(sigmas, x, "sample_pc")
    if corrector_chains < 0:
        raise ValueError(f"sample_pc: corrector_chains must be >= 0, got {corrector_chains}")
    w1, w2 = weights
    b = x.shape[0]
    n = len(levels) - 1

    def score(v: torch.Tensor, sigma: float) -> torch.Tensor:
        return model(v, torch.full((v.shape[0],), sigma, device=v.device, dtype=v.dtype))

    chains = [x] * corrector_chains
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        noisy = not carry_mean and i < n - 1  # no noise in the last step (denoise=True)

        if predictor:
            # Song et al. 2021, Alg. 2: reverse-diffusion predictor for the VE-SDE
            var = sigma**2 - sigma_next**2
            x = x + var * score(x, sigma)
            if noisy:
                x = x + var**0.5 * randn_like(x, generator)

        if consistency is not None and w1:
            x = consistency(x, w1)  # Li et al. 2025: data consistency after the predictor

        if corrector and corrector_chains == 0:
            g, z = score(x, sigma), randn_like(x, generator)
            eps = _langevin_step_size(snr, _norms(z), _norms(g))
            x = x + eps * g
            if noisy:
                x = x + (2.0 * eps).sqrt() * z
        elif corrector:
            # HIDD-DM corrector: scores of the chains, averaged, move the noise-free state
            g = score(torch.cat(chains), sigma).split(b)
            z = [randn_like(x, generator) for _ in chains]
            grad_norm = torch.stack([_norms(t) for t in g]).mean(dim=0)
            noise_norm = torch.stack([_norms(t) for t in z]).mean(dim=0)
            eps = _langevin_step_size(snr, noise_norm, grad_norm)
            x = x + eps * torch.stack(g).mean(dim=0)
            chains = [x + (2.0 * eps).sqrt() * zj for zj in z]

        if consistency is not None and w2:
            x = consistency(x, w2)  # Li et al. 2025: data consistency after the corrector
        if rescale_each_step:
            x = _minmax(x)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "sigma": sigma})
    return x


@torch.no_grad()
def sample_released(
    model: ScoreModel,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    blurred: torch.Tensor,
    weights: tuple[float, float] = (0.08, 0.15),
    snr: float = 0.021,
    predictor: bool = True,
    corrector: bool = True,
    corrector_chains: int = 3,
    carry_mean: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """The released HIDD-DM loop: identity consistency towards `blurred` and per-item min-max rescaling each step."""
    return sample_pc(
        model, x, sigmas, consistency=identity_consistency(blurred), weights=weights, snr=snr, predictor=predictor,
        corrector=corrector, corrector_chains=corrector_chains, carry_mean=carry_mean, rescale_each_step=True,
        generator=generator, callback=callback,
    )
