"""Pairs into triplets (JDRL paper): a trained JDRL model's reblurring-module blur map as a pseudo CoC map.

For every paired sample of a shard folder, the deblurring network restores the blurry image and the
reblurring module, fed (restored, blurry), predicts per-pixel isotropic kernels; their expected
disc-equivalent radius R (pixels; `ReblurModule.forward`) gives the circle-of-confusion diameter

    coc = 2 R

written as `coc.png` into a new shard folder beside the sample's untouched blur.png, sharp.png, other members
(dual-pixel views) and its metadata (plus "coc_source"), so that `defocus-map` (data kind "coc") trains on real
misaligned pairs.
Only the blurry image is used: the sharp image may be misaligned and is not needed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defocuskit.data import folder, metadata, reader, shards
from defocuskit.data.manifest import prune, publish_with_record, read_record, regenerate
from defocuskit.data.records import tar_intact, tar_stamp
from defocuskit.inference.tiling import run_in_tiles
from defocuskit.io.images import decode_image, encode_png, to_float
from defocuskit.train.augment import BT601

COC_SOURCE = "jdrl-reblur"
COC_RULE = "coc = 2 x expected disc-equivalent kernel radius of the JDRL reblurring module"
TILE_BATCH = 4  # tiles through the network at once (restore_image's default --batch)
REPLACED = ("coc.png", "cocsign.png")  # the input's own CoC map and its sign: the pseudo map replaces both
KEPT = "every member but coc.png, cocsign.png"  # in the shards' fingerprint: older versions kept blur and sharp alone


def _stamp(path: str | Path) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def coc_map(model: torch.nn.Module, blur: np.ndarray, device: str = "cpu", tile: int | None = None,
            batch: int = TILE_BATCH) -> np.ndarray:
    """The pseudo CoC diameter (H, W) in pixels of a blurry uint8/uint16 (H, W, C) image: the network run in
    overlapping tiles of `tile` px (`write_pseudo_coc`: the model's training size; None: the whole image at once),
    blended as eval blends a tiled model's (`inference.tiling.run_in_tiles`), so its memory is bounded by the tile,
    not the image (a whole 2048 x 2048 image took 8 GB with jdrl-tiny)."""
    x = to_float(blur)
    if x.ndim == 2:  # a grey blur.png (a hand-made shard): its one channel is R = G = B
        x = np.repeat(x[..., None], 1 if model.deblur.in_ch == 1 else 3, axis=2)
    if model.deblur.in_ch == 1 and x.shape[2] == 3:
        x = (x @ BT601)[..., None]  # the model was trained on luminance (data.channels 1)

    def diameter(tiles: np.ndarray) -> np.ndarray:  # (B, h, w, C) -> (B, h, w, 1)
        t = torch.from_numpy(np.ascontiguousarray(tiles.transpose(0, 3, 1, 2))).float().to(device)
        _, radius = model.pseudo_map(t)
        return (2.0 * radius).float().cpu().numpy().transpose(0, 2, 3, 1)

    return run_in_tiles(diameter, np.asarray(x, np.float32), tile, batch=batch)[:, :, 0]


def write_pseudo_coc(checkpoint: str | Path, shards_in: str | Path, out: str | Path, *, split: str | None = None,
                     device: str = "cpu", overwrite: bool = False) -> dict[str, Any]:
    """Write a shard folder `out`: the paired samples of `shards_in` with a JDRL pseudo `coc.png`; its manifest.

    Samples without blur.png are left out (recorded in rejects.jsonl); an existing coc.png is replaced and its sign
    (cocsign.png) left out; every other member (the dual-pixel views left.png, right.png) is kept as it is.
    Rerunning the same command skips shards already written for the same checkpoint and input shard, unless the
    shard is no longer as written (its size or content hash not its record's: cut short, grown, replaced).
    `out` is held and checked as ingest's is (`data.folder`): only files this tool wrote there are replaced
    or removed; a folder of another dataset is refused unless `overwrite` (FolderError).
    """
    from defocuskit.inference.load import load_model
    from defocuskit.io.devices import resolve_device

    device = resolve_device(device)
    out = Path(out)
    if Path(shards_in).resolve() == out.resolve():
        raise ValueError(f"--out must be a new folder, not the input shard folder {shards_in}")
    _, recipe, model = load_model(checkpoint, device=device, expect_method="jdrl")
    tile = int(recipe.data.image_size)  # the size it trained on, as eval runs a tiled model: memory bounded
    urls = reader.shard_urls(shards_in, split)
    for url in urls:  # a shard of --out named by its file, a pattern or a link: it would be replaced by its output
        if not (url.startswith("pipe:") or "://" in url) and Path(url).resolve().parent == out.resolve():
            raise ValueError(f"--shards {url}: a shard in --out {out}, which would replace it; give a new folder")
    if not _has_pairs(urls):  # every sample would be a reject: an empty dataset, not a result
        raise ValueError(f"--shards {shards_in}{f' (split {split!r})' if split else ''}: no paired sample (blur.png "
                         "with sharp.png); pseudo-coc writes a CoC map beside each pair (shards of --synthetic, "
                         "--pairs, --dpdd, ...)")
    out.mkdir(parents=True, exist_ok=True)
    model_stamp = _stamp(checkpoint)
    plan = {}
    for url in urls:
        name = Path(url).name[: -len(".tar")]
        if name in plan:
            raise ValueError(f"two input shards are named {name}.tar; give one shard folder")
        plan[name] = _digest({"model": model_stamp, "shard": _stamp(url), "rule": COC_RULE, "tile": tile,
                              "keeps": KEPT})  # a shard an older version wrote without the views is written anew
    options = {"pseudo_coc": {"checkpoint": str(checkpoint), "shards": str(shards_in), "split": split,
                              "rule": COC_RULE}}
    with folder.run_lock(out, "pseudo-coc", folder.plan_digest(plan)):
        folder.check_dataset(out, folder.dataset_identity(options), overwrite)
        folder.check_collisions(out, plan)
        regenerate(out, plan, options)  # "complete": false until every shard of this plan is written
        for url in urls:
            name = Path(url).name[: -len(".tar")]
            record = read_record(out, name)
            tar = out / f"{name}.tar"
            if record and record.get("fingerprint") == plan[name] and tar.is_file() and tar_intact(record, tar):
                continue
            _convert_shard(model, url, out, name, plan[name], str(checkpoint), device, tile)
        prune(out, plan, set(plan))
        manifest = regenerate(out, plan, options)
    if not manifest["counts"]["samples"]:  # remote shards, not looked into before
        raise ValueError(f"--shards {shards_in}: no paired sample (blur.png with sharp.png) was found; {out} "
                         "holds none")
    return manifest


def _has_pairs(urls: list[str]) -> bool:
    """Whether the shards hold a sample with blur.png and sharp.png, from the tar headers (True for remote shards)."""
    from defocuskit.data.tar_index import index_shard, is_local

    if not all(is_local(u) for u in urls):
        return True
    return any(entry.has(("blur.png", "sharp.png")) for url in urls for entry in index_shard(url))


def kept_members(raw: dict[str, Any]) -> dict[str, bytes]:
    """The members of an input sample the output sample keeps as they are: all but the CoC map and its sign (the
    pseudo map has none) and the metadata (rewritten): blur.png, sharp.png, the dual-pixel views left.png and
    right.png, any other."""
    return {name: data for name, data in raw.items()
            if not name.startswith("__") and name not in REPLACED and name != "json"}


def stored_meta(raw: dict[str, Any], coc_source: str, coc_model: str, where: str) -> dict[str, Any]:
    """The output sample's metadata: the input's in the stored form of the shard format the output's manifest
    names (an older input's nulls as the schema's unknowns), keys outside the schema kept as they are, and what
    wrote the CoC map. A json member the schema refuses: ValueError naming `where`."""
    try:
        given = metadata.to_python(json.loads(raw["json"]) if "json" in raw else {})
    except (ValueError, metadata.MetadataError) as exc:
        raise ValueError(f"{where}: json: {exc}") from None
    extra = {k: v for k, v in given.items() if k not in metadata.SCHEMA}
    known = {k: v for k, v in given.items() if k in metadata.SCHEMA}
    return {**metadata.to_stored({**known, "coc_source": coc_source, "coc_model": coc_model}), **extra}


def _convert_shard(model: torch.nn.Module, url: str, out: Path, name: str, fingerprint: str, checkpoint: str,
                   device: str, tile: int | None) -> None:
    """One input shard -> one output shard of the same name (the maps in tiles of `tile` px), committed with its
    record."""
    writer = shards.AtomicShard(out, name)
    counts: Counter = Counter()
    rejects: list[dict[str, Any]] = []
    split = name.rsplit("-", 1)[0]
    try:
        for raw in reader.iter_raw(url):
            key = raw["__key__"]
            if "blur.png" not in raw or "sharp.png" not in raw:
                rejects.append({"file": f"{url}:{key}", "reason": "no blur.png/sharp.png pair: no pseudo CoC"})
                continue
            meta = stored_meta(raw, COC_SOURCE, Path(checkpoint).name, f"{url}:{key}")
            blur = decode_image(raw["blur.png"], f"{key}.blur.png")
            coc = coc_map(model, blur, device, tile)
            writer.write(key, kept_members(raw) | {"coc.png": encode_png(shards.encode_coc(coc)),
                                                   "json": shards.dumps(meta).encode("utf-8")})
            counts[(str(meta.get("source")), shards.f_number_key(meta.get("f_number")))] += 1
        writer.seal()
    except BaseException:
        writer.abort()
        raise
    by_source, by_f = Counter(), Counter()
    for (src, f), n in counts.items():
        by_source[src] += n
        by_f[f] += n
    record = {
        "name": name, "split": split, "fingerprint": fingerprint, "samples": sum(counts.values()),
        "by_source": dict(sorted(by_source.items())),
        "by_f_number": dict(sorted(by_f.items(), key=lambda kv: shards.f_sort_key(kv[0]))),
        "table": [{"source": s, "f_number": f, "samples": n} for (s, f), n in sorted(counts.items())],
        "rejects": rejects, "dropped": 0, "blurred": sum(counts.values()),  # every sample written holds blur.png
        **tar_stamp(writer.partial),  # the readers check its size
    }
    publish_with_record(out, writer, record)
