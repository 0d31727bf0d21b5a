"""Defocus-map estimator: SegFormer (Xie et al. 2021, MiT-b0 by default) regressing the circle of confusion.

The config is written out in full so nothing is downloaded; `pretrained` (a local folder or a
hub name the user has cached) loads weights with `from_pretrained` instead of the random init.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ImageNet statistics, the normalisation SegFormer and ResNet were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_imagenet(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> ImageNet-normalised input; a single channel is repeated to RGB."""
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


class DefocusMapEstimator(nn.Module):
    """rgb (B, 3, H, W) in [0, 1] -> circle-of-confusion map (B, 1, H, W) in pixels, non-negative.

    SegFormer predicts one channel at 1/4 resolution; it is upsampled bilinearly to the input
    size and mapped to pixels by coc_scale * softplus(logit).
    """

    def __init__(
        self,
        hidden_sizes: list[int] | tuple[int, ...] = (32, 64, 160, 256),
        depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        num_attention_heads: list[int] | tuple[int, ...] = (1, 2, 5, 8),
        sr_ratios: list[int] | tuple[int, ...] = (8, 4, 2, 1),
        decoder_hidden_size: int = 256,
        drop_path_rate: float = 0.1,
        coc_scale: float = 4.0,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        n = len(hidden_sizes)
        if not (len(depths) == len(num_attention_heads) == len(sr_ratios) == n == 4):
            raise ValueError("defocus map: hidden_sizes, depths, num_attention_heads, sr_ratios need 4 entries each")
        self.coc_scale = coc_scale
        # MiT-b0 (SegFormer paper, Table 6) unless the recipe says otherwise.
        config = SegformerConfig(
            num_channels=3,
            num_encoder_blocks=4,
            depths=list(depths),
            sr_ratios=list(sr_ratios),
            hidden_sizes=list(hidden_sizes),
            patch_sizes=[7, 3, 3, 3],
            strides=[4, 2, 2, 2],
            num_attention_heads=list(num_attention_heads),
            mlp_ratios=[4, 4, 4, 4],
            hidden_act="gelu",
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            classifier_dropout_prob=0.0,
            drop_path_rate=drop_path_rate,
            decoder_hidden_size=decoder_hidden_size,
            num_labels=1,
        )
        if pretrained:
            self.segformer = SegformerForSemanticSegmentation.from_pretrained(
                pretrained, config=config, ignore_mismatched_sizes=True
            )
        else:
            self.segformer = SegformerForSemanticSegmentation(config)
        # the coarsest stage divides the input by 32 (4 * 2 * 2 * 2)
        self.multiple = 32

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        h, w = rgb.shape[-2:]
        x = normalize_imagenet(rgb)
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        logits = self.segformer(pixel_values=x).logits  # (B, 1, H/4, W/4)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.coc_scale * F.softplus(logits[..., :h, :w])
