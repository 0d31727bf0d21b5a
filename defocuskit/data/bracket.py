"""What a tripod bracket can do between two shots: the motion a registration warp describes, and the limits
beyond which a warp is a wrong match (another scene, a repeated texture) rather than a bracket to apply."""

from __future__ import annotations

import numpy as np

# What a tripod bracket can do between two shots (focus breathing, a nudged head, a settling tripod); a warp
# beyond it is a wrong match (another scene, a repeated texture), not a registration to apply.
_TRIPOD_SCALE = 0.04  # |scale - 1|: focus breathing of photo lenses stays within a few per cent
_TRIPOD_ROTATION_DEG = 1.5
_TRIPOD_SHEAR = 0.05  # anisotropy of the linear part (an affine fit across bokeh absorbs a little)
_TRIPOD_SHIFT = 0.05  # shift of the frame centre, as a share of the long side
_TRIPOD_PERSPECTIVE = 0.02  # change of scale across the frame from the projective terms



def as_3x3(m: np.ndarray) -> np.ndarray:
    """A 2x3 affine warp as its 3x3 matrix (a 3x3 one as it is)."""
    return m if m.shape == (3, 3) else np.vstack([m, [0, 0, 1]])


def tripod_motion(m: np.ndarray, size: tuple[int, int]) -> dict[str, float]:
    """The motion a full-resolution warp `m` (reference -> moving) describes for a frame of `size` (w, h):
    scale, rotation (degrees), shear (anisotropy and skew), shift of the frame centre (share of the long
    side), perspective (change of scale across the frame)."""
    full = as_3x3(np.asarray(m, dtype=np.float64))
    w, h = size
    a = full[:2, :2]
    u, sv, vt = np.linalg.svd(a)
    rot = u @ vt
    centre = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    moved = full @ centre
    moved = moved[:2] / moved[2]
    return {"scale": float(np.sqrt(abs(np.linalg.det(a)))),
            "rotation_deg": float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))),
            "shear": float(sv[0] / max(sv[1], 1e-12) - 1.0),  # anisotropy: 0 for a similarity
            "shift": float(np.hypot(*(moved - centre[:2])) / max(w, h)),
            "perspective": float(np.hypot(full[2, 0], full[2, 1]) * max(w, h))}


def beyond_bracket(m: np.ndarray, size: tuple[int, int]) -> str | None:
    """Why `m` is beyond what a tripod bracket does (module constants), or None when it is within."""
    mo = tripod_motion(m, size)
    beyond = [f"scale {mo['scale']:.3f}" if abs(mo["scale"] - 1.0) > _TRIPOD_SCALE else "",
              f"rotation {mo['rotation_deg']:.2f} deg" if abs(mo["rotation_deg"]) > _TRIPOD_ROTATION_DEG else "",
              f"shear {mo['shear']:.3f}" if mo["shear"] > _TRIPOD_SHEAR else "",
              f"shift {100 * mo['shift']:.1f} % of the frame" if mo["shift"] > _TRIPOD_SHIFT else "",
              f"perspective {mo['perspective']:.3f}" if mo["perspective"] > _TRIPOD_PERSPECTIVE else ""]
    beyond = [b for b in beyond if b]
    if not beyond:
        return None
    return (f"implausible warp for a tripod bracket ({', '.join(beyond)}; a bracket stays within scale "
            f"+-{100 * _TRIPOD_SCALE:g} %, {_TRIPOD_ROTATION_DEG:g} deg, shift {100 * _TRIPOD_SHIFT:g} %): another "
            "scene or a wrong match")
