"""IFAN (Lee, Son, Rim, Cho and Lee, "Iterative Filter Adaptive Network for Single Image Defocus Deblurring", CVPR
2021; released code codeslake/IFAN, models/archs/IFAN.py and models/archs/RBN.py), written for defocuskit.

`IFAN` is the released single-image network (`Network`), widths ch, 2ch, 4ch, 4ch (ch = 32):

- feature extractor: four levels of three 3x3 conv-LeakyReLU (the first of levels 2-4 with stride 2), f1 ... f4;
- filter encoder: the same layout on the same input, then the disparity map estimator (DME: conv, two residual
  blocks, a 3x3 conv to ONE channel: a defocus disparity map at 1/8 resolution), embedded by a 3x3 conv and
  concatenated to the encoder's features; conv, two residual blocks, conv; then the filter predictor (conv, two
  residual blocks, a 1x1 conv to N x 4ch x (2k + 1) channels: N iterations of two 1-D kernels of size k and a bias
  per channel and pixel);
- IAC: the iterative adaptive convolution of f4 with those filters (`filter_layers.iac`);
- reconstructor: conv, a 3-unit residual block, conv; three transposed-conv upsamplings, each added to the
  extractor's skip and followed by two residual blocks; a 3x3 conv-LeakyReLU and the input added (global residual).

`ReblurNet` is the released reblurring network (RBN.py), a training-only auxiliary: from the predicted filters it
predicts reblurring filters (conv, two residual blocks, conv to N' x 3 x (2k' + 1)) that blur the SHARP image
(nearest-downsampled to 1/8) towards the blurred one (area-downsampled), through the same IAC (no activation after
the last iteration) and a residual. The release's third branch, the DME's dual-pixel supervision, is
`disparity_warp`: the DME's disparity map of the right view shifts that view (area-downsampled to 1/8) along
its rows onto the left view (methods/ifan.py, where the shards carry DPDD's dual-pixel views).

Parameter names follow the release where the structure is the same (`stem` of the residual blocks, `.0.` of a
conv-activation pair); levels are lists here (`encoder`, `filter_encoder`, `ups`, `decoders`): methods/ifan.py maps
the release's names onto these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from defocuskit.models.filter_layers import ResBlock, conv, conv_act, iac, iac_channels, upconv

# xavier_uniform gains of the release's init (configs/config_IFAN.py: wi 1.0, wiF 1.5, wiRF 1.0), biases 0
INIT_GAIN, FILTER_GAIN, REBLUR_GAIN = 1.0, 1.5, 1.0


def _levels(channels: int, widths: list[int]) -> nn.ModuleList:
    """Four levels of three conv-LeakyReLU; the first conv of every level but the first has stride 2."""
    ins = [channels, *widths[:-1]]
    return nn.ModuleList(nn.Sequential(conv_act(ins[i], widths[i], 3, 1 if i == 0 else 2),
                                       conv_act(widths[i], widths[i]), conv_act(widths[i], widths[i]))
                         for i in range(len(widths)))


def _head(in_ch: int, width: int, out_ch: int, res_blocks: int, out_kernel: int, act_last: bool = False
          ) -> nn.Sequential:
    """conv-LeakyReLU to `width`, two residual blocks of `res_blocks` units, a conv to `out_ch` (activated only
    where `act_last`): IFAN's DME, filter predictor, fusion and RBN layout."""
    last = conv_act(width, out_ch, out_kernel) if act_last else conv(width, out_ch, out_kernel)
    return nn.Sequential(conv_act(in_ch, width), ResBlock(width, res_blocks), ResBlock(width, res_blocks), last)


def xavier_init(module: nn.Module, gain: float) -> None:
    """The release's weights_init: xavier_uniform_ with `gain` on every (transposed) convolution, biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def disparity_warp(image: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
    """`image` (B, C, h, w) sampled at (x + disparity, y), bilinear, zero outside: the release's DPD
    (models/utils.py: grid_sample, align_corners=True, padding 'zeros'); disparity (B, 1, h, w) in pixels."""
    b, _, h, w = image.shape
    xs = torch.linspace(-1.0, 1.0, w, device=image.device, dtype=image.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=image.device, dtype=image.dtype).view(1, h, 1).expand(b, h, w)
    shift = disparity[:, 0] / ((w - 1) / 2.0) if w > 1 else torch.zeros_like(disparity[:, 0])
    grid = torch.stack([xs + shift, ys], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class ReblurNet(nn.Module):
    """RBN: reblurs the sharp image at 1/8 resolution with filters predicted from the deblurring filters.

    forward(sharp (B, C, H, W), filters (B, filter_channels, H/8, W/8)) -> (B, C, H/8, W/8)."""

    def __init__(self, filter_channels: int, width: int, channels: int = 3, res_blocks: int = 2,
                 iterations: int = 17, k: int = 3, second_kernel: bool = True) -> None:
        super().__init__()
        self.iterations, self.k, self.second_kernel = iterations, k, second_kernel
        self.body = _head(filter_channels, width, iac_channels(iterations, channels, k), res_blocks, 3)

    def forward(self, sharp: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        small = F.interpolate(sharp, scale_factor=1 / 8)  # RBN.py: nearest, the default mode
        reblurred = iac(small, self.body(filters), self.iterations, self.k, act_last=False,
                        second_kernel=self.second_kernel)
        return reblurred + small


class IFAN(nn.Module):
    """The released single-image IFAN (see the module docstring); `reblur` adds the training-only RBN.

    forward(x) -> (B, C, H, W), H and W multiples of 8 (three stride-2 levels), the input plus a correction,
    unclipped. `deblur_with_filters(x)` -> (that, the predicted IAC filters) for the reblurring loss.
    """

    multiple = 8

    def __init__(self, channels: int = 3, width: int = 32, res_blocks: int = 2, iterations: int = 17, k: int = 3,
                 second_kernel: bool = True, reblur: bool = True, reblur_iterations: int = 17, reblur_k: int = 3,
                 ) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 4 * width]  # ch1 ... ch4 of IFAN.py
        deep = widths[-1]
        self.iterations, self.k, self.second_kernel = iterations, k, second_kernel
        self.filter_channels = iac_channels(iterations, deep, k)  # IFAN.py kernel_dim
        self.encoder = _levels(channels, widths)
        self.filter_encoder = _levels(channels, widths)
        self.dme = _head(deep, deep, 1, res_blocks, 3)
        self.dm_embed = conv_act(1, deep)  # conv_DME
        self.fuse = _head(2 * deep, deep, deep, res_blocks, 3, act_last=True)  # conv4_4
        self.filter_predictor = _head(deep, deep, self.filter_channels, res_blocks, 1)  # F
        self.reconstructor = nn.Sequential(conv_act(deep, deep), ResBlock(deep, 3), conv_act(deep, deep))  # conv_res
        self.ups = nn.ModuleList(upconv(widths[i + 1], widths[i]) for i in (2, 1, 0))
        self.decoders = nn.ModuleList(nn.Sequential(ResBlock(widths[i]), ResBlock(widths[i])) for i in (2, 1, 0))
        self.out = conv_act(width, channels)  # out_res: conv with its default LeakyReLU, then + input
        self.reblur = ReblurNet(self.filter_channels, deep, channels, res_blocks, reblur_iterations, reblur_k,
                                second_kernel) if reblur else None
        self.init_weights()

    def init_weights(self) -> None:
        """The release's init: xavier_uniform (gain 1) everywhere, the filter predictor's gain 1.5, biases 0."""
        xavier_init(self, INIT_GAIN)
        xavier_init(self.filter_predictor, FILTER_GAIN)
        if self.reblur is not None:
            xavier_init(self.reblur, REBLUR_GAIN)

    def disparity(self, x: torch.Tensor) -> torch.Tensor:
        """The DME's defocus disparity map of x at 1/8 resolution (B, 1, H/8, W/8)."""
        return self.dme(self._filter_features(x))

    def _filter_features(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.filter_encoder:
            x = level(x)
        return x

    def deblur_with_filters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the restored image, unclipped; the IAC filters at 1/8 resolution)."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"IFAN needs H and W to be multiples of {self.multiple}, got {h}x{w}")
        skips = []
        f = x
        for level in self.encoder:
            f = level(f)
            skips.append(f)
        g = self._filter_features(x)
        g = self.fuse(torch.cat([g, self.dm_embed(self.dme(g))], dim=1))
        filters = self.filter_predictor(g)
        f = iac(skips.pop(), filters, self.iterations, self.k, second_kernel=self.second_kernel)
        f = self.reconstructor(f)
        for up, dec in zip(self.ups, self.decoders):
            f = dec(up(f) + skips.pop())
        return self.out(f) + x, filters

    def forward(self, x: torch.Tensor, sharp: torch.Tensor | None = None,
                right: torch.Tensor | None = None) -> torch.Tensor | dict[str, torch.Tensor | None]:
        """x -> the restored image. With `sharp` or `right` (training: the loss runs the network through this
        forward, so that DistributedDataParallel averages the processes' gradients) a dict: "output", "reblurred"
        (the RBN's reblur of `sharp` with x's filters; None without the RBN) and "disparity" (the DME's map of the
        right view `right`, or None)."""
        out, filters = self.deblur_with_filters(x)
        if sharp is None and right is None:
            return out
        reblurred = self.reblur(sharp, filters) if sharp is not None and self.reblur is not None else None
        disparity = self.disparity(right) if right is not None else None
        return {"output": out, "reblurred": reblurred, "disparity": disparity}
