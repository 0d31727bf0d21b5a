"""The built-in scenes as an `ingest --render` folder: photographs with depth maps and focal masks.

    python tools/export_builtin_photos.py OUT [--max-side 384] [--seed 0]

Writes, for each of the 28 built-in scenes (`defocuskit.data.render`: 7 scikit-image photographs and their seeded
crops, flips and depth layouts), OUT/image/<scene>.png (16-bit sRGB, the scene's photograph at its own resolution, no
larger than --max-side), OUT/depth/<scene>.png (grey 16-bit, relative depth affine in inverse depth: 0 the nearest
point, 65535 the farthest, so that `--render-depth relative` gives the thin lens's CoC, proportional to 1/s - 1/d)
and OUT/focal/<scene>.png (white where the scene's own focus distance lies, within 5 % of the map's inverse-depth
span). So the built-in photographs render through the same pipeline as the fixture references (veiling glare,
highlights, noise, tone curve) and can join them in one `--render` folder (tools/loso_real.py --extra-photos).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tool_args import whole  # noqa: E402  (same folder)
from tool_folders import not_new_folder  # noqa: E402

from defocuskit.data.render import builtin_scene, builtin_scene_names, native_side  # noqa: E402
from defocuskit.io.images import linear_to_srgb  # noqa: E402

FOCAL_BAND = 0.05  # share of the inverse-depth span counted as in focus for the focal mask


def export(out: Path, max_side: int, seed: int) -> int:
    """Write every built-in scene's photo, depth and focal mask under `out`; the number written."""
    for sub in ("image", "depth", "focal"):
        (out / sub).mkdir(parents=True, exist_ok=False)
    for name in builtin_scene_names():
        scene = builtin_scene(name, min(max_side, native_side(name, seed)), seed)
        srgb = np.clip(linear_to_srgb(scene.rgb), 0.0, 1.0)
        cv2.imwrite(str(out / "image" / f"{name}.png"), np.rint(srgb[..., ::-1] * 65535).astype(np.uint16))
        inv = 1.0 / scene.depth_m.astype(np.float64)
        span = max(float(inv.max() - inv.min()), 1e-12)
        relative = (inv.max() - inv) / span  # larger = farther, affine in inverse depth
        cv2.imwrite(str(out / "depth" / f"{name}.png"), np.rint(relative * 65535).astype(np.uint16))
        off_focus = np.abs(inv - 1.0 / scene.focus_distance_m)
        focal = off_focus <= max(FOCAL_BAND * span, off_focus.min())  # at least the nearest point to the focus
        cv2.imwrite(str(out / "focal" / f"{name}.png"), (focal * 255).astype(np.uint8))
    return len(builtin_scene_names())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--max-side", type=whole(16), default=384)
    parser.add_argument("--seed", type=whole(0), default=0, help="the built-in scenes' seed (crops, depth layouts)")
    args = parser.parse_args()
    why = not_new_folder(args.out)
    if why is not None:
        sys.exit(f"error: {why}")
    print(f"{export(args.out, args.max_side, args.seed)} scenes written to {args.out}")


if __name__ == "__main__":
    main()
