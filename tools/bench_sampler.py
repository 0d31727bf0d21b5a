"""Time the HIDD paper sampler: seconds per step, extrapolated seconds per image, network evaluations.

Runs a few steps of the 1000-step predictor-corrector sampler with the paper-size NCSN++
(random weights: the cost does not depend on them) and extrapolates to the full schedule.

    python tools/bench_sampler.py                      # cuda if available, else cpu
    python tools/bench_sampler.py --device cpu --measure-steps 2
    python tools/bench_sampler.py --colour             # a colour image, channel by channel (3 batch items)

Not imported by the package.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from defocuskit.diffusion.pc_sampler import sample_released  # noqa: E402
from defocuskit.diffusion.vesde import reverse_sigmas  # noqa: E402
from defocuskit.methods.hidd import ModelConfig, ObjectiveConfig, SamplerConfig, build  # noqa: E402


class CountingModel:
    """Calls the network and counts evaluations per image (batch items divided by images)."""

    def __init__(self, net: torch.nn.Module, items_per_image: int, images: int):
        self.net, self.per_image, self.images, self.nfe = net, items_per_image, images, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += x.shape[0] // (self.per_image * self.images)
        return self.net(x, sigma)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000, help="the full schedule to extrapolate to (paper: 1000)")
    parser.add_argument("--measure-steps", type=int, default=3, help="steps actually run and timed")
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--chains", type=int, default=SamplerConfig.corrector_chains)
    parser.add_argument("--no-corrector", action="store_true")
    parser.add_argument("--colour", action="store_true", help="one colour image: 3 channels as batch items")
    parser.add_argument("--images", type=int, default=1, help="images per batch")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    objective, sampler = ObjectiveConfig(), SamplerConfig(steps=args.steps, corrector_chains=args.chains)
    torch.manual_seed(0)
    net = build(ModelConfig(image_size=args.image_size), objective, False).to(device).eval()
    n_params = sum(p.numel() for p in net.parameters())
    per_image = 3 if args.colour else 1
    blurred = torch.rand(args.images * per_image, 1, args.image_size, args.image_size, device=device)
    sigmas = reverse_sigmas(sampler.steps, objective.sigma_min, objective.sigma_max, device=device)
    model = CountingModel(net, per_image, args.images)

    def run(k: int) -> None:
        sample_released(
            model, sigmas[0] * torch.randn_like(blurred), sigmas[: k + 1], blurred=blurred, snr=sampler.snr,
            corrector=not args.no_corrector, corrector_chains=sampler.corrector_chains, weights=sampler.weights,
            carry_mean=sampler.carry_mean,
        )

    if args.warmup_steps:
        run(args.warmup_steps)
    _sync(device)
    model.nfe = 0
    start = time.perf_counter()
    run(args.measure_steps)
    _sync(device)
    elapsed = time.perf_counter() - start

    per_step = elapsed / args.measure_steps / args.images
    nfe_per_step = model.nfe / args.measure_steps
    what = "colour image (3 channels, channel by channel)" if args.colour else "one-channel image"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}")
    print(f"network: NCSN++ nf 64, ch_mult (1,1,2,2,2,2,2), {n_params:,} parameters, {args.image_size}x{args.image_size}")
    print(f"sampler: {sampler.steps} steps, corrector {'off' if args.no_corrector else 'on'}, "
          f"{sampler.corrector_chains} chains, batch of {args.images} {what}(s)")
    print(f"measured: {args.measure_steps} steps in {elapsed:.3f} s (after {args.warmup_steps} warm-up step(s))")
    print(f"seconds per step per {what}: {per_step:.4f}")
    print(f"network evaluations per step per {what}: {nfe_per_step:g}")
    print(f"EXTRAPOLATED from {args.measure_steps} measured steps to {sampler.steps} steps: "
          f"{per_step * sampler.steps:.1f} s ({per_step * sampler.steps / 60:.2f} min) per {what}")
    print(f"network evaluations per {what}: {nfe_per_step * sampler.steps:g}")


if __name__ == "__main__":
    main()
