"""CUHK blur detection (Shi, Xu and Jia, CVPR 2014, "Discriminative Blur Detection Features"): blur maps.

Layout (the dataset's zip files): `image/*.jpg` (some copies name it `images/`), 1000 photos
`motion0001..0296` and `out_of_focus0001..0704`, and `gt/*.png` with the same stems: hand-labelled binary
masks. There is no sharp reference, so every sample is a *blur-map* sample: `blur.png` (the photo, RGB
8-bit) + `blurmask.png` (uint8, 255 = blurred / out of focus, 0 = in focus) + `json`, and no `sharp.png`.

Only the out-of-focus photos are ingested; each `motion*` photo gets a reject line, as does every photo
without a mask (or mask without a photo), every hidden file (`._out_of_focus0001.jpg`, macOS AppleDouble) or
file in a format it does not read, and the images in other folders (`images/` beside `image/`) or in the root.
A parent folder holding exactly one such folder (a download folder holding `CUHK/`) is read as that one, origins
(relative to the folder given) then starting with its name (a parent of several names them).
At load time a mask of another size than its photo, or one
with more than 5 % of its pixels strictly between 16 and 239 ("not a binary blur map"), is a reject;
other masks are thresholded at 128.

Polarity: what white in `gt/` means is given by `--cuhk-white-is blurred|sharp`, or decided ONCE per
folder (`auto`, the default) from the photos: in every photo whose two mask regions both cover at least
5 % of the pixels, the region (eroded, so the edge between them counts in neither) with the larger mean
absolute Laplacian of the grey image (8-bit scale, longer side at most 512 px) is in focus; the majority
of those votes decides when at least 3 photos vote and at least 70 % agree, else listing fails, telling
the user to pass the option. The decision is in every sample's `blurmask` metadata
({"white_is", "decided_by", "evidence"}) and in manifest.json's options (`cuhk_blurmask`).

Split: no official one. Everything is `train`, unless `--cuhk-test-fraction F`: then a seed-free SHA-256
hash of the stem puts about F of the photos into `test` (the same photos on every run and machine).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from defocuskit.data.metadata import empty_meta
from defocuskit.data.pairs import key_part, relpath
from defocuskit.data.sample import (
    IngestError,
    IngestOptions,
    Rejected,
    RejectError,
    Sample,
    Task,
)
from defocuskit.data.sources import DatasetSource, layout
from defocuskit.data.sources.pairs import folder_images
from defocuskit.io.formats import RASTER_EXTENSIONS, ImageError
from defocuskit.io.images import read_image

NAME = "cuhk-blur"
TITLE = "CUHK blur detection"
EXPECTED = "image/ (or images/) and gt/"
IMAGE_DIRS = ("image", "images")
MASK_DIR = "gt"
USES = "image/ (or images/) and gt/"
WHITE_IS = ("auto", "blurred", "sharp")
MOTION_REASON = "motion blur: --cuhk-blur takes the out-of-focus images"
NOT_BINARY = 0.05  # reject a mask with more than this share of pixels strictly between GREY_LOW and GREY_HIGH
GREY_LOW, GREY_HIGH = 16, 239
MIN_REGION = 0.05  # auto polarity: both mask regions must cover at least this share of a photo
MIN_VOTES = 3  # auto polarity: photos that must vote ...
MIN_AGREEMENT = 0.7  # ... and the share of them that must agree
VOTE_SIDE = 512  # auto polarity: photos are measured with the longer side at most this


# ------------------------------------------------------------------------------------- layout


def image_dir(root: Path) -> Path | None:
    """`root/image` or `root/images`, whichever exists (image/ first), else None."""
    for name in IMAGE_DIRS:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def _problem(data: Path) -> str | None:
    """What keeps `data` itself from being a CUHK blur detection folder (image/ and gt/ in it), or None."""
    lacking = [] if image_dir(data) is not None else ["image/ (or images/)"]
    lacking += layout.missing(data, (MASK_DIR,))
    return f"no {' or '.join(lacking)}" if lacking else None


layout_problem, root_of = layout.parent_rule(NAME, _problem)  # the folder itself, or the parent of one


# -------------------------------------------------------------------------------------- masks


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as uint8 grey (H, W) (16-bit scaled down, colour averaged; a mask stored as 0 / 1, as label maps
    often are, as 0 / 255); ImageError if unreadable."""
    arr = read_image(path)
    if arr.max() == 1:  # labels 0 and 1 (any bit depth): white is 1, not a level under the 128 threshold
        arr = arr * (65535 if arr.dtype == np.uint16 else 255)
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    return arr.mean(axis=2).round().astype(np.uint8) if arr.ndim == 3 else arr


def grey_share(mask: np.ndarray) -> float:
    """The share of pixels strictly between GREY_LOW and GREY_HIGH (not black, not white)."""
    return float(np.mean((mask > GREY_LOW) & (mask < GREY_HIGH)))


def white_of(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W): the mask's white pixels (thresholded at 128)."""
    return mask >= 128


def to_blurmask(white: np.ndarray, white_is: str) -> np.ndarray:
    """Boolean white pixels -> blurmask.png content: uint8, 255 = blurred, 0 = in focus."""
    if white_is not in ("blurred", "sharp"):
        raise ValueError(f"white_is must be 'blurred' or 'sharp', got {white_is!r}")
    blurred = white if white_is == "blurred" else ~white
    return np.where(blurred, 255, 0).astype(np.uint8)


# ----------------------------------------------------------------------------------- polarity


def _region_energy(lap: np.ndarray, region: np.ndarray, erode: int) -> float | None:
    """Mean of `lap` (absolute Laplacian) inside `region` eroded by `erode` px (None when little is left)."""
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    inner = cv2.erode(region.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    if inner.sum() < 16:
        return None
    return float(lap[inner].mean())


def white_is_sharper(image: np.ndarray, mask: np.ndarray) -> bool | None:
    """One photo's vote: True when the white region of `mask` holds more high-frequency energy (white is
    in focus), False when the black one does, None when a region covers less than 5 % or sizes differ."""
    if image.shape[:2] != mask.shape[:2] or grey_share(mask) > NOT_BINARY:
        return None
    white = white_of(mask)
    share = float(white.mean())
    if min(share, 1.0 - share) < MIN_REGION:
        return None
    grey = image.astype(np.float32).mean(axis=2)
    if image.dtype == np.uint16:
        grey /= 257.0
    h, w = grey.shape
    scale = min(1.0, VOTE_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        white = cv2.resize(white.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    erode = max(2, round(0.01 * max(grey.shape)))
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))
    e_white, e_black = _region_energy(lap, white, erode), _region_energy(lap, ~white, erode)
    if e_white is None or e_black is None or e_white == e_black:
        return None
    return e_white > e_black


def decide_white_is(pairs: Iterable[tuple[Path, Path]], root: Path) -> tuple[str, float, int]:
    """The majority vote of `white_is_sharper` over the (photo, mask) pairs: ("blurred" | "sharp", share of
    the votes agreeing, votes). IngestError, with the hint to pass --cuhk-white-is, when fewer than 3
    photos vote or fewer than 70 % of them agree."""
    votes: list[bool] = []
    for image_path, mask_path in pairs:
        try:
            vote = white_is_sharper(read_image(image_path), read_mask(mask_path))
        except ImageError:
            continue  # the load step rejects it with the reason
        if vote is not None:
            votes.append(vote)
    hint = "pass --cuhk-white-is blurred (white in gt/ marks out-of-focus pixels) or --cuhk-white-is sharp"
    if len(votes) < MIN_VOTES:
        raise IngestError(f"--cuhk-blur {root}: cannot decide what white in gt/ marks: only {len(votes)} photo(s) "
                          f"have both mask regions covering at least {MIN_REGION:.0%} (need {MIN_VOTES}); {hint}")
    sharp_share = sum(votes) / len(votes)
    if max(sharp_share, 1.0 - sharp_share) < MIN_AGREEMENT:
        raise IngestError(f"--cuhk-blur {root}: cannot decide what white in gt/ marks: {sharp_share:.0%} of "
                          f"{len(votes)} photos look sharper inside the white region, {1 - sharp_share:.0%} "
                          f"inside the black one (need {MIN_AGREEMENT:.0%} one way); {hint}")
    if sharp_share >= 0.5:
        return "sharp", round(sharp_share, 4), len(votes)
    return "blurred", round(1.0 - sharp_share, 4), len(votes)


# ------------------------------------------------------------------------------------ listing


def split_of(stem: str, test_fraction: float) -> str:
    """"test" for about `test_fraction` of the stems (a seed-free SHA-256 hash of the stem), else "train"."""
    if not 0.0 <= test_fraction < 1.0:
        raise IngestError(f"--cuhk-test-fraction must be in [0, 1), got {test_fraction}")
    if test_fraction == 0.0:
        return "train"
    u = int.from_bytes(hashlib.sha256(f"{NAME}:{stem}".encode()).digest()[:8], "big") / 2.0**64
    return "test" if u < test_fraction else "train"


def _by_stem(paths: list[Path]) -> tuple[dict[str, Path], list[Path]]:
    """stem -> file (the first in sorted order), and the further files of an already seen stem."""
    found: dict[str, Path] = {}
    extra = []
    for p in paths:
        if p.stem in found:
            extra.append(p)
        else:
            found[p.stem] = p
    return found, extra


def _files(folder: Path) -> tuple[list[Path], list[Rejected]]:
    """The raster images lying directly in `folder`, sorted by name, and reject lines for the other images there
    (hidden, a format it does not read) and for subfolders holding images."""
    images, rejects = folder_images(NAME, folder, USES)
    rejects += [Rejected(NAME, str(p), f"a {p.suffix} file: {TITLE} reads {USES} as PNG, JPEG, TIFF, BMP or WebP")
                for p in images if p.suffix.lower() not in RASTER_EXTENSIONS]
    return [p for p in images if p.suffix.lower() in RASTER_EXTENSIONS], rejects


def _is_motion(stem: str) -> bool:
    return stem.lower().startswith("motion")


def list_tasks(root: Path, opts: IngestOptions) -> Iterator[Task | Rejected]:
    """One blur-map task per out-of-focus photo with a mask; rejects for motion photos and unpaired files.

    With `--cuhk-white-is auto` the photos and masks are read once here, to decide the polarity."""
    root = Path(root)
    layout.check_layout(SOURCE, root)
    if opts.cuhk_white_is not in WHITE_IS:
        raise IngestError(f"--cuhk-white-is must be {' | '.join(WHITE_IS)}, not {opts.cuhk_white_is!r}")
    split_of("", opts.cuhk_test_fraction)  # checks the fraction before any work
    data = root_of(root)
    images_dir = image_dir(data)
    uses = f"{images_dir.name}/ and {MASK_DIR}/"  # images/ beside image/ is a folder not used
    rejects: list[Rejected] = list(layout.unused_images(NAME, data, (images_dir.name, MASK_DIR), uses, depth=2))
    (image_files, more), (mask_files, masks_more) = _files(images_dir), _files(data / MASK_DIR)
    rejects += more + masks_more
    images, extra_images = _by_stem(image_files)
    masks, extra_masks = _by_stem(mask_files)
    for p in extra_images + extra_masks:
        rejects.append(Rejected(NAME, str(p), f"another file with the stem {p.stem!r} is already used"))
    pairs: list[tuple[str, Path, Path]] = []
    for stem in sorted(set(images) | set(masks)):
        image, mask = images.get(stem), masks.get(stem)
        if _is_motion(stem):
            rejects.append(Rejected(NAME, str(image or mask), MOTION_REASON))
        elif mask is None:
            rejects.append(Rejected(NAME, str(image), f"no mask {MASK_DIR}/{stem}.png for this image"))
        elif image is None:
            rejects.append(Rejected(NAME, str(mask), f"no image {images_dir.name}/{stem}.jpg for this mask"))
        else:
            pairs.append((stem, image, mask))
    yield from rejects
    if not pairs:
        if not images and not masks:
            yield Rejected(NAME, str(data), f"no images under {images_dir.name}/ and {MASK_DIR}/")
        return
    if opts.cuhk_white_is == "auto":
        white_is, evidence, _ = decide_white_is(((i, m) for _, i, m in pairs), root)
        record = {"white_is": white_is, "decided_by": "auto", "evidence": evidence}
    else:
        record = {"white_is": opts.cuhk_white_is, "decided_by": "option", "evidence": None}
    for stem, image, mask in pairs:
        scene = key_part(stem)
        split = split_of(stem, opts.cuhk_test_fraction)
        meta = {"scene": stem, "blur_type": "defocus", "blurmask": dict(record),
                "origin": [relpath(image, root), relpath(mask, root)]}  # [photo, mask]
        yield Task(NAME, split, scene, f"{NAME}/{scene}", {"blur": str(image), "blurmask": str(mask)}, meta,
                   {"white_is": record["white_is"]})


def manifest_options(tasks: list[Task]) -> dict[str, Any]:
    """manifest.json's options entry: the polarity decided while listing (`cuhk_blurmask`)."""
    return {"cuhk_blurmask": dict(tasks[0].meta["blurmask"])} if tasks else {}


# --------------------------------------------------------------------------------------- load


def load(task: Task, opts: IngestOptions) -> list[Sample]:
    """Decode the photo (RGB 8-bit) and its mask; RejectError for a size mismatch or a non-binary mask."""
    image_path, mask_path = task.files["blur"], task.files["blurmask"]
    try:
        image, mask = read_image(image_path), read_mask(mask_path)
    except ImageError as exc:
        raise RejectError(exc.path, exc.reason) from exc
    (ih, iw), (mh, mw) = image.shape[:2], mask.shape[:2]
    if (ih, iw) != (mh, mw):
        raise RejectError(mask_path, f"size mismatch: image {iw}x{ih} ({image_path}) vs mask {mw}x{mh} ({mask_path})")
    share = grey_share(mask)
    if share > NOT_BINARY:
        raise RejectError(mask_path, f"not a binary blur map: {share:.0%} of its pixels are between "
                                     f"{GREY_LOW} and {GREY_HIGH}")
    meta = empty_meta(source=task.source, split=task.split, scene=task.meta["scene"], blur_type="defocus",
                      bit_depth=8 if image.dtype == np.uint8 else 16, height=ih, width=iw,
                      origin=task.meta["origin"])
    meta["blurmask"] = dict(task.meta["blurmask"])
    blurmask = to_blurmask(white_of(mask), task.options["white_is"])
    return [Sample(key=task.key, sharp=None, blur=image, meta=meta, blurmask=blurmask)]


SOURCE = DatasetSource(NAME, list_tasks, load, title=TITLE, expected=EXPECTED,
                       layout_problem=layout_problem, root_of=root_of, manifest_options=manifest_options)
