"""`--render`: the units of a depth map, and the checks that its values are in the units declared.

Metric depth is metres = decoded value x `metric_scale`. A map stored in other units (a float map in millimetres,
a 16-bit PNG in centimetres read as millimetres, a relative 0-1 map declared metric) still renders, but as no
camera photographs it: `check_metric_depth` refuses such a map by physics, not by fitted ranges:

- every point must lie beyond the lens's focal length (thin lens 1/f = 1/s + 1/s': an object at s <= f forms no
  real image, so no photograph records it; a map in centimetres read as millimetres puts a room's near wall at
  4.5 cm, nearer than a 50 mm lens's focal length);
- the widest f-number asked must blur some point by more than POINT_PX, the diameter up to which the renderer's
  disc is one pixel (area-sampled `optics.disc_psf` is a delta there, and `render_photo.spread_highlights` spreads
  no light): else every shot is the photo unchanged and the pair carries no defocus to learn (a map in
  millimetres read as metres puts a room 450 m to 12 km away, where a 50 mm lens at f/1.8 blurs nothing).

The reject line names the depth range read and, where reading the map in another unit depth maps are stored in
(metres, centimetres, millimetres) passes both checks, that unit and the `--render-metric-scale` that reads it so.
A relative map (`check_units`) has no physical units: its values beyond 0-1 need their CoC scale.
A metric focus given (`--render-focus VALUE`, metres) far outside the map's depth is a reject line too
(`check_metric_focus`: by the thin lens, about a factor 2 beyond its nearest or farthest point), as is a relative
or inverse focus beyond the map's values by more than their span (`check_relative_focus`).
"""

from __future__ import annotations

import numpy as np

from defocuskit.data.sample import RENDER_FOCUS_BY_MAP, IngestOptions, RejectError
from defocuskit.imaging.optics import pixel_pitch_um, sensor_width_across, signed_coc_diameter_mm

INTEGER_METRES_PER_UNIT = 65.535  # metric depth of an 8/16-bit image (decoded to 0-1): a 16-bit PNG in mm
VALUE_METRES_PER_UNIT = 1.0  # metric depth read as values (float TIFF, .npy): metres
# The diameter (px) up to which the renderer's disc is a single pixel: optics.disc_psf (area sampling, the
# renderer's) gives a delta for a diameter of at most 1 px and render_photo.spread_highlights spreads no restored
# light there, so a CoC map within +-1 px renders the photo unchanged (to float precision).
POINT_PX = 1.0
# Units depth maps are stored in, as metres per unit: what another reading of the map is tried in.
UNITS = {"millimetres": 0.001, "centimetres": 0.01, "metres": 1.0}


def metric_scale(opts: IngestOptions, as_values: bool = False) -> float:
    """Metres per decoded unit of a metric depth map: `render_metric_scale`, or by default by the map's sample type:
    VALUE_METRES_PER_UNIT for a map read as its values (`as_values`: a float TIFF, a .npy array, in metres), else
    INTEGER_METRES_PER_UNIT (an 8/16-bit image decoded to 0-1: a 16-bit PNG in mm)."""
    if opts.render_metric_scale is not None:
        return float(opts.render_metric_scale)
    return VALUE_METRES_PER_UNIT if as_values else INTEGER_METRES_PER_UNIT


def check_units(path: str, values: np.ndarray, as_values: bool, opts: IngestOptions) -> None:
    """RejectError naming `path` for a relative or inverse map read as its values (a float TIFF, a .npy array) that
    reaches beyond 0-1 while `render_coc_scale` is its default: that scale was fitted on maps in 0-1, so such a map's
    units would set the blur (a depth estimator's 0-300 map: 300x too much); or a focus beyond 0-1 on a 0-1 map."""
    given = opts.render_focus not in RENDER_FOCUS_BY_MAP and opts.render_depth_kind != "metric"
    if given and not as_values and not 0.0 <= float(opts.render_focus) <= 1.0:
        raise RejectError(path, f"--render-focus {opts.render_focus} is beyond this map's 0-1 (an 8/16-bit or "
                                "false-colour map reads as value / (2^bits - 1): 128 of 255 is 0.502)")
    if not as_values or opts.render_depth_kind == "metric" or opts.render_coc_scale is not None:
        return
    lo, hi = float(values.min()), float(values.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise RejectError(path, f"{opts.render_depth_kind} depth values from {lo:.4g} to {hi:.4g}: the default "
                                "--render-coc-scale is for maps in 0-1; give --render-coc-scale (CoC px at f/1 per "
                                "unit of these values) or scale the map into 0-1")


def metric_unit_coc(depth_m: np.ndarray, focus_m: float, opts: IngestOptions,
                    shape: tuple[int, int] | None = None) -> np.ndarray:
    """The signed CoC in px at f/1 of metric depth in metres (thin lens, `render_focal_length_mm`; the camera's
    `render_sensor_width_mm` spans the long side of the rendered `shape`, by default the map's); ValueError for a
    focus at or before the focal length."""
    h, w = shape or depth_m.shape
    pitch = pixel_pitch_um(sensor_width_across(float(opts.render_sensor_width_mm), h, w), w)
    mm = signed_coc_diameter_mm(1.0, opts.render_focal_length_mm, focus_m, np.maximum(depth_m, 1e-3))
    return (np.asarray(mm) * 1000.0 / pitch).astype(np.float32)


def widest_blur_px(lo: float, hi: float, focus_m: float, shape: tuple[int, int],
                   opts: IngestOptions) -> tuple[float, float]:
    """(the widest f-number asked, the largest CoC in px that it adds, rendered at `shape`, to the photo shot at
    `render_ref_f_number` (in quadrature, as the renderer adds it) over depths `lo` to `hi` m: the CoC grows
    with 1 - focus / depth, so it is largest at one end)."""
    widest = min(float(n) for n in opts.render_f_numbers)
    factor = np.sqrt(max(0.0, 1.0 / widest**2 - 1.0 / float(opts.render_ref_f_number) ** 2))
    ends = metric_unit_coc(np.array([lo, hi], np.float64), focus_m, opts, shape)
    return widest, float(np.abs(ends).max()) * factor


def metric_problem(depth_m: np.ndarray, focus_m: float, shape: tuple[int, int], opts: IngestOptions) -> str | None:
    """Why metric depth in metres is no scene that `opts`' camera photographs at `shape` (module docstring), or
    None."""
    focal_mm = float(opts.render_focal_length_mm)
    if near := int((depth_m <= focal_mm / 1000.0).sum()):
        return (f"{near} of {depth_m.size} pixels are nearer than the {focal_mm:g} mm focal length, where a lens "
                "forms no image (thin lens)")
    try:
        widest, most = widest_blur_px(float(depth_m.min()), float(depth_m.max()), focus_m, shape, opts)
    except ValueError:  # a given focus at or before the focal length: unit_coc's reject line says so
        return None
    if most <= POINT_PX:
        return (f"at f/{widest:g}, the widest asked, no point is blurred by more than {most:.2g} px (a {focal_mm:g} "
                f"mm lens; the renderer's disc of {POINT_PX:g} px or less is a point): every shot would be the photo "
                "unchanged, no defocus to learn")
    return None


def _num(x: float) -> str:
    return np.format_float_positional(float(x), precision=4, unique=True, fractional=False, trim="-")


def focus_range_m(near_m: float, far_m: float, focal_mm: float) -> tuple[float, float]:
    """The metric focus distances (m) that lie on a scene whose depth spans `near_m` to `far_m`, by the thin lens
    (a CoC c = A f s / (s - f) x |1/s - 1/d| at depth d, focus s, focal length f, aperture A):

    - nearer than (d_near + f) / 2 the scene's sharpest point, its nearest, is blurred more than it is with the lens
      focused at infinity (c = A f / d_near), which is the most that any focus on the scene or beyond it blurs any of
      its points: no point of the photo is near the focal plane;
    - farther than 2 d_far - f the focal plane lies nearer infinity than the scene in dioptres, its farthest point
      blurred by more than half of what focusing at infinity gives it: the focus is on nothing in the scene.

    Both ends are about a factor 2 beyond the map's range (f is small beside d): a subject slightly outside it (a
    smoothed or clipped map's nearest point) renders, a unit slip (centimetres or millimetres given as metres: x100,
    x1000, or the reverse) or a typo does not; the shots it made were blurred all over, nothing in focus."""
    f = focal_mm / 1000.0
    return (near_m + f) / 2.0, 2.0 * far_m - f


def check_metric_focus(path: str, depth_m: np.ndarray, focus_m: float, given: str, opts: IngestOptions) -> None:
    """RejectError naming the depth map `path` where the metric focus `given` (--render-focus, `focus_m` metres) is
    far outside its depth `depth_m` (`focus_range_m`), with the map's range and the focus that would render."""
    near, far = float(depth_m.min()), float(depth_m.max())
    low, high = focus_range_m(near, far, float(opts.render_focal_length_mm))
    if low <= focus_m <= high:
        return
    why = ("under half its nearest point's distance: that point, the sharpest, blurred more than with the lens "
           "focused at infinity" if focus_m < low else "over twice its farthest point's distance: the focal plane "
           "nearer infinity than the scene")
    raise RejectError(path, f"--render-focus {given}: {_num(focus_m)} m is far outside this map's metric depth "
                            f"({_num(near)}-{_num(far)} m), {why}; the focus lies on nothing in the photo and every "
                            "shot would be blurred all over. A focus in another unit than metres, or a typo? Give one "
                            f"within {_num(low)}-{_num(high)} m")


def relative_focus_range(lo: float, hi: float, as_values: bool) -> tuple[float, float]:
    """The relative or inverse focus values that lie on a scene whose map holds values `lo` to `hi`, by the CoC the
    renderer gives them (imaging.depth.signed_relative_coc: c = k (g(focus) - g(value)), g the value or its negative,
    linear in the value with no known infinity, so the map's span S = hi - lo is the one scale it has):

    - a focus on the map (lo to hi) blurs no point by more than k S, what the far end gets with the near end in focus;
    - a focus beyond either end by more than S blurs the map's sharpest point, that end, by more than k S: more than
      any focus on the scene blurs any of its points, so no point of the photo is near the focal plane.

    So lo - S to hi + S (within 0-1 for a map not read `as_values`, an 8/16-bit or false-colour one: beyond it
    `check_units`' line). A subject a little outside the map (a smoothed or clipped map's end) renders; a focus on a
    0-1 scale for a map that spans part of it, or a typo, does not: its shots were blurred all over."""
    span = hi - lo
    low, high = lo - span, hi + span
    return (low, high) if as_values else (max(low, 0.0), min(high, 1.0))


def _range(a: float, b: float) -> str:
    return f"{_num(a)}-{_num(b)}" if a >= 0 else f"{_num(a)} to {_num(b)}"


def check_relative_focus(path: str, values: np.ndarray, focus: float, given: str, as_values: bool,
                         opts: IngestOptions) -> None:
    """RejectError naming the depth map `path` where the relative or inverse focus `given` (--render-focus, `focus`
    in the map's units) is far outside the map's `values` (`relative_focus_range`), with the map's range and the
    focus that would render, as `check_metric_focus`; none for a map of one value."""
    lo, hi = float(values.min()), float(values.max())
    low, high = relative_focus_range(lo, hi, as_values)
    if low <= focus <= high or hi == lo:  # a map of one value, a flat subject, has no span: a focus off it blurs
        return  # it evenly, as asked (at it: render's "one depth value everywhere" line)
    kind = opts.render_depth_kind
    end = "farthest" if (focus > high) == (kind == "relative") else "nearest"  # relative: larger = farther
    units = ("" if as_values else " (an 8/16-bit or false-colour map reads as value / (2^bits - 1): 128 of 255 is "
             "0.502)")
    raise RejectError(path, f"--render-focus {given} is far outside this map's {kind} depth values "
                            f"({_range(lo, hi)}), beyond its {end} point by more than the map's span "
                            f"({_num(hi - lo)}): that point, the sharpest, blurred more than any point is with the "
                            "focus on the map; the focus lies on nothing in the photo and every shot would be blurred "
                            f"all over. A value on another scale than the map's{units}, or a typo? Give one within "
                            f"{_range(low, high)}")


def other_readings(depth_m: np.ndarray, focus_m: float, shape: tuple[int, int], scale: float, as_values: bool,
                   opts: IngestOptions) -> list[str]:
    """'<unit>? (...)' for each unit of UNITS in which the map passes `metric_problem` and renders (a CoC within twice
    the long side, render_photo.render_coc's bound), with the --render-metric-scale that reads it so; none where
    the scale was given (its unit is the user's)."""
    if opts.render_metric_scale is not None:
        return []
    assumed = UNITS["metres"] if as_values else UNITS["millimetres"]  # metric_scale's defaults
    given_focus = opts.render_focus not in RENDER_FOCUS_BY_MAP  # in metres, whatever the map's unit
    found = []
    for unit, metres in UNITS.items():
        ratio = metres / assumed
        if ratio == 1.0:
            continue
        depth, focus = depth_m * ratio, focus_m if given_focus else focus_m * ratio
        if metric_problem(depth, focus, shape, opts) is not None:
            continue
        widest, most = widest_blur_px(float(depth.min()), float(depth.max()), focus, shape, opts)
        if most <= 2 * max(shape):
            found.append(f"{unit}? (--render-metric-scale {scale * ratio:g} reads {_num(depth.min())}-"
                         f"{_num(depth.max())} m: up to {most:.3g} px of blur at f/{widest:g})")
    return found


def check_metric_depth(path: str, values: np.ndarray, shape: tuple[int, int], focus: float, scale: float,
                       as_values: bool, opts: IngestOptions) -> None:
    """RejectError naming the depth map `path` where its metric depth (`values` x `scale` metres, as read, focused at
    `focus` x `scale`, rendered at `shape`) is no scene the camera photographs (`metric_problem`): the range read,
    why, and the likely cause."""
    depth_m, focus_m = values.astype(np.float64) * scale, float(focus) * scale
    problem = metric_problem(depth_m, focus_m, shape, opts)
    if problem is None:
        return
    lo, hi = _num(depth_m.min()), _num(depth_m.max())
    if opts.render_metric_scale is not None:
        read = f"{lo}-{hi} read (values x {scale:g}, --render-metric-scale)"
    elif as_values:
        read = f"values {lo}-{hi} read (a float map is read in metres)"
    else:
        read = f"{lo}-{hi} read (an 8/16-bit map as 16-bit millimetres: value / (2^bits - 1) x {scale:g})"
    causes = "; ".join(other_readings(depth_m, focus_m, shape, scale, as_values, opts))
    raise RejectError(path, f"metric depth in metres: {read}; {problem}. "
                            f"{causes + '; ' if causes else 'Another unit or '}a relative map declared metric? "
                            "Convert the map to metres or give --render-metric-scale (metres per value), check "
                            f"--render-focal-length ({float(opts.render_focal_length_mm):g} mm), or declare "
                            "--render-depth relative")
