"""Dead-leaves scenes with layered metric depth, as an `ingest --render` folder: sharp content of every scale.

    python tools/dead_leaves.py OUT --count 400 [--size 128] [--seed 0]
    defocuskit ingest --render OUT --render-depth metric --render-metric-scale 20 --render-focal-length 65 \
        --render-sensor-width 23.5 --render-f-numbers 1.4,2,2.8,4,5.6,8 --render-ref-f-number 22 \
        --render-focus sample --split-by train --out SHARDS

The dead-leaves model (Matheron; Lee, Mumford and Huang 2001) paints discs and ellipses whose radii have density
r^-3 over one another until the plane is covered: images with edges at every scale and contrast, known to be
sharp, in endless variety. Each scene is a background layer on a ground plane (inverse depth linear in the row
below a random horizon, far 6-20 m, near 1.8-3 m; a third of the scenes a fronto-parallel wall) and one to three
nearer objects (smooth random blobs at 0.8-3.5 m, each its own dead-leaves layer, painted far to near). Leaves are
flat or carry a sharp texture (1/f noise, sine or square gratings) and a slow shading; painted at 4x and reduced
in linear light, so edges are anti-aliased. Written: OUT/image/dlNNNNN.png (16-bit sRGB, long side --size) and
OUT/depth/dlNNNNN.png (16-bit, metres / 20, so `--render-metric-scale 20`).

Made to teach the defocus-map estimator blur apart from texture (docs/benchmarks.md, "Dead leaves for the
estimator"); measured there: no better than the built-in photographs alone.
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tool_folders import not_new_folder  # noqa: E402  (same folder)

from defocuskit.io.images import linear_to_srgb  # noqa: E402

SS = 4  # supersampling
MAX_SIZE = 4096  # long side: a scene is drawn at SS x this, in float64 layers
METRES_PER_UNIT = 20.0  # depth PNG: 65535 = 20 m (`--render-metric-scale 20`)


def texture_fields(h: int, w: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sharp full-band textures in [-1, 1]: 1/f noise and gratings."""
    out = []
    for _ in range(2):
        f = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2
        amp = 1.0 / np.maximum(np.sqrt(f), 1.0 / max(h, w)) ** rng.uniform(0.5, 1.2)
        noise = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((h, w)))))
        out.append((noise / (np.abs(noise).max() + 1e-8)).astype(np.float32))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(2):
        th, period = rng.uniform(0, np.pi), rng.uniform(2.5, 20.0) * SS
        wave = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        out.append((np.sign(wave) if rng.random() < 0.5 else wave).astype(np.float32))  # square or sine grating
    return out


def leaves(h: int, w: int, rng: np.random.Generator, rmin: float, rmax: float, n: int) -> tuple[np.ndarray, int]:
    """A label map of n leaves painted in turn (later on top; 0 = none; density of radii r^-3), its label count."""
    labels = np.zeros((h, w), np.int32)
    u = rng.random(n)
    radii = (rmin ** -2 - u * (rmin ** -2 - rmax ** -2)) ** -0.5
    for i, r in enumerate(radii, start=1):
        c = (int(rng.integers(-r, w + r)), int(rng.integers(-r, h + r)))
        kind = rng.random()
        if kind < 0.6:
            cv2.circle(labels, c, int(r), i, -1)
        else:
            axes = (int(r), int(r * rng.uniform(0.2, 1.0)))
            cv2.ellipse(labels, c, axes, float(rng.uniform(0, 180)), 0, 360, i, -1)
    return labels, n + 1


def layer_rgb(h: int, w: int, rng: np.random.Generator, tex: list[np.ndarray]) -> np.ndarray:
    """One dead-leaves layer in linear RGB: coloured leaves, some textured, under a slow shading."""
    s = max(h, w)
    labels, n = leaves(h, w, rng, rmin=s * rng.uniform(0.004, 0.01), rmax=s * rng.uniform(0.1, 0.3),
                       n=int(rng.integers(1500, 4000)))
    base = rng.random((n, 3)) ** 2.2  # sRGB-uniform colours, linear
    grey = base.mean(1, keepdims=True)
    base = grey + (base - grey) * rng.uniform(0.0, 1.0, (n, 1))  # saturation
    base *= rng.uniform(0.2, 1.0, (n, 1))
    which = rng.integers(-3, len(tex), n)  # < 0: flat leaf
    amp = rng.uniform(0.05, 0.6, n) * (which >= 0)
    rgb = base[labels]
    mod = np.zeros((h, w), np.float32)
    for t, field in enumerate(tex):
        sel = which[labels] == t
        mod[sel] = field[sel]
    rgb = rgb * (1.0 + (amp[labels] * mod)[..., None])
    # smooth shading over the layer (not blur: low-frequency illumination)
    shade = cv2.GaussianBlur(rng.standard_normal((h // 32 + 2, w // 32 + 2)).astype(np.float32), (0, 0), 1.0)
    shade = cv2.resize(shade, (w, h), interpolation=cv2.INTER_CUBIC)
    rgb = rgb * np.exp(0.3 * rng.uniform(0, 1) * shade)[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32)


def blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random blob mask (thresholded low-pass noise inside an ellipse envelope)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.85) * w
    ry, rx = rng.uniform(0.12, 0.35) * h, rng.uniform(0.1, 0.3) * w
    env = 1 - ((yy - cy) / ry) ** 2 - ((xx - cx) / rx) ** 2
    noise = cv2.resize(rng.standard_normal((8, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return (env + 0.35 * noise) > 0


def scene(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A scene's linear RGB and metric depth (m), long side `size`."""
    h = w = size * SS
    if rng.random() < 0.5:
        h = int(size * SS * rng.uniform(0.66, 1.0))
    tex = texture_fields(h, w, rng)
    rgb = layer_rgb(h, w, rng, tex)
    far, near = rng.uniform(6.0, 20.0), rng.uniform(1.8, 3.0)
    horizon = rng.uniform(0.0, 0.6)
    t = np.clip((np.arange(h)[:, None] / (h - 1) - horizon) / (1 - horizon), 0, 1) * np.ones((1, w))
    if rng.random() < 0.3:
        t = np.zeros((h, w))  # a fronto-parallel far wall
    inv = 1.0 / far + t * (1.0 / near - 1.0 / far)
    for depth in sorted(rng.uniform(0.8, 3.5, int(rng.integers(1, 4))), reverse=True):
        mask = blob(h, w, rng)
        rgb = np.where(mask[..., None], layer_rgb(h, w, rng, tex), rgb)
        inv = np.where(mask, 1.0 / depth, inv)
    out_w, out_h = size if w >= h else int(size * w / h), size if h >= w else int(size * h / w)
    rgb = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
    inv = cv2.resize(inv.astype(np.float32), (out_w, out_h), interpolation=cv2.INTER_AREA)
    return rgb, 1.0 / inv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--size", type=int, default=128, help="long side (px)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    why = not_new_folder(args.out)
    if why is not None:
        sys.exit(f"error: {why}")
    if args.seed < 0:
        sys.exit(f"error: --seed {args.seed}: give a seed of at least 0")
    if args.size > MAX_SIZE:
        sys.exit(f"error: --size {args.size}: at most {MAX_SIZE} px")
    if args.count < 1 or args.size < 16:  # no scene, or one too small to hold a disc: no dataset to write
        sys.exit(f"error: --count {args.count} --size {args.size}: give at least 1 scene of at least 16 px")
    out, n, size, seed = args.out, args.count, args.size, args.seed
    (out / "image").mkdir(parents=True)
    (out / "depth").mkdir()
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        rgb, depth = scene(size, rng)
        srgb = np.clip(linear_to_srgb(rgb), 0, 1)
        cv2.imwrite(str(out / "image" / f"dl{i:05d}.png"), np.rint(srgb[..., ::-1] * 65535).astype(np.uint16))
        cv2.imwrite(str(out / "depth" / f"dl{i:05d}.png"),
                    np.rint(depth / METRES_PER_UNIT * 65535).astype(np.uint16))


if __name__ == "__main__":
    main()
