"""CycleGAN (Zhu et al., ICCV 2017) for unpaired blur <-> sharp translation: two ResNet generators, two PatchGANs.

Architecture as the paper's appendix 7.2 and the released pytorch-CycleGAN-and-pix2pix defaults
(`--netG resnet_9blocks --netD basic --norm instance --gan_mode lsgan --init_type normal --init_gain 0.02`):
  generator  c7s1-64, d128, d256, R256 x 9, u128, u64, c7s1-C (reflection padding, instance norm, tanh out);
  discriminator  the 70x70 PatchGAN C64-C128-C256-C512 (4x4 convs, LeakyReLU 0.2, no norm on the first).
Images enter in [0, 1] and are mapped to [-1, 1] inside, as the released code's normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """N(0, 0.02) weights, zero biases (released `init_type normal`)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    """R_k: two reflection-padded 3x3 convs with instance norm and a skip connection."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, `n_down` stride-2 downsamplings, `n_blocks` residual blocks, as many upsamplings, c7s1-out."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_blocks: int = 9, n_down: int = 2,
                 global_residual: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(n_down):  # d_k: 3x3 stride-2 conv, instance norm, ReLU
            layers += [nn.Conv2d(ch, ch * 2, 3, 2, 1), nn.InstanceNorm2d(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):  # u_k: 3x3 fractional-strided conv, instance norm, ReLU
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(ch // 2),
                       nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.multiple = 2 ** n_down
        self.global_residual = global_residual and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] in, [-1, 1] out; H and W must be multiples of `multiple`. With `global_residual` the
        output is x + the network's (tanh) output, clamped: a correction of the input rather than a new image."""
        if self.global_residual:
            return (x + self.net(x)).clamp(-1.0, 1.0)
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """The PatchGAN: C64 (no norm), C128, C256 (stride 2), C512 (stride 1), a 1-channel 4x4 conv."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017), the released `gan_mode lsgan`: mean (D(x) - target)^2."""
    return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))


class CycleGAN(nn.Module):
    """G_blur2sharp (the deblurrer), G_sharp2blur, D_blur, D_sharp; forward(blur, sharp, phase) is a phase's loss.

    Computing the losses inside `forward` lets DistributedDataParallel synchronise the gradients.
    """

    def __init__(self, channels: int, ngf: int, ndf: int, n_blocks: int, n_down: int, d_layers: int,
                 lambda_cycle: float, lambda_identity: float, global_residual: bool = False):
        super().__init__()
        self.g_blur2sharp = ResnetGenerator(channels, channels, ngf, n_blocks, n_down, global_residual)
        self.g_sharp2blur = ResnetGenerator(channels, channels, ngf, n_blocks, n_down, global_residual)
        self.d_blur = PatchDiscriminator(channels, ndf, d_layers)
        self.d_sharp = PatchDiscriminator(channels, ndf, d_layers)
        self.channels, self.lambda_cycle, self.lambda_identity = channels, lambda_cycle, lambda_identity
        _init_normal(self)
        if global_residual:  # the generators start as the identity: their last conv at zero
            for g in (self.g_blur2sharp, self.g_sharp2blur):
                nn.init.zeros_(g.net[-2].weight)
                nn.init.zeros_(g.net[-2].bias)

    def generators(self) -> list[nn.Parameter]:
        return [*self.g_blur2sharp.parameters(), *self.g_sharp2blur.parameters()]

    def discriminators(self) -> list[nn.Parameter]:
        return [*self.d_blur.parameters(), *self.d_sharp.parameters()]

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor, phase: str) -> torch.Tensor:
        a, b = blur * 2 - 1, sharp * 2 - 1  # domain A = blurred, B = sharp, in [-1, 1]
        if phase == "generator":
            fake_b, fake_a = self.g_blur2sharp(a), self.g_sharp2blur(b)
            adversarial = lsgan(self.d_sharp(fake_b), True) + lsgan(self.d_blur(fake_a), True)
            # cycle consistency, eq. (2): ||F(G(a)) - a||_1 + ||G(F(b)) - b||_1
            cycle = (self.g_sharp2blur(fake_b) - a).abs().mean() + (self.g_blur2sharp(fake_a) - b).abs().mean()
            loss = adversarial + self.lambda_cycle * cycle
            if self.lambda_identity > 0:  # identity loss (paper section 5.2), weighted lambda_identity * lambda
                identity = (self.g_blur2sharp(b) - b).abs().mean() + (self.g_sharp2blur(a) - a).abs().mean()
                loss = loss + self.lambda_identity * self.lambda_cycle * identity
            return loss
        if phase == "discriminator":
            with torch.no_grad():
                fake_b, fake_a = self.g_blur2sharp(a), self.g_sharp2blur(b)
            # the discriminators' objective halved, as the paper (section 7.1) and released code
            d_sharp = 0.5 * (lsgan(self.d_sharp(b), True) + lsgan(self.d_sharp(fake_b), False))
            d_blur = 0.5 * (lsgan(self.d_blur(a), True) + lsgan(self.d_blur(fake_a), False))
            return d_sharp + d_blur
        raise ValueError(f"cyclegan: unknown phase {phase!r} (generator, discriminator)")

    @torch.no_grad()
    def deblur(self, blur: torch.Tensor) -> torch.Tensor:
        """G_blur2sharp on [0, 1] images of any size (reflect-padded to the generator's multiple)."""
        h, w = blur.shape[-2:]
        m = self.g_blur2sharp.multiple
        ph, pw = (-h) % m, (-w) % m
        x = blur * 2 - 1
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        return ((self.g_blur2sharp(x)[..., :h, :w] + 1) / 2).clamp(0, 1)
