"""RDDM networks (Feng et al., "Residual Diffusion Deblurring Model", AAAI 2025), as released (eldestin/DiffDeblur).

PreDeblur (`Predelur_network.py: NAFNetModified`): a NAFNet U-Net on RGB + defocus map whose
depthwise convolutions are DCNv4 layers on three of its four levels (`Pre-deblur blocks`); it
outputs the pre-deblurred image directly (no global residual).

SemanticEncoder (`DenoisingNetwork.py: resnet50`): ImageNet-normalised ResNet-50 stem and stages
1-3 of the pre-deblurred image; all four feature maps (64 + 256 + 512 + 1024 channels) guide
every block of the denoiser.

ResidualDenoiser (`DenoisingNetwork.py: NAFNetFusionModifiedcat`): a U-Net of RDD blocks on
(pre-deblurred, map, noisy residual) predicting the clean residual. Each RDD block modulates its
two branches by a scale and shift from the timestep embedding, fuses the guidance features
(resized to its scale, through its own two 1x1 convs) with its input and again after its
channel attention, and uses DCNv4 on the outer levels; the output conv sees the intro features too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.diffusion.ddim_residual import ResidualSchedule, q_sample
from defocuskit.models.defocus_map import MapEstimator, normalize_imagenet
from defocuskit.models.nafnet import NAFNet, SimpleGate, downsample, pad_to_multiple, spatial_layer, upsample
from defocuskit.models.pretrained import read_pretrained

MAP_HEADS = ("coc", "blur")
MAP_NORMALIZE = ("scale", "minmax_image", "minmax_batch")


class PreDeblur(nn.Module):
    """(blur (B, C, H, W), map (B, 1, H, W)) -> pre-deblurred image (B, C, H, W).

    `scale` > 1 runs the U-Net on the pixel-unshuffled input at 1/scale resolution (one reading of
    the paper's "1/8"; the release runs it at full resolution, scale 1).
    """

    def __init__(
        self,
        image_channels: int = 3,
        width: int = 32,
        enc_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 6),
        middle_blocks: int = 1,
        dec_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 1),
        enc_dw: list[str] | tuple[str, ...] = ("dcn_norm", "dcn", "dcn", "conv"),
        dec_dw: list[str] | tuple[str, ...] = ("conv", "dcn", "dcn", "dcn_norm"),
        scale: int = 1,
        global_residual: bool = False,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"pre-deblur: scale must be >= 1, got {scale}")
        self.scale, self.global_residual = scale, global_residual
        self.multiple = scale * 2 ** len(enc_blocks)
        self.net = NAFNet(
            (image_channels + 1) * scale**2, image_channels * scale**2, width, enc_blocks, middle_blocks,
            dec_blocks, global_residual=False, enc_dw=enc_dw, dec_dw=dec_dw,
        )

    def forward(self, blur: torch.Tensor, coc_map: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(torch.cat([blur, coc_map], dim=1), self.multiple)
        if self.scale > 1:
            x = F.pixel_unshuffle(x, self.scale)
        y = self.net(x)
        if self.scale > 1:
            y = F.pixel_shuffle(y, self.scale)
        y = y[..., :h, :w]
        return blur + y if self.global_residual else y


def build_resnet(
    hidden_sizes: list[int], depths: list[int], embedding_size: int, pretrained: str | None
) -> nn.Module:
    """A transformers ResNetModel with the given first three stages: random, or ImageNet weights from a
    Hugging Face id / local folder (`from_pretrained`) or a local .safetensors file."""
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(
        num_channels=3, embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
        layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False,
    )
    resnet = ResNetModel(config)
    if not pretrained:
        return resnet
    hint = "give a local copy (a folder from save_pretrained or a .safetensors file) or `resnet_pretrained: null` for random init"
    try:  # no network, wrong id, missing file, wrong shapes
        state = {k.removeprefix("resnet."): v for k, v in read_pretrained(pretrained, ResNetModel).items()}
        own = resnet.state_dict()
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own and k.startswith(("embedder.", "encoder."))
                 and not (k.startswith("encoder.stages.") and int(k.split(".")[2]) >= len(depths))]  # later stages unused
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or extra or wrong:
            k = (wrong or missing or extra)[0]
            raise ValueError(f"its weights are not the recipe's stages (hidden_sizes {list(hidden_sizes)}, depths "
                             f"{list(depths)}, embedding_size {embedding_size}): {len(wrong)} of other shape, "
                             f"{len(missing)} missing, {len(extra)} unexpected, e.g. {k}")
        resnet.load_state_dict({k: state[k] for k in own}, strict=True)
    except ValueError as e:
        raise ValueError(f"model.resnet_pretrained: cannot load '{pretrained}': {e}; {hint}") from None
    return resnet


class SemanticEncoder(nn.Module):
    """rgb (B, 3, H, W) in [0, 1] -> [stem (1/4), stage 1 (1/4), stage 2 (1/8), stage 3 (1/16)] ResNet features."""

    def __init__(self, resnet: nn.Module, trainable: bool = True) -> None:
        super().__init__()
        self.resnet = resnet
        self.trainable = trainable
        self.resnet.requires_grad_(trainable)
        cfg = resnet.config
        self.channels = cfg.embedding_size + sum(cfg.hidden_sizes[: len(resnet.encoder.stages)])

    def train(self, mode: bool = True) -> SemanticEncoder:
        super().train(mode)
        if not self.trainable:
            self.resnet.eval()  # a frozen trunk keeps its batch-norm statistics
        return self

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        out = self.resnet(pixel_values=normalize_imagenet(rgb), output_hidden_states=True)
        return list(out.hidden_states)


def resize_guidance(features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """The guidance features resized (nearest, as released) to `size` and concatenated."""
    return torch.cat([F.interpolate(f, size=size, mode="nearest") for f in features], dim=1)


class ChannelLayerNorm(nn.Module):
    """Layer norm over channels with a gain only (the RDD block's `LayerNorm`, eps 1e-5)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.g


class RDDBlock(nn.Module):
    """RDD block (released `NAFBlockFusion`): a NAF block with time scale/shift and guidance fused twice."""

    def __init__(self, channels: int, time_dim: int, guidance_channels: int, dw: str = "conv") -> None:
        super().__init__()
        c, dw_ch = channels, 2 * channels
        self.mlp = nn.Sequential(SimpleGate(), nn.Linear(time_dim // 2, 4 * c))
        self.guide = nn.Sequential(nn.Conv2d(guidance_channels, c, 1), nn.LeakyReLU(), nn.Conv2d(c, c, 1))
        self.fusion = nn.Conv2d(2 * c, c, 1)
        self.norm1, self.norm2 = ChannelLayerNorm(c), ChannelLayerNorm(c)
        self.conv1 = nn.Conv2d(c, dw_ch, 1)
        self.conv2 = spatial_layer(dw, dw_ch)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw_ch // 2, dw_ch // 2, 1))
        self.conv3 = nn.Conv2d(dw_ch // 2, c, 1)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor, temb: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        shift_att, scale_att, shift_ffn, scale_ffn = self.mlp(temb)[:, :, None, None].chunk(4, dim=1)
        g = self.guide(guidance)
        x = self.fusion(torch.cat([g, inp], dim=1))
        x = self.norm1(x) * (scale_att + 1) + shift_att
        x = self.sg(self.conv2(self.conv1(x)))
        x = self.conv3(x * self.sca(x))
        x = self.fusion(torch.cat([g, x], dim=1))  # guided again after the channel attention
        y = inp + x * self.beta
        x = self.norm2(y) * (scale_ffn + 1) + shift_ffn
        return y + self.conv5(self.sg(self.conv4(x))) * self.gamma


class ResidualDenoiser(nn.Module):
    """(r_t, t, cond = [pre-deblurred, map], guidance features) -> predicted clean residual r_0, same size as r_t."""

    def __init__(
        self,
        image_channels: int = 3,
        width: int = 64,
        enc_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 14),
        middle_blocks: int = 1,
        dec_blocks: list[int] | tuple[int, ...] = (1, 1, 1, 1),
        guidance_channels: int = 64 + 256 + 512 + 1024,
        enc_dw: list[str] | tuple[str, ...] = ("dcn", "dcn_norm", "dcn_norm", "conv"),
        dec_dw: list[str] | tuple[str, ...] = ("conv", "dcn", "dcn", "dcn_norm"),
    ) -> None:
        super().__init__()
        from diffusers.models.embeddings import Timesteps

        if not len(enc_blocks) == len(dec_blocks) == len(enc_dw) == len(dec_dw):
            raise ValueError("denoiser: enc_blocks, dec_blocks, enc_dw and dec_dw need one entry per level")
        self.image_channels = image_channels
        self.multiple = 2 ** len(enc_blocks)
        time_dim = 4 * width
        self.time_mlp = nn.Sequential(
            Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0.0),
            nn.Linear(width, 2 * time_dim), SimpleGate(), nn.Linear(time_dim, time_dim),
        )
        self.intro = nn.Conv2d(2 * image_channels + 1, width, 3, padding=1)
        self.ending = nn.Conv2d(width, image_channels, 3, padding=1)
        self.encoders, self.downs, self.decoders, self.ups = (nn.ModuleList() for _ in range(4))

        def blocks(n: int, ch: int, dw: str) -> nn.ModuleList:
            return nn.ModuleList(RDDBlock(ch, time_dim, guidance_channels, dw) for _ in range(n))

        ch = width
        for n, dw in zip(enc_blocks, enc_dw):
            self.encoders.append(blocks(n, ch, dw))
            self.downs.append(downsample(ch))
            ch *= 2
        self.middle = blocks(middle_blocks, ch, "conv")
        for n, dw in zip(dec_blocks, dec_dw):
            self.ups.append(upsample(ch))
            ch //= 2
            self.decoders.append(blocks(n, ch, dw))

    @staticmethod
    def _run(blocks: nn.ModuleList, x: torch.Tensor, temb: torch.Tensor, features: list[torch.Tensor],
             resized: dict[tuple[int, int], torch.Tensor]) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        if size not in resized:  # an encoder level and its decoder level share one resized copy
            resized[size] = resize_guidance(features, size)
        for block in blocks:
            x = block(x, temb, resized[size])
        return x

    def forward(self, r_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(torch.cat([cond, r_t], dim=1), self.multiple)
        temb = self.time_mlp(t.to(x.device).expand(x.shape[0]))
        x = first = self.intro(x)
        skips, resized = [], {}
        for enc, down in zip(self.encoders, self.downs):
            x = self._run(enc, x, temb, features, resized)
            skips.append(x)
            x = down(x)
        x = self._run(self.middle, x, temb, features, resized)
        for dec, up, skip in zip(self.decoders, self.ups, reversed(skips)):
            x = self._run(dec, up(x) + skip, temb, features, resized)
        return self.ending(x + first)[..., :h, :w]  # released ending skip from the intro features


def normalize_map(m: torch.Tensor, mode: str, head: str, coc_scale: float) -> torch.Tensor:
    """The estimator's raw map (CoC pixels or blur logit) as RDDM's condition.

    "scale": CoC / coc_scale, or sigmoid of the blur logit (per pixel, the same for any crop or batch);
    "minmax_image": min-max over each image; "minmax_batch": min-max over the whole batch (released
    `max_min_normalize`; the map of an image then depends on the images batched or tiled with it).
    """
    if mode == "scale":
        return m / coc_scale if head == "coc" else torch.sigmoid(m)
    dims = tuple(range(1, m.dim())) if mode == "minmax_image" else tuple(range(m.dim()))
    lo, hi = m.amin(dim=dims, keepdim=True), m.amax(dim=dims, keepdim=True)
    return (m - lo) / (hi - lo).clamp_min(1e-8)  # the guard only keeps a flat map finite


class RDDM(nn.Module):
    """The RDDM pipeline's networks: a frozen defocus-map estimator, the pre-deblur, the semantic encoder
    and the residual denoiser."""

    def __init__(
        self,
        map_estimator: MapEstimator,
        pre_deblur: PreDeblur,
        semantic: SemanticEncoder,
        denoiser: ResidualDenoiser,
        schedule: ResidualSchedule = ResidualSchedule(),
        map_head: str = "coc",
        map_normalize: str = "scale",
        detach_pre: bool = False,
    ) -> None:
        super().__init__()
        if map_head not in MAP_HEADS:
            raise ValueError(f"model.map_head: '{map_head}' is not one of {', '.join(MAP_HEADS)}")
        if map_normalize not in MAP_NORMALIZE:
            raise ValueError(f"model.map_normalize: '{map_normalize}' is not one of {', '.join(MAP_NORMALIZE)}")
        if map_head == "blur" and not getattr(map_estimator, "has_blur_head", False):
            raise ValueError("model.map_head: 'blur' needs an estimator trained with a blur head (model.blur_head: true)")
        self.schedule = schedule
        self.map_head, self.map_normalize, self.detach_pre = map_head, map_normalize, detach_pre
        self.map_estimator = map_estimator
        self.pre_deblur = pre_deblur
        self.semantic = semantic
        self.denoiser = denoiser
        self.map_estimator.requires_grad_(False)
        self.map_estimator.eval()

    def train(self, mode: bool = True) -> RDDM:
        super().train(mode)
        self.map_estimator.eval()  # frozen: never in training mode
        return self

    @torch.no_grad()
    def defocus_map(self, rgb: torch.Tensor) -> torch.Tensor:
        """The estimator's map of `rgb` (B, 1, H, W), normalised as `map_normalize` says."""
        est = self.map_estimator
        raw = est(rgb) if self.map_head == "coc" else est.blur_logit(rgb)
        return normalize_map(raw, self.map_normalize, self.map_head, est.coc_scale)

    def condition(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-deblurred image, cond = [pre, map of the pre-deblurred image]) for a blurred batch."""
        pre = self.pre_deblur(blur, self.defocus_map(blur))
        base = self.residual_base(pre)
        return pre, torch.cat([base, self.defocus_map(base)], dim=1)  # released: the map of the pre-deblurred image

    def residual_base(self, pre: torch.Tensor) -> torch.Tensor:
        """What the residual stage starts from: the pre-deblurred image, cut from its graph with `detach_pre` (the
        pre-deblur then learns from its own loss alone, which the returned `pre` keeps)."""
        return pre.detach() if self.detach_pre else pre

    def forward(
        self, blur: torch.Tensor, sharp: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass (through the module, so DDP sees it): (pre-deblurred, predicted r_0, true r_0).

        As released, r_0 = sharp - pre, the condition and the guidance all keep their graph to the
        pre-deblur, which learns only through the residual loss (`detach_pre` cuts that; the returned `pre` keeps its
        graph for `objective.pre_weight`'s loss).
        """
        pre, cond = self.condition(blur)
        base = self.residual_base(pre)
        r0 = sharp - base
        r_t = q_sample(r0, t, noise, self.schedule)
        return pre, self.denoiser(r_t, t, cond, self.semantic(base)), r0
