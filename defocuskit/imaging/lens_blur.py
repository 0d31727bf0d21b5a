"""The thin-lens defocus forward model y = K_c x in torch: a spatially varying disc blur, layered by CoC.

K_c is built from a per-pixel circle-of-confusion diameter c (pixels). The map is split into depth
layers by CoC (soft assignment between neighbouring levels, as the synthetic renderer does), and
every model here has the layered form

    K x = sum_k P_k * (d_k conv (Q_k * x))      (d_k the disc PSF of level k, zero padding; `psf="gaussian"`:
                                                the Gaussian of the disc's second moment, optics.defocus_psf)

which is linear in x, so its adjoint is K^T y = sum_k Q_k * (d_k conv (P_k * y)) (the discs are
symmetric). The three models differ only in P and Q:

- `over` (default): occlusion-aware compositing. Each layer's colour and its alpha are blurred by
  its own disc and layers are composited back to front with the "over" operator, then divided by
  the accumulated alpha (Porter & Duff; Hasinoff & Kutulakos; the renderer in data/render.py).
  The depth order comes from the CoC's sign: a signed map (negative in front of the focal plane,
  positive behind it, as the renderer and cocsign.png record it) is monotone in depth, so layers
  are ordered by signed CoC and each blurred by the disc of |CoC|; this is right for focus in front
  of and behind a foreground. An unsigned map (all >= 0, e.g. from an estimator that cannot tell the
  sides apart) is read as "larger is farther", which holds when the focus is on the nearest subject.
- `scatter`: every pixel spreads its light over its own disc, normalised so that K 1 = 1.
- `gather`: every pixel averages the image over its own disc (the part of it inside the image).

Images are (B, C, H, W); the map is (B, 1, H, W), diameters in pixels, signed or not. `prox` solves min ||K x - y||^2 + rho ||x - x0||^2
by conjugate gradients.

Applying K (`fast`, the default) touches only the (image, layer) pairs whose P_k and Q_k are both non-zero
somewhere (a tile holds a few of the batch's depth layers), applies a layer whose disc is a delta (CoC <= 1 px,
the in-focus layer) as the product P_k Q_k x without a transform, and filters the rest by FFTs of the
smallest 2^a 3^b size >= H + r (zero padding at the end: a circular convolution of that length is the
linear one on the image), or by a depthwise convolution where that is faster (small discs on small
images); the same sum as the dense form (`fast=False`, every layer, FFTs of H + 2r),
term for term, up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from defocuskit.imaging.optics import PSF_SHAPES, defocus_psf, layer_grid

MODELS = ("over", "scatter", "gather")
LEVEL_SPACING_PX = 0.25  # the finest CoC step between layers, as the renderer
_EPS = 1e-6


DIRECT_MAX_DISC, DIRECT_MAX_PIXELS = 11, 128 * 128  # the fast form's depthwise convolution: discs, image size


def _smooth(n: int) -> int:
    """The smallest integer >= n of the form 2^a 3^b (sizes whose FFTs are fastest here)."""
    while True:
        m = n
        for p in (2, 3):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB decoding of x clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB encoding of x clamped to [0, 1]."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def coc_levels(coc: torch.Tensor, n_levels: int) -> torch.Tensor:
    """The (signed) CoC values (pixels) of the layers: evenly spaced over the map's range, at most `n_levels`, and
    CoC 0 as one more where the map lies on both sides of the focal plane without a level there (`optics.layer_grid`):
    else its in-focus pixels were shared between a front and a back level (+-1.5 px on a -16..16 px map in 12
    levels) and blurred by their discs."""
    lo, hi = float(coc.min()), float(coc.max())
    if hi - lo < 1e-3:
        return torch.tensor([0.5 * (lo + hi)], dtype=torch.float64)
    n = max(2, int(min(n_levels, math.ceil((hi - lo) / LEVEL_SPACING_PX) + 1)))
    return torch.from_numpy(layer_grid(lo, hi, n))


def layer_weights(coc: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(B, L, H, W) soft layer membership: linear interpolation between the two levels around each pixel's CoC."""
    if len(levels) == 1:
        return torch.ones_like(coc)
    n = len(levels)
    i0 = torch.bucketize(coc, levels[1:-1].contiguous(), right=True)  # the lower level: 0 .. n - 2
    lower, upper = levels[i0], levels[i0 + 1]
    frac = (coc - lower) / (upper - lower)
    k = torch.arange(n, device=coc.device)[None, :, None, None]
    return torch.where(i0 == k, 1.0 - frac, 0.0) + torch.where(i0 + 1 == k, frac, 0.0)


class DefocusOperator:
    """K_c for one batch of CoC maps (B, 1, H, W), signed (depth order known) or >= 0 (larger = farther):
    `forward` blurs, `adjoint` applies K^T, `prox` inverts; `fast=False` applies the dense reference form; `psf`
    "gaussian" blurs each layer by the Gaussian of its disc's second moment instead of the disc (optics.PSF_SHAPES)."""

    def __init__(self, coc: torch.Tensor, model: str = "over", n_levels: int = 12, fast: bool = True,
                 psf: str = "disc"):
        if coc.dim() != 4 or coc.shape[1] != 1:
            raise ValueError(f"DefocusOperator: expected a CoC map (B, 1, H, W), got shape {tuple(coc.shape)}")
        if model not in MODELS:
            raise ValueError(f"DefocusOperator: unknown model '{model}' (known: {', '.join(MODELS)})")
        if n_levels < 1:
            raise ValueError(f"DefocusOperator: n_levels must be >= 1, got {n_levels}")
        if psf not in PSF_SHAPES:
            raise ValueError(f"DefocusOperator: unknown psf '{psf}' (known: {', '.join(PSF_SHAPES)})")
        if not torch.isfinite(coc).all():
            raise ValueError("DefocusOperator: the CoC map must be finite")
        coc = coc.float()
        self.shape = tuple(coc.shape[-2:])
        self.levels = coc_levels(coc, n_levels)
        # a layer's kernel: the disc (or `psf`'s Gaussian of its second moment) of |signed CoC|
        discs = [torch.from_numpy(defocus_psf(abs(float(d)), psf)) for d in self.levels]
        self.radius = max(k.shape[0] for k in discs) // 2
        h, w = self.shape
        self._fft_shape = (h + 2 * self.radius, w + 2 * self.radius)
        kernels = torch.zeros(len(discs), *self._fft_shape)
        for i, k in enumerate(discs):  # centred at the origin of the circular grid
            r = k.shape[0] // 2
            kernels[i, : k.shape[0], : k.shape[1]] = k
            kernels[i] = torch.roll(kernels[i], (-r, -r), dims=(0, 1))
        self._otf = torch.fft.rfft2(kernels.to(coc.device))  # (L, H', W'//2+1)
        weights = layer_weights(coc, self.levels.to(coc.device, coc.dtype))  # (B, L, H, W)
        self.P, self.Q = self._factors(weights, model)
        self.fast = fast
        if fast:
            self._sparse(discs)

    def _conv(self, layers: torch.Tensor) -> torch.Tensor:
        """Each layer (B, L, C, H, W) filtered by its level's disc, zero padding, same size."""
        r, (h, w) = self.radius, self.shape
        padded = F.pad(layers, (r, r, r, r))
        out = torch.fft.irfft2(torch.fft.rfft2(padded) * self._otf[None, :, None], s=self._fft_shape)
        return out[..., r : r + h, r : r + w]

    def _factors(self, weights: torch.Tensor, model: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, Q), each (B, L, 1, H, W), of the layered form."""
        q = weights[:, :, None]
        if model == "gather":  # normalised by each disc's coverage of the image: K 1 = 1 at the borders too
            return q / self._conv(torch.ones_like(q)).clamp_min(_EPS), torch.ones_like(q)
        coverage = self._conv(q)  # each layer's blurred membership
        if model == "scatter":
            return (1.0 / coverage.sum(dim=1, keepdim=True).clamp_min(_EPS)).expand_as(q), q
        alpha = coverage.clamp(0.0, 1.0)
        # Back to front (largest signed CoC = farthest first): layer k is seen through every layer nearer
        # than it. Levels ascend in signed CoC, so the nearer layers are j < k: T_k = prod_{j<k} (1 - alpha_j).
        transmit = torch.cumprod(1.0 - alpha, dim=1)
        transmit = torch.cat([torch.ones_like(transmit[:, :1]), transmit[:, :-1]], dim=1)
        accumulated = (1.0 - torch.prod(1.0 - alpha, dim=1, keepdim=True)).clamp_min(_EPS)
        return transmit / accumulated, q

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shape or x.shape[0] != self.P.shape[0]:
            raise ValueError(f"DefocusOperator: image {tuple(x.shape)} does not match the CoC map "
                             f"({self.P.shape[0]}, 1, {self.shape[0]}, {self.shape[1]})")

    def _sparse(self, discs: list[torch.Tensor]) -> None:
        """The fast form: the (image, layer) pairs that contribute, split into delta layers and filtered ones."""
        used = (self.P.flatten(2).abs().amax(dim=2) > 0) & (self.Q.flatten(2).abs().amax(dim=2) > 0)  # (B, L)
        delta = torch.tensor([k.shape[0] == 1 for k in discs], device=used.device)
        # a delta layer's term is P_k (d_k conv (Q_k x)) = P_k Q_k x: summed into one (B, 1, H, W) factor
        self._direct = (self.P * self.Q * delta[None, :, None, None, None]).sum(dim=1) if bool(delta.any()) else None
        self._b, self._k = (used & ~delta[None]).nonzero(as_tuple=True)  # filtered pairs, image-major order
        if len(self._k) == 0:
            return
        size = max(discs[int(k)].shape[0] for k in self._k.unique())
        h, w = self.shape
        self._pair_P, self._pair_Q = self.P[self._b, self._k], self.Q[self._b, self._k]  # (N, 1, H, W)
        # depthwise convolution where torch's kernel for it beats FFTs (measured: discs <= 11 px on <= 128^2 px)
        self._spatial = size <= DIRECT_MAX_DISC and h * w <= DIRECT_MAX_PIXELS
        grid = (size, size) if self._spatial else (_smooth(h + size // 2), _smooth(w + size // 2))  # >= H + r
        kernels = torch.zeros(len(discs), *grid)
        for i, k in enumerate(discs):
            if k.shape[0] > size:
                continue  # no pair uses it
            if self._spatial:  # centred in a size x size window, flipped: conv2d correlates
                o = (size - k.shape[0]) // 2
                kernels[i, o : o + k.shape[0], o : o + k.shape[1]] = k.flip(0, 1)
            else:  # centred at the origin of the circular grid: no wrap-around onto the H x W image
                kernels[i, : k.shape[0], : k.shape[1]] = k
                kernels[i] = torch.roll(kernels[i], (-(k.shape[0] // 2),) * 2, dims=(0, 1))
        kernels = kernels.to(self.P.device)[self._k]
        self._pair_kernel = kernels[:, None] if self._spatial else torch.fft.rfft2(kernels)[:, None]
        self._grid = grid

    def _filter(self, layers: torch.Tensor) -> torch.Tensor:
        """Each pair's layer (N, C, H, W) filtered by its disc, zero padding, same size (fast form)."""
        n, c, h, w = layers.shape
        if self._spatial:
            weight = self._pair_kernel.to(layers.dtype).repeat_interleave(c, dim=0)  # (N C, 1, k, k)
            out = F.conv2d(layers.reshape(1, n * c, h, w), weight, padding=self._grid[0] // 2, groups=n * c)
            return out.reshape(n, c, h, w)
        spectrum = torch.fft.rfft2(layers, s=self._grid) * self._pair_kernel
        return torch.fft.irfft2(spectrum, s=self._grid)[..., :h, :w]

    def _apply(self, x: torch.Tensor, adjoint: bool) -> torch.Tensor:
        """sum_k after_k * (d_k conv (before_k * x)) over the contributing pairs, (before, after) = (Q, P) for K,
        (P, Q) for K^T (fast form)."""
        dtype = torch.promote_types(x.dtype, self.P.dtype)
        out = self._direct * x if self._direct is not None else x.new_zeros(x.shape, dtype=dtype)
        if len(self._k):
            before, after = (self._pair_P, self._pair_Q) if adjoint else (self._pair_Q, self._pair_P)
            out = out.index_add(0, self._b, after * self._filter(before * x[self._b]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """K x: the defocused image (B, C, H, W)."""
        self._check(x)
        if self.fast:
            return self._apply(x, adjoint=False)
        return (self.P * self._conv(self.Q * x[:, None])).sum(dim=1)  # K x = sum_k P_k (d_k conv (Q_k x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """K^T y (B, C, H, W)."""
        self._check(y)
        if self.fast:
            return self._apply(y, adjoint=True)
        return (self.Q * self._conv(self.P * y[:, None])).sum(dim=1)  # K^T y = sum_k Q_k (d_k conv (P_k y))

    def prox(self, y: torch.Tensor, x0: torch.Tensor, rho: float, steps: int = 30,
             aty: torch.Tensor | None = None) -> torch.Tensor:
        """argmin_x ||K x - y||^2 + rho ||x - x0||^2, by `steps` conjugate-gradient steps from x0; `aty`: K^T y,
        where the caller keeps it across calls with the same y."""
        if rho < 0 or steps < 0:
            raise ValueError(f"prox: need rho >= 0 and steps >= 0, got rho={rho}, steps={steps}")

        def normal(v: torch.Tensor) -> torch.Tensor:  # (K^T K + rho I) v
            return self.adjoint(self.forward(v)) + rho * v

        def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # per image
            return (a * b).flatten(1).sum(dim=1)[:, None, None, None]

        x = x0.clone()
        r = (self.adjoint(y) if aty is None else aty) + rho * x0 - normal(x)  # K^T y + rho x0 - (K^T K + rho) x
        p, rr = r.clone(), dot(r, r)
        for _ in range(steps):
            if float(rr.max()) <= 1e-20:
                break
            ap = normal(p)
            alpha = rr / dot(p, ap).clamp_min(1e-30)
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = dot(r, r)
            p = r + (rr_new / rr.clamp_min(1e-30)) * p
            rr = rr_new
        return x
