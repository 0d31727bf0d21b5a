"""JDRL (Li et al., "Reblurring-Guided Single Image Defocus Deblurring: A Learning Framework with
Misaligned Training Pairs"; released code liyucs/JDRL): the deblurring network and the reblurring module.

- `DeblurNet`: the released U-Net (models/model_deblur.py `VGG_Deblur`: widths 64 ... 1024, two 3x3 convs
  per level, dropout 0.4 on the two deepest levels, nearest upsampling + 2x2 conv, sigmoid output),
  conditioned on a defocus blur map it predicts itself from the blurry input (the paper's baseline network
  with the blur map as degradation prior). The released file has no map; the estimator and its fusion
  are this port's own: the estimator is the trunk of the released KERNEL_MAP branch (kpn.py) with one
  output, fused by spatial feature modulation (feature * (1 + gamma(map)) + beta(map)) at every level.
- `ReblurModule`: the released models/kpn.py `Reblur_Model`: from concat(deblurred, blurry) one branch
  predicts per-pixel radial profiles (r + 1 values for a kernel of size 2r + 1, sizes 3, 5, ..., 15: 35
  channels) and another a softmax weight map over {identity, 3, 5, ..., 15} (8 channels). Kernels are
  isotropic: the value at offset (dy, dx) interpolates |profile| linearly at distance sqrt(dy^2 + dx^2),
  0 beyond the radius, then a softmax over the K x K entries (released), or a plain division by the sum.
  Each kernel is applied per pixel (replicate padding; the released code pads with zeros, which darkens
  the borders); the weighted sum is the reblurred image. Its blur map is the per-pixel expected
  disc-equivalent kernel radius (see `ReblurModule.forward`).

Per-pixel kernels are applied through "orbit sums": an isotropic kernel takes one value on each set of
offsets {(+-a, +-b), (+-b, +-a)}, so reblurring = sum over orbits of value x (sum of the image over the
orbit). This equals unfolding K x K patches (the reference in tests/test_jdrl.py) with 36 instead of
225 products per pixel for K = 15, and all kernel sizes share the orbit sums.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

KERNEL_NORMS = ("softmax", "sum")


# ------------------------------------------------------------------------------------ isotropic kernels


def orbits(max_radius: int) -> list[tuple[int, int]]:
    """Offset orbits (a, b), 0 <= a <= b <= max_radius, ordered by b then a: those of radius r come first."""
    return [(a, b) for b in range(max_radius + 1) for a in range(b + 1)]


def orbit_offsets(a: int, b: int) -> set[tuple[int, int]]:
    """The offsets (dy, dx) of orbit (a, b): every sign and order of (a, b)."""
    return {(sy * p, sx * q) for p, q in ((a, b), (b, a)) for sy in (1, -1) for sx in (1, -1)}


def n_orbits(radius: int) -> int:
    """How many orbits a kernel of this radius (size 2 radius + 1) holds."""
    return (radius + 1) * (radius + 2) // 2


@lru_cache(maxsize=None)
def orbit_stats(radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(orbit sizes, squared distances) of the orbits of a kernel of this radius (cached; do not modify)."""
    counts = torch.tensor([float(len(orbit_offsets(a, b))) for a, b in orbits(radius)])
    sq = torch.tensor([float(a * a + b * b) for a, b in orbits(radius)])
    return counts, sq


@lru_cache(maxsize=None)
def interpolation_matrix(radius: int) -> torch.Tensor:
    """(orbits, radius + 1): kernel value per orbit = M @ |profile| (linear in the distance, 0 beyond radius)."""
    m = torch.zeros(n_orbits(radius), radius + 1, dtype=torch.float64)
    for o, (a, b) in enumerate(orbits(radius)):
        d = math.hypot(a, b)
        if d > radius:  # in the K x K square but outside the disc: value 0 (kpn.py _list_core)
            continue
        lo = math.floor(d)
        frac = d - lo
        m[o, lo] += 1.0 - frac
        if frac > 0:
            m[o, lo + 1] += frac
    return m.float()


def orbit_values(profile: torch.Tensor, norm: str = "softmax") -> torch.Tensor:
    """Per-pixel radial profiles (B, r + 1, H, W) -> normalised kernel value per orbit (B, orbits(r), H, W).

    Normalised so that sum over offsets = sum over orbits of (orbit size x value) = 1.
    """
    if norm not in KERNEL_NORMS:
        raise ValueError(f"kernel norm '{norm}' is not one of {', '.join(KERNEL_NORMS)}")
    radius = profile.shape[1] - 1
    m = interpolation_matrix(radius).to(profile)
    counts = orbit_stats(radius)[0].to(profile).view(1, -1, 1, 1)
    v = torch.einsum("op,bphw->bohw", m, profile.abs())  # |profile| interpolated at each orbit's distance
    if norm == "softmax":  # softmax over the K x K entries (kpn.py _list_core)
        return torch.exp(v - torch.logsumexp(v + counts.log(), dim=1, keepdim=True))
    return v / ((v * counts).sum(1, keepdim=True) + 1e-8)


def disc_radius(values: torch.Tensor) -> torch.Tensor:
    """Per-orbit kernel values (B, orbits(r), H, W) -> (B, 1, H, W) disc-equivalent radius in pixels,
    sqrt(2 E[d^2]): a uniform disc of radius R has E[d^2] = R^2 / 2."""
    radius = round((math.sqrt(8 * values.shape[1] + 1) - 3) / 2)  # orbits(r) = (r + 1)(r + 2) / 2
    counts, sq = (t.to(values) for t in orbit_stats(radius))
    m2 = (values * (counts * sq).view(1, -1, 1, 1)).sum(1, keepdim=True)  # E[d^2] = sum_offsets k d^2
    return torch.sqrt(2.0 * m2.clamp_min(1e-12))


def orbit_filters(max_radius: int) -> torch.Tensor:
    """(orbits, 1, K, K) indicator filters: conv with filter o sums the image over orbit o."""
    size = 2 * max_radius + 1
    filt = torch.zeros(n_orbits(max_radius), 1, size, size)
    for o, (a, b) in enumerate(orbits(max_radius)):
        for dy, dx in orbit_offsets(a, b):
            filt[o, 0, dy + max_radius, dx + max_radius] = 1.0
    return filt


# ------------------------------------------------------------------------------------------- blocks


class ResidualBlock(nn.Module):
    """conv 3x3 - ReLU - conv 3x3 plus identity, no normalisation (released utils/arch_util.py)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def trunk(in_ch: int, channels: int, blocks: int, out_ch: int) -> nn.Sequential:
    """conv 3x3, `blocks` residual blocks, conv 3x3 to `out_ch` (the released KPN / KERNEL_MAP branches)."""
    return nn.Sequential(nn.Conv2d(in_ch, channels, 3, padding=1), *[ResidualBlock(channels) for _ in range(blocks)],
                         nn.Conv2d(channels, out_ch, 3, padding=1))


class ReblurModule(nn.Module):
    """Reblurs a deblurred image towards the blurry input with per-pixel isotropic kernels (released kpn.py)."""

    def __init__(self, image_channels: int = 3, channels: int = 64, blocks: int = 3,
                 kernel_sizes: list[int] | tuple[int, ...] = (3, 5, 7, 9, 11, 13, 15), norm: str = "softmax") -> None:
        super().__init__()
        sizes = list(kernel_sizes)
        if not sizes or any(k < 3 or k % 2 == 0 for k in sizes) or sizes != sorted(set(sizes)):
            raise ValueError(f"kernel_sizes must be increasing odd sizes >= 3, got {sizes}")
        if norm not in KERNEL_NORMS:
            raise ValueError(f"kernel norm '{norm}' is not one of {', '.join(KERNEL_NORMS)}")
        self.radii = [k // 2 for k in sizes]
        self.norm = norm
        self.kernel = trunk(2 * image_channels, channels, blocks, sum(r + 1 for r in self.radii))  # 35 for 3..15
        self.weights = trunk(2 * image_channels, channels, blocks, 1 + len(sizes))  # identity + each size
        for m in self.modules():  # Reblur_Model._init_weights: xavier normal, zero bias, over every conv
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.register_buffer("filters", orbit_filters(self.radii[-1]), persistent=False)

    def forward(self, deblurred: torch.Tensor, blurry: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reblurred image, blur map): the map is the expected disc-equivalent kernel radius in pixels,
        sum_K w_K sqrt(2 sum_offsets k_K(d) d^2) (a uniform disc of radius R has E[d^2] = R^2 / 2;
        the identity branch has radius 0)."""
        x = torch.cat([deblurred, blurry], dim=1)  # est_input = cat(im_s, im_b) (kpn.py)
        profiles = torch.split(self.kernel(x), [r + 1 for r in self.radii], dim=1)
        w = torch.softmax(self.weights(x), dim=1)  # KERNEL_MAP: softmax over identity + kernel sizes
        b, c, h, wd = deblurred.shape
        rmax = self.radii[-1]
        padded = F.pad(deblurred, (rmax,) * 4, mode="replicate").reshape(b * c, 1, h + 2 * rmax, wd + 2 * rmax)
        filters = self.filters.to(deblurred.dtype)  # depthwise over copies: 4x faster backward on a CPU than 1 -> O
        sums = F.conv2d(padded.expand(-1, filters.shape[0], -1, -1), filters, groups=filters.shape[0])
        sums = sums.view(b, c, -1, h, wd)  # the image summed per orbit
        out = w[:, :1] * deblurred  # map0 * im_s (the identity branch)
        radius = torch.zeros_like(w[:, :1])
        for i, (r, p) in enumerate(zip(self.radii, profiles), start=1):
            k = orbit_values(p, self.norm)  # (B, orbits(r), H, W)
            out = out + w[:, i : i + 1] * (k.unsqueeze(1) * sums[:, :, : k.shape[1]]).sum(2)
            radius = radius + w[:, i : i + 1] * disc_radius(k)
        return out, radius


# ---------------------------------------------------------------------------------- deblurring net


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True))


class UpConv(nn.Module):
    """Nearest 2x upsampling and a 2x2 conv with TF-style 'same' padding (bottom/right), as model_deblur.py."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (0, 1, 0, 1)))


class MapFusion(nn.Module):
    """Spatial feature modulation by the blur map: feature * (1 + gamma) + beta; starts as the identity."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, 2 * channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, feature: torch.Tensor, blur_map: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.body(blur_map).chunk(2, dim=1)
        return feature * (1.0 + gamma) + beta


class DeblurNet(nn.Module):
    """The released U-Net deblurring network with a self-predicted blur map as degradation prior.

    forward(blur) -> (sharp estimate (in [0, 1] as released; blur + a correction with `global_residual`),
    blur map (B, 1, H, W) in pixels of kernel radius, None without `blur_map`);
    any size in (replicate-padded to a multiple of 2**(levels - 1), cropped back).
    `blur_map=False, global_residual=False` is the released VGG_Deblur, layer for layer (what imported
    checkpoints of liyucs/JDRL build).
    """

    def __init__(self, image_channels: int = 3, widths: list[int] | tuple[int, ...] = (64, 128, 256, 512, 1024),
                 dropout: float = 0.4, dropout_levels: int = 2, map_channels: int = 64, map_blocks: int = 3,
                 fusion_channels: int = 64, global_residual: bool = False, blur_map: bool = True) -> None:
        super().__init__()
        self.global_residual = global_residual
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"DeblurNet needs at least two levels, got widths {widths}")
        self.in_ch = image_channels
        self.multiple = 2 ** (len(widths) - 1)
        self.estimator = trunk(image_channels, map_channels, map_blocks, 1) if blur_map else None
        self.encoders = nn.ModuleList()
        self.fusions = nn.ModuleList() if blur_map else None
        self.drops = nn.ModuleList()
        ch = image_channels
        for i, width in enumerate(widths):
            self.encoders.append(_double_conv(ch, width))
            if self.fusions is not None:
                self.fusions.append(MapFusion(width, fusion_channels))
            deep = i >= len(widths) - dropout_levels  # drop4, drop5 in model_deblur.py
            self.drops.append(nn.Dropout(dropout) if deep and dropout > 0 else nn.Identity())
            ch = width
        self.ups = nn.ModuleList(UpConv(widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.decoders = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], image_channels, 3, padding=1)
        for name, m in self.named_modules():  # VGG_Deblur.__init_weight: kaiming normal, fan_out, relu
            if isinstance(m, nn.Conv2d) and not name.startswith(("fusions", "estimator")):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if global_residual:  # the output is blur + a correction that starts at zero: the untrained net is the identity
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def estimate_map(self, blur: torch.Tensor) -> torch.Tensor:
        """The blur map (B, 1, H, W), kernel radius in pixels (>= 0), predicted from the blurry image."""
        if self.estimator is None:
            raise ValueError("this JDRL network has no blur-map estimator (model.blur_map: false)")
        return F.softplus(self.estimator(blur))

    def forward(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, w = blur.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(blur, (0, pw, 0, ph), mode="replicate") if ph or pw else blur
        blur_map = self.estimate_map(x) if self.estimator is not None else None
        skips = []
        for i, (enc, drop) in enumerate(zip(self.encoders, self.drops)):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            if blur_map is not None and self.fusions is not None:
                x = self.fusions[i](x, F.avg_pool2d(blur_map, 2**i) if i > 0 else blur_map)
            x = drop(x)
            skips.append(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], dim=1))
        if self.global_residual:
            out = F.pad(blur, (0, pw, 0, ph), mode="replicate") + self.out(x) if ph or pw else blur + self.out(x)
        else:
            out = torch.sigmoid(self.out(x))  # model_deblur.py returns sigmoid(out)
        return out[..., :h, :w], blur_map[..., :h, :w] if blur_map is not None else None


# ------------------------------------------------------------------------------------------- JDRL


def _flow(target: torch.Tensor, moving: torch.Tensor, preset: str, aligned: torch.Tensor | None) -> torch.Tensor:
    """Dense flow with moving(x + flow) ~ target(x); zero, and not estimated, for the samples flagged aligned."""
    from defocuskit.imaging.flow import estimate_flow

    if aligned is None or not bool(aligned.any()):
        return estimate_flow(target, moving, preset)
    flow = target.new_zeros(target.shape[0], 2, *target.shape[2:])
    todo = (~aligned.bool()).nonzero().flatten()
    if len(todo):
        flow[todo] = estimate_flow(target[todo], moving[todo], preset)
    return flow


def _warp(moving: torch.Tensor, flow: torch.Tensor, aligned: torch.Tensor | None) -> torch.Tensor:
    """`moving` warped by `flow`; the samples flagged aligned are `moving` itself, not resampled."""
    from defocuskit.imaging.flow import backward_warp

    if aligned is None:
        return backward_warp(moving, flow)
    keep = aligned.bool().to(moving.device)
    if bool(keep.all()):  # a batch of renders: nothing to resample
        return moving
    return torch.where(keep.view(-1, 1, 1, 1), moving, backward_warp(moving, flow))


class JDRL(nn.Module):
    """Deblurring net + reblurring module + a training-step counter (a buffer: saved in checkpoints and EMA).

    forward(blur) is the deblurring pass (sharp estimate, blur map); `training_pass` is what the loss needs.
    """

    def __init__(self, deblur: DeblurNet, reblur: ReblurModule) -> None:
        super().__init__()
        self.deblur = deblur
        self.reblur = reblur
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, blur: torch.Tensor, sharp: torch.Tensor | None = None, reblur_stage: bool = False,
                flow_preset: str = "medium", fb_check: bool = True, aligned: torch.Tensor | None = None,
                reblur_detached: bool = False) -> dict[str, torch.Tensor]:
        """Deblur `blur`; with `sharp`, also everything the JDRL loss compares (one call, so that a
        DistributedDataParallel wrapper sees one forward per backward).

        Stage 1 (reblur_stage False): "target" = sharp warped onto the blurry input's grid.
        Stage 2: "target" = sharp warped onto the output's grid with its validity "mask", "output_on_sharp"
        = output warped onto the sharp image's grid with "mask_back", "reblurred" and "reblur_map".
        "ghost" is 0 x (sum of the parameters not used in this stage), so that all get gradients.
        The samples flagged in `aligned` ((B,) bool) are pixel-aligned: no flow is estimated for them, their
        warps are the identity and their masks 1. `reblur_detached`: the reblurring module reblurs the output
        detached from the deblurring net (the reblur loss then trains the module alone).
        """
        from defocuskit.imaging.flow import valid_mask

        output, blur_map = self.deblur(blur)
        result = {"output": output, "map": blur_map}
        if sharp is None:
            return result
        if not reblur_stage:  # solver.py, epoch < 15: get_backwarp(im_b, im_gt): gt onto the blurry grid
            result["target"] = _warp(sharp, _flow(blur, sharp, flow_preset, aligned), aligned)
            result["ghost"] = sum(p.sum() for p in self.reblur.parameters()) * 0.0
            return result
        # solver.py, epoch >= 15: gt onto the output (flow) and the output onto gt (flow_), masked
        flow = _flow(output, sharp, flow_preset, aligned)
        flow_back = _flow(sharp, output, flow_preset, aligned)
        result["target"] = _warp(sharp, flow, aligned)
        result["output_on_sharp"] = _warp(output, flow_back, aligned)
        result["mask"] = valid_mask(flow, flow_back if fb_check else None)
        result["mask_back"] = valid_mask(flow_back, flow if fb_check else None)
        reblur_in = output.detach() if reblur_detached else output
        result["reblurred"], result["reblur_map"] = self.reblur(reblur_in, blur)  # reblur_model(output, im_b)
        return result

    @torch.no_grad()
    def pseudo_map(self, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(deblurred image, the reblurring module's blur map in pixels of kernel radius) for a blurry batch."""
        output, _ = self.deblur(blur)
        _, radius = self.reblur(output, blur)
        return output, radius
