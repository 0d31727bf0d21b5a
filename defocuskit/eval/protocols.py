"""Evaluation protocols (`defocuskit eval --protocol`): how the images are read and the outputs taken before the
metrics (eval/scoring.py) see them.

- `default`, the toolkit's (DESIGN.md section 6): sources at their stored bit depth (DPDD's 16-bit PNGs as 16
  bits), whole images (each network's input padded to its multiple and cropped back), every output rounded to the
  reference's bit depth, as it would be saved, before scoring.
- `dpdd8`, the published DPDD tables' (the releases' test scripts: Restormer's test_single_image_defocus_deblur.py,
  IFAN's eval.py, DRBNet's run.py, JDRL's test_model.py): every image as `cv2.imread(path, cv2.IMREAD_COLOR)` reads
  it, i.e. a 16-bit PNG reduced to its high byte (v >> 8), then / 255; each image cropped (top-left kept) to the
  crop multiple of the evaluated releases (IFAN 8, DRBNet and JDRL 16, Restormer none; DPDD's 1680 x 1120 frames
  are multiples of 16, so nothing is cut there); outputs clipped to [0, 1] and scored as the floats they are, as
  every one of those scripts scores them (they round to 8 bits only the images they save). Where models of several
  releases are scored together, the crop is the least common multiple of theirs, so that every method and the
  input are scored on the same pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from defocuskit.imaging import optics

PROTOCOLS = {
    "default": "defocuskit's: sources at their stored bit depth (16-bit read as 16-bit), whole images (padded for "
               "the network, cropped back), outputs rounded to the reference's bit depth before scoring",
    "dpdd8": "the published DPDD tables' (the releases' test scripts): images read as cv2.imread(IMREAD_COLOR) "
             "reads them (16-bit PNGs reduced to their high byte) / 255, cropped to the releases' crop multiple, "
             "outputs clipped to [0, 1] and scored unrounded",
}
_IMAGES = ("sharp", "blur")
_MAPS = ("coc", "coc_sign", "blurmask")  # per-pixel members cropped with the images


@dataclass(frozen=True)
class EvalProtocol:
    """One protocol as it will run: its name, the crop multiple, whether images become 8-bit and outputs are
    rounded to the reference's depth."""

    name: str = "default"
    crop_multiple: int = 1
    eight_bit: bool = False
    quantize: bool = True

    def describe(self) -> dict[str, Any]:
        """The report's protocol entries of this protocol."""
        quantization = ("references and inputs at their stored bit depth; outputs rounded to the reference's bit "
                        "depth (as saved) before scoring") if self.quantize else (
            "references and inputs as cv2.imread(IMREAD_COLOR) reads them: 8-bit (16-bit PNGs: v >> 8) / 255; "
            "outputs clipped to [0, 1] and scored unrounded (as the releases' test scripts score them)")
        crop = (f"each image cropped (top-left kept) to a multiple of {self.crop_multiple} px, as the evaluated "
                "releases' test scripts crop" if self.crop_multiple > 1 else "none: whole images")
        return {"protocol": self.name, "protocol_description": PROTOCOLS[self.name], "quantization": quantization,
                "crop": crop}


def release_crop_multiple(path: Path) -> int:
    """The crop multiple of the release whose network the model file `path` holds (its method's Release protocol;
    1 for a method that ports no release or a file that cannot be read)."""
    from defocuskit.io.modelfile import read_metadata
    from defocuskit.methods import get_method

    try:
        meta = read_metadata(path)
        if "release" in meta:  # an imported file records the protocol of its release
            return int(json.loads(meta["release"])["protocol"]["crop_multiple"])
        release = get_method(str(json.loads(meta["recipe"]).get("method"))).release
    except Exception:  # an unreadable file is named by the runner that loads it
        return 1
    return release.protocol.crop_multiple if release is not None else 1


def resolve(name: str, checkpoints: Iterable[Path]) -> EvalProtocol:
    """The protocol `name` for these model files; ValueError for an unknown name."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")
    if name == "default":
        return EvalProtocol()
    multiple = math.lcm(1, *(release_crop_multiple(Path(p)) for p in checkpoints))
    return EvalProtocol(name, multiple, eight_bit=True, quantize=False)


def cv2_8bit(image: np.ndarray) -> np.ndarray:
    """`image` as cv2.imread(path, cv2.IMREAD_COLOR) reads the PNG holding it: 16-bit samples reduced to their
    high byte (v >> 8, what libpng's strip_16 does for OpenCV), 8-bit ones unchanged."""
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return image


def crop(array: np.ndarray, multiple: int) -> np.ndarray:
    """`array` (H, W, ...) cut to H - H % multiple rows and W - W % multiple columns from the top left
    (IFAN's refine_image, DRBNet's crop_image, JDRL's h // 16 * 16)."""
    h, w = array.shape[:2]
    return array[: h - h % multiple, : w - w % multiple]


def apply(samples: Iterable[dict[str, Any]], protocol: EvalProtocol) -> Iterator[dict[str, Any]]:
    """The shard samples as `protocol` reads them (unchanged under the default)."""
    for sample in samples:
        if protocol.eight_bit or protocol.crop_multiple > 1:
            sample = dict(sample)
            for key in _IMAGES:
                if sample.get(key) is not None:
                    image = cv2_8bit(sample[key]) if protocol.eight_bit else sample[key]
                    sample[key] = crop(image, protocol.crop_multiple)
            for key in _MAPS:
                if sample.get(key) is not None:
                    sample[key] = crop(sample[key], protocol.crop_multiple)
            if sample.get("blur") is not None and isinstance(sample.get("meta"), Mapping):
                sample["meta"] = cropped_meta(sample["meta"], *sample["blur"].shape[:2])
        yield sample


def cropped_meta(meta: Mapping[str, Any], height: int, width: int) -> Mapping[str, Any]:
    """The metadata of a sample cropped (top left kept) to `height` x `width` px, as ingest's patches record theirs:
    `sensor_width_mm` the width the crop covers, `patch_of` the image it was cut from (where it was none's patch),
    so --coc fnumber's pixel pitch and what is relative to a photo's long side (a camera's sensor width, the f-number
    bound K) stay the whole image's (optics.sensor_span_px, optics.source_long_side)."""
    old_h, old_w = meta.get("height"), meta.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (old_h, old_w)) or (
            old_h, old_w) == (height, width):
        return meta
    out = dict(meta, height=int(height), width=int(width))
    if not isinstance(meta.get("patch_of"), Mapping):
        out["patch_of"] = {"height": old_h, "width": old_w, "y": 0, "x": 0}
    sensor = meta.get("sensor_width_mm")
    if isinstance(sensor, (int, float)) and not isinstance(sensor, bool):
        out["sensor_width_mm"] = optics.sensor_width_of_crop(float(sensor), int(width), old_w)
    return out
