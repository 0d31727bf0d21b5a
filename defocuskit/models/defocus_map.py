"""Defocus-map estimator: SegFormer (Xie et al. 2021) regressing the circle of confusion, optionally
with a second output channel that detects blur (as RDDM's released SegFormer, trained on binary blur maps).

The config is written out in full, so a random init downloads nothing. `pretrained` loads ImageNet (or
any SegFormer) ENCODER weights over it: a Hugging Face model id (e.g. "nvidia/mit-b1", fetched and cached
by transformers' `from_pretrained`), a local folder written by `save_pretrained`, or a local
`.safetensors` SegFormer state dict. The decode head stays random. Shapes must fit the recipe exactly.
"""

from __future__ import annotations

import abc
import re

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.pretrained import read_pretrained

# ImageNet statistics, the normalisation SegFormer and ResNet were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("coc", "blur_logit", "maps")


def normalize_imagenet(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> ImageNet-normalised input; a single channel is repeated to RGB."""
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


# transformers 5 renamed SegFormer's encoder weights (transformers/conversion_mapping.py, "SegformerModel");
# checkpoints on the hub and files of transformers 4 use the old names. Both map to the new ones here.
_RENAMES = (
    (r"^encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"^encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"^encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.sr\.", "attention.sequence_reduction.sequence_reduction."),
    (r"attention\.self\.layer_norm\.", "attention.sequence_reduction.layer_norm."),
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"mlp\.dense1\.", "mlp.fc1."),
    (r"mlp\.dense2\.", "mlp.fc2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
)


def encoder_key(key: str) -> str | None:
    """A SegFormer weight name in today's encoder naming ("stages.0.blocks.0.attention.q_proj.weight"), without
    the "segformer." prefixes of the task models (or of this estimator); None for a non-encoder weight."""
    while key.startswith("segformer."):
        key = key[len("segformer."):]
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key if key.startswith("stages.") else None


def _read_pretrained(pretrained: str) -> dict[str, torch.Tensor]:
    """The encoder weights that `pretrained` names, keyed by `encoder_key`."""
    from transformers import SegformerModel

    state = read_pretrained(pretrained, SegformerModel)
    return {k: v for key, v in state.items() if (k := encoder_key(key)) is not None}


class MapEstimator(nn.Module, abc.ABC):
    """What every defocus-map network shares: rgb (B, 3, H, W) in [0, 1] -> CoC map (B, 1, H, W) in pixels,
    coc_scale * softplus(channel 0); with `has_blur_head`, channel 1 is a blur-detection logit (sigmoid:
    probability that the pixel is out of focus). A network implements `logits(rgb, channels)` at the input size."""

    coc_scale: float
    has_blur_head: bool

    @abc.abstractmethod
    def logits(self, rgb: torch.Tensor, channels: slice) -> torch.Tensor:
        """The raw output channels `channels` (B, n, H, W) of the network at the input size."""

    def forward(self, rgb: torch.Tensor, output: str = "coc") -> torch.Tensor | dict[str, torch.Tensor]:
        """The CoC map (B, 1, H, W) in pixels; `output="blur_logit"` the blur logit, `"maps"` both as in `maps`.

        (Everything goes through forward so that a DistributedDataParallel wrapper sees every pass.)"""
        if output not in OUTPUTS:
            raise ValueError(f"defocus map: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if output != "coc" and not self.has_blur_head:
            if output == "maps":
                return {"coc": self(rgb)}
            raise ValueError("defocus map: this model has no blur head (train it with model.blur_head: true)")
        if output == "blur_logit":
            return self.logits(rgb, slice(1, 2))
        logits = self.logits(rgb, slice(0, 1) if output == "coc" else slice(0, 2))
        coc = self.coc_scale * F.softplus(logits[:, :1])
        return coc if output == "coc" else {"coc": coc, "blur_logit": logits[:, 1:2]}

    def blur_logit(self, rgb: torch.Tensor) -> torch.Tensor:
        """The blur-detection logit (B, 1, H, W) at the input size (sigmoid > 0.5: out of focus).
        A ValueError if the model has no blur head."""
        return self(rgb, output="blur_logit")

    def maps(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"coc": (B, 1, H, W) pixels, "blur_logit": (B, 1, H, W) (only with the blur head)}, from ONE pass."""
        return self(rgb, output="maps")


class DefocusMapEstimator(MapEstimator):
    """rgb (B, 3, H, W) in [0, 1] -> circle-of-confusion map (B, 1, H, W) in pixels, non-negative.

    SegFormer predicts its channels at 1/4 resolution; they are upsampled bilinearly to the input size.
    Channel 0 is mapped to pixels by coc_scale * softplus(logit). With `blur_head`, channel 1 is a blur
    detection logit (sigmoid: probability that the pixel is out of focus), read by `blur_logit` / `maps`.
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
        blur_head: bool = False,
        classifier_dropout_prob: float = 0.0,
    ) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        n = len(hidden_sizes)
        if not (len(depths) == len(num_attention_heads) == len(sr_ratios) == n == 4):
            raise ValueError("defocus map: hidden_sizes, depths, num_attention_heads, sr_ratios need 4 entries each")
        self.coc_scale = coc_scale
        self.has_blur_head = bool(blur_head)
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
            classifier_dropout_prob=classifier_dropout_prob,
            drop_path_rate=drop_path_rate,
            decoder_hidden_size=decoder_hidden_size,
            layer_norm_eps=1e-6,
            num_labels=2 if blur_head else 1,
        )
        self.segformer = SegformerForSemanticSegmentation(config)
        if pretrained:
            self.load_pretrained(pretrained)
        # the coarsest stage divides the input by 32 (4 * 2 * 2 * 2)
        self.multiple = 32

    def load_pretrained(self, pretrained: str) -> None:
        """Load the encoder weights `pretrained` names (hub id, save_pretrained folder or .safetensors);
        the decode head stays as it is. A ValueError naming `model.pretrained` when they cannot be used."""
        try:
            state = _read_pretrained(str(pretrained))
            encoder = self.segformer.segformer
            own_state = encoder.state_dict()
            own = {encoder_key(k): k for k in own_state}
            if not any(k in own for k in state):
                raise ValueError("no SegFormer encoder weight in it")
            bad = [k for k in state if k in own and state[k].shape != own_state[own[k]].shape]
            if bad:
                k = bad[0]
                raise ValueError(f"{len(bad)} weight(s) do not fit the recipe's model.hidden_sizes / "
                                 f"num_attention_heads, e.g. {k}: {tuple(state[k].shape)} in the file, "
                                 f"{tuple(own_state[own[k]].shape)} here")
            missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            if missing or extra:
                raise ValueError(f"the encoder does not fit the recipe's model.depths: {len(missing)} weight(s) "
                                 f"missing (e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})")
            encoder.load_state_dict({own[k]: v for k, v in state.items()}, strict=True)
        except ValueError as e:
            raise ValueError(
                f"model.pretrained: cannot load '{pretrained}': {e}. Use a local copy (a folder written by "
                "save_pretrained, or a .safetensors SegFormer state dict) or set model.pretrained: null for a "
                "random init"
            ) from None

    def logits(self, rgb: torch.Tensor, channels: slice) -> torch.Tensor:
        """SegFormer's output `channels` at 1/4 resolution, upsampled bilinearly to the input size."""
        h, w = rgb.shape[-2:]
        x = normalize_imagenet(rgb)
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        logits = self.segformer(pixel_values=x).logits[:, channels]  # (B, labels, H/4, W/4)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
