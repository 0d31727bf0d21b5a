"""Reading a shard folder (the format: `shards`): the manifest, shard specs, and samples decoded with 16 bits kept.

`decode_sample` gives the Python view of a sample's metadata (`metadata.to_python`: every schema key,
None where unknown) for shards of format 1 (null for unknown) and 2 (the fixed schema); the writer
side is `shards`.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from defocuskit.data import metadata
from defocuskit.data.manifest_checks import manifest_wrong, split_of, warn_incomplete
from defocuskit.data.tar_checks import MANIFEST, SampleRuns, damaged_shard, size_wrong
from defocuskit.io.formats import ImageError
from defocuskit.io.images import decode_image

COC_SCALE = 256.0  # coc.png stores the circle-of-confusion diameter in pixels x 256, 16-bit


class ShardError(RuntimeError):
    """A shard folder or shard spec that cannot be used; the message names it."""


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a shard folder."""
    path = Path(folder) / MANIFEST
    expected = "(expected a shard folder written by `defocuskit ingest`)"
    if not Path(folder).exists():
        raise FileNotFoundError(f"{folder}: does not exist {expected}")
    if not Path(folder).is_dir():
        raise ShardError(f"{folder}: a file, not a folder {expected}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (not a shard folder written by `defocuskit ingest`?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ShardError(f"{path}: not valid JSON ({exc})") from exc
    wrong = manifest_wrong(manifest)
    if wrong:
        raise ShardError(f"{path}: {wrong}; ingest the folder again (the same command rewrites the manifest)")
    return manifest


def _expand_braces(spec: str) -> list[str]:
    from braceexpand import braceexpand

    return list(braceexpand(spec))


def shard_urls(spec: str | Path, split: str | None = None) -> list[str]:
    """Shard paths from a shard folder, a glob pattern or a brace pattern ("shards/train-{000000..000003}.tar").

    A folder uses its manifest (or globs `*.tar` without one); `split` keeps the shards of that split.
    Remote specs (`pipe:`, `s3://`, ...) are brace-expanded but not checked; a local shard whose size is not the
    one its manifest lists is a ShardError (`tar_checks.size_wrong`).
    """
    text = str(spec)
    remote = text.startswith("pipe:") or "://" in text
    path = Path(text)
    if not remote and path.is_dir():
        if (path / MANIFEST).is_file():
            manifest = read_manifest(path)
            if manifest.get("complete") is False:
                warn_incomplete(path, manifest)
            urls = [str(path / s["name"]) for s in manifest["shards"]]  # a tar it does not list (the user's) unread
        else:
            urls = sorted(glob.glob(str(path / "*.tar")))
    elif remote:
        urls = _expand_braces(text)
    else:
        urls, missing = [], []
        for pattern in _expand_braces(text):
            if glob.has_magic(pattern):
                urls.extend(sorted(glob.glob(pattern)))
            elif os.path.exists(pattern):
                urls.append(pattern)
            else:
                missing.append(pattern)
        if urls and missing:
            raise FileNotFoundError(f"{spec}: {len(missing)} shard(s) missing, e.g. {missing[0]}")
    if split is not None:
        urls = [u for u in urls if split_of(u) == split]
    if not urls:
        splits = f"; its splits: {describe_splits(path)}" if split and not remote and path.is_dir() else ""
        raise FileNotFoundError(f"no shards match {spec!s}" + (f" (split {split!r}{splits})" if split else ""))
    for url in urls if not remote else ():  # before any sample is read: a shard cut short reads as a shorter tar
        if (wrong := size_wrong(url)) is not None:
            raise ShardError(wrong)
    return urls


def decode_sample(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A raw WebDataset sample (bytes members) -> {key, sharp, blur, coc, coc_sign, blurmask, left, right, meta};
    16-bit PNGs stay 16-bit.

    `coc` is float32 (H, W) in pixels (or None), unsigned; `coc_sign` int8 (H, W), +1 behind the focal plane and
    -1 in front of it, where the shard records it (cocsign.png), else None (`signed_coc` combines them); `blur` is
    None for sharp-only samples; `meta` is the Python view of the metadata (`metadata.to_python`: every schema key,
    None where unknown, shard formats 1 and 2; the `json` member may be bytes, text or an already parsed dict,
    e.g. a `datasets` row). Blur-map samples
    (blur.png + blurmask.png, no sharp.png; e.g. CUHK blur detection) give `sharp` None and `blurmask`
    uint8 (H, W), 255 = blurred (out of focus), 0 = in focus; every other sample gives `blurmask` None.
    `left`, `right`: the blurred shot's dual-pixel views where the sample holds both, else None.
    A sample with neither sharp.png nor blur.png + blurmask.png, without a json member, or whose metadata
    `metadata.to_python` refuses (not a JSON object, a number that is not one, an implausible f-number), or whose
    PNG members are already decoded (webdataset's `.decode()`, `datasets.Image`) is a ShardError naming its shard and
    key.
    """
    key = raw.get("__key__", "<unknown>")
    try:
        return _decode(raw, key)
    except ShardError:
        raise
    except Exception as exc:  # a damaged member: one line naming the shard, the sample and what is wrong
        raise ShardError(f"{where(raw)}sample {key}: {damage(exc)}") from None


def sizes_differ(images: Mapping[str, np.ndarray | None]) -> str | None:
    """What is wrong where image members differ in size ("members differ in size (width x height): blur 256x171,
    sharp 10x10"), else None; absent members (None) are left out."""
    sizes = {name: image.shape[:2] for name, image in sorted(images.items()) if image is not None}
    if len(set(sizes.values())) <= 1:
        return None
    return "members differ in size (width x height): " + ", ".join(f"{n} {w}x{h}" for n, (h, w) in sizes.items())


def decode_same_size(raw: Mapping[str, Any], names: tuple[str, ...] = ("blur", "sharp")) -> dict[str, Any]:
    """`decode_sample`, and a ShardError naming the shard and sample where its members `names` differ in size."""
    sample = decode_sample(raw)
    wrong = sizes_differ({name: sample[name] for name in names})
    if wrong:
        raise ShardError(f"{where(raw)}sample {sample['key']}: {wrong}")
    return sample


def shard_error_line(exc: ShardError) -> str:
    """The one-line message of a ShardError, also when a DataLoader worker re-raised it in the main process
    (whose message is then "Caught ShardError in DataLoader worker ..." and the worker's traceback)."""
    text = str(exc).strip()
    if "Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    return last.split("ShardError: ", 1)[-1]


def where(raw: Mapping[str, Any]) -> str:
    """`SHARD: ` for a raw sample that knows its shard, else ''."""
    url = raw.get("__url__")
    return f"{url}: " if url else ""


def damage(exc: BaseException) -> str:
    """What a decoding failure says about the member it came from."""
    if isinstance(exc, json.JSONDecodeError):
        return f"the json member is not JSON ({exc.msg} at character {exc.pos})"
    if isinstance(exc, ImageError):
        return f"{exc.reason} ({Path(str(exc.path)).name})"
    if isinstance(exc, metadata.MetadataError):
        return str(exc)
    return f"damaged metadata or member ({type(exc).__name__}: {exc})"


def _decode(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    def member(name: str) -> Any:
        value = raw.get(name)
        if isinstance(value, Mapping) and "bytes" in value:  # datasets' Image(decode=False)
            value = value["bytes"]
        return value

    for name, value in raw.items():  # a member webdataset's .decode() (or datasets.Image) already turned into an image
        if name.endswith(".png") and value is not None and not isinstance(member(name), (bytes, bytearray, memoryview)):
            raise ShardError(f"{where(raw)}sample {key}: member {name} is a {type(value).__name__}, not the PNG's "
                             "bytes: decode_sample decodes the members itself; give it undecoded samples (map it "
                             "in place of webdataset's .decode())")
    sharp, blur, mask = member("sharp.png"), member("blur.png"), member("blurmask.png")
    if sharp is None and (blur is None or mask is None):
        raise ShardError(f"{where(raw)}sample {key}: no sharp.png member (nor blur.png + blurmask.png of a "
                         "blur-map sample)")
    meta = member("json")
    if meta is None:
        raise ShardError(f"{where(raw)}sample {key}: no json member (the sample's metadata)")
    if isinstance(meta, (bytes, bytearray, str)):
        meta = json.loads(meta)
    coc, sign = member("coc.png"), member("cocsign.png")
    left, right = member("left.png"), member("right.png")
    if left is None or right is None:  # the dual-pixel views come as a pair or not at all
        left = right = None
    return {
        "key": key,
        "sharp": None if sharp is None else decode_image(sharp, f"{key}.sharp.png"),
        "blur": None if blur is None else decode_image(blur, f"{key}.blur.png"),
        "coc": None if coc is None else decode_coc(coc, f"{key}.coc.png"),
        "coc_sign": None if sign is None else np.where(decode_blurmask(sign, f"{key}.cocsign.png") >= 128, 1, -1)
        .astype(np.int8),
        "blurmask": None if mask is None else decode_blurmask(mask, f"{key}.blurmask.png"),
        "left": None if left is None else decode_image(left, f"{key}.left.png"),
        "right": None if right is None else decode_image(right, f"{key}.right.png"),
        "meta": metadata.to_python(meta),
    }


def signed_coc(sample: Mapping[str, Any]) -> np.ndarray | None:
    """The sample's CoC map with its sign where the shard records one (negative in front of the focal plane)."""
    coc, sign = sample.get("coc"), sample.get("coc_sign")
    if coc is None or sign is None:
        return coc
    return (coc * sign).astype(np.float32)


def decode_coc(data: bytes, name: str) -> np.ndarray:
    """coc.png bytes -> float32 (H, W), the CoC diameter in pixels; ImageError where the PNG is not 16-bit grey (an
    8-bit map read as pixels x 256 would be at most 0.996 px, silently: a hand-made shard's map in plain pixels)."""
    coc = decode_image(data, name)
    if coc.dtype != np.uint16 or coc.ndim != 2:
        bits = coc.dtype.itemsize * 8
        depth = f"{'an' if bits == 8 else 'a'} {bits}-bit {'grey' if coc.ndim == 2 else 'colour'}"
        raise ImageError(name, f"coc.png is {depth} PNG, not 16-bit grey (the CoC diameter in pixels x "
                         f"{COC_SCALE:g}, as `defocuskit.data.shards.encode_coc` writes it)")
    return coc.astype(np.float32) / COC_SCALE


def decode_blurmask(data: bytes, name: str) -> np.ndarray:
    """blurmask.png bytes -> uint8 (H, W), 255 = blurred, 0 = in focus (a stray colour PNG is reduced to grey)."""
    mask = decode_image(data, name)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype == np.uint16:
        mask = (mask >> 8).astype(np.uint8)
    return np.ascontiguousarray(mask, dtype=np.uint8)


def iter_raw(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one local tar shard, grouped by key as WebDataset groups them (what `tar_checks` refuses is
    a ShardError, and a size that is not the one the manifest lists)."""
    try:
        check_regular(url)
        if (wrong := size_wrong(url)) is not None:
            raise ShardError(wrong)
        yield from _iter_tar(url)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(damaged_shard(url, exc)) from None


def check_regular(url: str) -> None:
    """A ShardError where a local shard (or what its link points to) is not a file: a device (`/dev/zero` reads
    forever), a FIFO (blocks until written) or a socket; OSError where it cannot be looked at."""
    mode = os.stat(url).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder: damaged_shard says "Is a directory"
        raise ShardError(f"{url}: not a tar file but a device, FIFO or socket{' (via a link)' * os.path.islink(url)}; "
                         "a shard is a regular file")


def not_a_file_member(info: tarfile.TarInfo) -> str | None:
    """Why a tar member named as a sample's member (`KEY.blur.png`) is not one: a link (symbolic or hard) or a
    directory where a file goes (it was skipped, the sample read as if it had no such member); None for a file, and
    for entries no sample claims (a directory `train/`)."""
    base = os.path.basename(info.name)
    if info.isfile() or "." not in base or base.startswith("."):
        return None
    kind = "a symbolic link" if info.issym() else "a hard link" if info.islnk() else \
        "a directory" if info.isdir() else "not a regular file"
    return f"member {info.name!r} is {kind}: a shard holds its samples' members as regular files"


def _iter_tar(url: str) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] = {}
    runs = SampleRuns(url)  # a sample written twice, a member twice in one, a count the manifest does not list
    with tarfile.open(url, "r") as tar:
        for info in tar:
            if (wrong := not_a_file_member(info)) is not None:
                raise ShardError(f"{url}: {wrong}")
            if not info.isfile():
                continue
            base = os.path.basename(info.name)
            if "." not in base:
                continue
            stem, ext = base.split(".", 1)
            key = os.path.join(os.path.dirname(info.name), stem)
            if (wrong := runs.add(info.name, key, ext)) is not None:
                raise ShardError(wrong)
            if current and current["__key__"] != key:
                yield current
                current = {}
            current["__key__"] = key
            current["__url__"] = url
            current[ext] = tar.extractfile(info).read()
    if current:
        yield current
    if (wrong := runs.end()) is not None:
        raise ShardError(wrong)


def iter_samples(spec: str | Path, split: str | None = None) -> Iterator[dict[str, Any]]:
    """Decoded samples of the shards that `spec` names, in shard order."""
    for url in shard_urls(spec, split):
        for raw in iter_raw(url):
            yield decode_sample(raw)


def describe_splits(folder: Path) -> str:
    """The splits of a shard folder with their sample counts (from the manifest, else the shard names), for errors."""
    try:
        counts = read_manifest(folder)["counts"]["by_split"]
        found = {str(k): int(v) for k, v in counts.items()}
    except (FileNotFoundError, ShardError, KeyError, TypeError, ValueError):
        found = {}
        for tar in folder.glob("*-*.tar"):
            found.setdefault(tar.name.rsplit("-", 1)[0], 0)
    if not found:
        return "none"
    return ", ".join(f"{k} ({v} samples)" if v else k for k, v in sorted(found.items()))
