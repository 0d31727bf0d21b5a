"""RDDM networks (Feng et al., "Residual Diffusion Deblurring Model", AAAI 2025).

PreDeblur: a NAFNet working at 1/8 resolution on RGB + defocus map. The 1/8 resolution is taken
losslessly: the (padded) input is pixel-unshuffled by 8 (8x8 blocks become 64x channels), the
NAFNet runs on that 1/8-size tensor, its output is pixel-shuffled back and added to the blurred
image. The outermost encoder/decoder level uses modulated deformable depthwise convolutions.

GuidanceNet: ResNet-50 stages 1-3 of the pre-deblurred image through two 1x1 convs with LeakyReLU.

ResidualDenoiser (the RDD network): a NAFNet U-Net on (pre-deblurred, map, noisy residual) that
predicts the clean residual; at the entry of every encoder level, the middle and every decoder
level it adds a projection of the timestep embedding and a 1x1 projection of the guidance map
resized to that scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.diffusion.ddim_residual import ResidualSchedule, q_sample
from defocuskit.models.defocus_map import DefocusMapEstimator, normalize_imagenet
from defocuskit.models.nafnet import NAFBlock, NAFNet, downsample, pad_to_multiple, upsample


class PreDeblur(nn.Module):
    """(blur (B, C, H, W), map (B, 1, H, W) normalised) -> pre-deblurred image (B, C, H, W)."""

    def __init__(
        self,
        image_channels: int = 3,
        width: int = 32,
        enc_blocks: list[int] | tuple[int, ...] = (1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: list[int] | tuple[int, ...] = (1, 1, 1),
        scale: int = 8,
        deform_levels: int = 1,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.multiple = scale * 2 ** len(enc_blocks)
        self.net = NAFNet(
            (image_channels + 1) * scale**2,
            image_channels * scale**2,
            width,
            enc_blocks,
            middle_blocks,
            dec_blocks,
            global_residual=False,
            deform_levels=deform_levels,
        )

    def forward(self, blur: torch.Tensor, coc_map: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(torch.cat([blur, coc_map], dim=1), self.multiple)
        y = F.pixel_shuffle(self.net(F.pixel_unshuffle(x, self.scale)), self.scale)
        return blur + y[..., :h, :w]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    # Vaswani et al. 2017, sec. 3.5, as used by DDPM
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class GuidanceNet(nn.Module):
    """Semantic guidance: ResNet stages 1-3 of an RGB image, resized to 1/4 size, two 1x1 convs with LeakyReLU."""

    def __init__(
        self,
        channels: int = 64,
        resnet_hidden_sizes: list[int] | tuple[int, ...] = (256, 512, 1024),
        resnet_depths: list[int] | tuple[int, ...] = (3, 4, 6),
        resnet_embedding_size: int = 64,
        resnet_pretrained: str | None = None,
        resnet_trainable: bool = True,
    ) -> None:
        super().__init__()
        from transformers import ResNetConfig, ResNetModel

        if len(resnet_hidden_sizes) != 3 or len(resnet_depths) != 3:
            raise ValueError("guidance: resnet_hidden_sizes and resnet_depths give the first three stages (3 values)")
        if resnet_pretrained:
            resnet = ResNetModel.from_pretrained(resnet_pretrained)
            resnet.encoder.stages = resnet.encoder.stages[:3]
        else:
            config = ResNetConfig(
                num_channels=3,
                embedding_size=resnet_embedding_size,
                hidden_sizes=list(resnet_hidden_sizes),
                depths=list(resnet_depths),
                layer_type="bottleneck",
                hidden_act="relu",
                downsample_in_first_stage=False,
            )
            resnet = ResNetModel(config)
        self.resnet = resnet
        self.resnet_trainable = resnet_trainable
        self.resnet.requires_grad_(resnet_trainable)
        feat = sum(resnet.config.hidden_sizes[:3])
        self.fuse = nn.Sequential(
            nn.Conv2d(feat, channels, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(channels, channels, 1)
        )

    def train(self, mode: bool = True) -> GuidanceNet:
        super().train(mode)
        if not self.resnet_trainable:
            self.resnet.eval()  # a frozen trunk keeps its batch-norm statistics
        return self

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = normalize_imagenet(rgb)
        hidden = self.resnet(pixel_values=x, output_hidden_states=True).hidden_states[1:4]
        size = hidden[0].shape[-2:]
        feats = [hidden[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in hidden[1:]]
        return self.fuse(torch.cat(feats, dim=1))


class ResidualDenoiser(nn.Module):
    """(r_t, t, cond = [pre-deblurred, map], guidance map) -> predicted clean residual r_0, same size as r_t.

    The guidance map (B, guidance_channels, h, w), from GuidanceNet, may have any size: it is
    resized to every scale of the U-Net.
    """

    def __init__(
        self,
        image_channels: int = 3,
        width: int = 64,
        enc_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 14),
        middle_blocks: int = 1,
        dec_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 1),
        guidance_channels: int = 64,
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("denoiser: enc_blocks and dec_blocks differ in length")
        self.image_channels = image_channels
        self.levels = len(enc_blocks)
        self.multiple = 2**self.levels
        g = guidance_channels
        self.temb_dim = 4 * width
        self.time_mlp = nn.Sequential(
            nn.Linear(width, self.temb_dim), nn.SiLU(), nn.Linear(self.temb_dim, self.temb_dim), nn.SiLU()
        )
        self.width = width
        self.intro = nn.Conv2d(2 * image_channels + 1, width, 3, padding=1)
        self.ending = nn.Conv2d(width, image_channels, 3, padding=1)
        self.encoders, self.downs, self.decoders, self.ups = (nn.ModuleList() for _ in range(4))
        self.t_proj, self.g_proj = nn.ModuleList(), nn.ModuleList()  # encoder levels, middle, decoder levels

        def inject(ch: int) -> None:
            self.t_proj.append(nn.Linear(self.temb_dim, ch))
            self.g_proj.append(nn.Conv2d(g, ch, 1))

        ch = width
        for n in enc_blocks:
            inject(ch)
            self.encoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
            self.downs.append(downsample(ch))
            ch *= 2
        inject(ch)
        self.middle = nn.Sequential(*[NAFBlock(ch) for _ in range(middle_blocks)])
        for n in dec_blocks:
            self.ups.append(upsample(ch))
            ch //= 2
            inject(ch)
            self.decoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))

    def _inject(self, x: torch.Tensor, i: int, temb: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = F.interpolate(g, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x + self.t_proj[i](temb)[:, :, None, None] + self.g_proj[i](g)

    def forward(self, r_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        g = guidance
        x, (h, w) = pad_to_multiple(torch.cat([cond, r_t], dim=1), self.multiple)
        temb = self.time_mlp(timestep_embedding(t, self.width))
        x = self.intro(x)
        skips, k = [], 0
        for enc, down in zip(self.encoders, self.downs):
            x = enc(self._inject(x, k, temb, g))
            k += 1
            skips.append(x)
            x = down(x)
        x = self.middle(self._inject(x, k, temb, g))
        k += 1
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = dec(self._inject(up(x) + skip, k, temb, g))
            k += 1
        return self.ending(x)[..., :h, :w]


class RDDM(nn.Module):
    """The RDDM pipeline's networks: a frozen defocus-map estimator, the pre-deblur, the semantic guidance
    (ResNet trunk + guidance net) and the residual denoiser."""

    def __init__(
        self,
        map_estimator: DefocusMapEstimator,
        pre_deblur: PreDeblur,
        guidance: GuidanceNet,
        denoiser: ResidualDenoiser,
        schedule: ResidualSchedule = ResidualSchedule(),
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.map_estimator = map_estimator
        self.pre_deblur = pre_deblur
        self.guidance = guidance
        self.denoiser = denoiser
        self.map_estimator.requires_grad_(False)
        self.map_estimator.eval()

    def train(self, mode: bool = True) -> RDDM:
        super().train(mode)
        self.map_estimator.eval()  # frozen: never in training mode
        return self

    def condition(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-deblurred image, cond = [pre, normalised map]) for a blurred batch."""
        with torch.no_grad():
            coc_map = self.map_estimator(blur) / self.map_estimator.coc_scale
        pre = self.pre_deblur(blur, coc_map)
        return pre, torch.cat([pre, coc_map], dim=1)

    def guidance_map(self, cond: torch.Tensor) -> torch.Tensor:
        """Semantic guidance of the pre-deblurred image in `cond`, padded as the denoiser pads it.

        It does not depend on the diffusion step: samplers compute it once per image."""
        x, _ = pad_to_multiple(cond, self.denoiser.multiple)
        return self.guidance(x[:, : self.denoiser.image_channels])

    def forward(
        self, blur: torch.Tensor, sharp: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass (through the module, so DDP sees it): (pre-deblurred, predicted r_0, true r_0).

        The residual target r_0 = sharp - pre and the denoiser's condition use the pre-deblurred
        image detached: the pre-deblur is trained by its own loss, the denoiser by the residual loss.
        """
        pre, cond = self.condition(blur)
        cond = cond.detach()
        r0 = sharp - cond[:, : sharp.shape[1]]
        r_t = q_sample(r0, t, noise, self.schedule)
        return pre, self.denoiser(r_t, t, cond, self.guidance_map(cond)), r0
