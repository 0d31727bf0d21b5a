"""What ingest passes between a source, its workers and the shard writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The shard metadata keys (the shard contract's and the source-specific ones) are defined in `metadata`:
# sources fill the Python view (None where unknown); the shard writer stores the fixed schema.


class IngestError(RuntimeError):
    """Ingest cannot go on (bad arguments, or a rejected input under --strict); the message says why."""


@dataclass(frozen=True)
class Task:
    """One unit of ingest work, cheap to list and picklable: a defocused shot with its reference.

    `files` maps a role ("blur", "sharp", "coc", or source-specific roles) to an absolute path;
    `meta` holds what is known before decoding (f_number, split, camera, origin, ...);
    `options` holds source-specific instructions for `load` (e.g. {"register": "ecc"}).
    """

    source: str
    split: str
    scene: str
    key: str
    files: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """A decoded sample: RGB uint8/uint16 arrays of equal size, optional CoC map in pixels.

    Where the depth order is known (rendered data), `coc` is signed (negative in front of the focal
    plane, positive behind it) and `coc_signed` is True; the shard stores |coc| and the sign apart.

    Dual-pixel samples (DPDD with `--dual-pixel`) also carry the two half-aperture views that add up to `blur`.

    Blur-map samples (CUHK blur detection) have no sharp reference: `sharp` None, `blur` the photo and
    `blurmask` uint8 (H, W), 255 = blurred (out of focus), 0 = in focus.
    """

    key: str
    sharp: np.ndarray | None
    blur: np.ndarray | None
    meta: dict[str, Any]
    coc: np.ndarray | None = None  # float32 (H, W), circle-of-confusion diameter in pixels
    coc_signed: bool = False  # coc carries its sign: negative in front of the focal plane, positive behind
    blurmask: np.ndarray | None = None  # uint8 (H, W), 255 = blurred; blur-map samples only
    left: np.ndarray | None = None  # the blurred shot's dual-pixel views (DPDD `--dual-pixel`): left ...
    right: np.ndarray | None = None  # ... and right, RGB like `blur`; both or neither

    @property
    def image(self) -> np.ndarray:
        """The reference array for sizes and bit depth: `sharp`, or `blur` in a blur-map sample."""
        return self.sharp if self.sharp is not None else self.blur


@dataclass(frozen=True)
class Rejected:
    """An input skipped at listing or loading time, as written to rejects.jsonl."""

    source: str
    file: str
    reason: str
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "reason": self.reason, "key": self.key}


class RejectError(Exception):
    """Raised by a source's `load` for an input that must be skipped (or is fatal under --strict)."""

    def __init__(self, file: str, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{file}: {reason}")


# The values of the IngestOptions fields with a fixed set of them (the CLI's choices).
BIT_DEPTHS = ("auto", "8", "16")  # bit_depth (--bit-depth)
SPLIT_BY = ("scene", "train", "test")  # split_by (--split-by)
BRACKET_FITS = ("frame", "subject")  # bracket_fit (--bracket-fit)
CUHK_WHITE_IS = ("auto", "blurred", "sharp")  # cuhk_white_is (--cuhk-white-is), as sources/cuhk_blur.WHITE_IS
RENDER_FOCUS_BY_MAP = ("auto", "mask", "sample")  # render_focus (--render-focus) chosen by the map; else a depth


@dataclass(frozen=True)
class IngestOptions:
    """Options shared by every source and by the writer."""

    out: str = "shards"
    workers: int | None = None  # PyTorch's num_workers: 0 = the main process; N >= 1 = N processes; None = ingest.default_workers()
    shard_size: int = 64  # source pairs per shard (each gives one sample, or several with `patch`)
    max_side: int | None = None  # downscale so that the longer side is at most this (INTER_AREA)
    patch: int | None = None  # cut training patches of this size ...
    stride: int | None = None  # ... every `stride` pixels (default: patch)
    min_sharpness: float | None = None  # drop patches whose sharp reference is flatter than this
    bit_depth: str = "auto"  # "auto" (16 where the source has more than 8 bits), "8" or "16"
    split_by: str = "scene"  # for sources without official splits: "scene" (hash), "train", "test"
    test_fraction: float = 0.1  # with split_by="scene"
    scene_gap_s: float | None = None  # RAW: split a folder into scenes at capture-time gaps
    f_number_csv: str | None = None  # RAW, pairs: CSV with columns file,f_number (files relative to the source dir); beats EXIF
    f_number_pattern: str | None = None  # RAW, pairs: regex on file names, group 1 the f-number ('_' as '.'); where EXIF has none
    dual_pixel: bool = False  # DPDD: also store the blurred shot's dual-pixel views (left.png, right.png)
    register: str = "ecc"  # "ecc", "homography" (feature based) or "none" (pairs kept as shot: no warp, no gain)
    min_align_score: float = 0.8  # reject pairs whose registration score is lower
    local_gain: float = 0.0  # > 0: gain matched per region and channel, a Gaussian of this x the long side; 0: one gain
    refine_warp: float = 0.0  # > 0: a smooth residual warp after the rigid fit, over a Gaussian of this x the long side
    bracket_fit: str = "frame"  # VABD, RAW brackets: "frame" (ECC affine, whole frame) or "subject" (shift + rotation
    # on the detail both shots hold: register.align's "bracket" motion)
    part: tuple[int, int] = (0, 1)  # (i, n): ingest only the i-th of n parts (0-based here)
    strict: bool = False
    overwrite: bool = False  # replace another dataset's shard folder (only the files it lists are removed)
    seed: int = 0
    synthetic_f_numbers: tuple[float, ...] = (1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
    synthetic_ref_f_number: float = 22.0
    synthetic_size: int = 256  # longer side of the rendered builtin scenes
    synthetic_misalign_px: float = 0.0  # > 0: each sharp reference moved by a random shift up to this and ~1 % scale
    cuhk_white_is: str = "auto"  # CUHK blur: what white in gt/ marks: "auto" (decided from the images), "blurred", "sharp"
    cuhk_test_fraction: float = 0.0  # CUHK blur: about this share of the images (seed-free hash of the stem) to "test"
    # --render DIR: aperture stacks rendered from all-in-focus photos with depth (sources/render.py)
    render_depth_kind: str = "relative"  # "metric", "relative" (larger = farther) or "inverse" (disparity)
    render_depth_colormap: str = "auto"  # false-colour depth PNGs: matplotlib colormap name, "auto" = detected
    render_f_numbers: tuple[float, ...] = (1.8, 2.8, 4.0, 5.6, 8.0)
    render_ref_f_number: float = 16.0  # the photo is taken to be shot at this f-number (its own residual blur)
    render_coc_scale: float | None = None  # relative/inverse depth: k, CoC px at f/1 per unit; None = calibrated
    render_focal_length_mm: float = 50.0  # metric depth: the camera
    render_sensor_width_mm: float = 36.0  # metric depth: the camera's; pixel pitch = it / the long side
    render_metric_scale: float | None = None  # metric depth: metres per decoded unit; None: by the map's sample type
    # (1 for a float TIFF or .npy array in metres, 65.535 for an 8/16-bit image: a 16-bit PNG in mm)
    render_focus: str = "auto"  # "auto" (mask where focal/ has one, else sampled), "mask", "sample", or a depth value
    render_noise: bool = True  # Poisson-Gaussian sensor noise on the rendered shot
    render_noise_photons: float = 4000.0  # photons at full scale (the noise level: more photons, less noise)
    render_veil: float = 0.0  # veiling glare: stray-light share at f/1, v = this / N^2 at f/N (0 = none)
    render_veil_spread: float = 0.0  # per scene V drawn uniformly in V (1 -/+ this), seeded by the photo (0: V)
    render_highlights: float = 8.0  # clipped highlights boosted up to this gain in linear light (1 = off)
    render_jpeg_quality: int | None = None  # JPEG round trip of both images at this quality (None: none)
