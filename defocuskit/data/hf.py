"""Reading the shards with Hugging Face `datasets`, 16-bit PNGs kept 16-bit.

    import datasets
    from defocuskit.data import hf_decode, hf_features

    ds = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train", features=hf_features())
    pairs = ds.filter(lambda blur, sharp: blur is not None and sharp is not None,
                      input_columns=["blur.png", "sharp.png"])
    row = pairs.with_transform(hf_decode)[0]   # {key, sharp, blur, coc, coc_sign, blurmask, left, right, meta}

Why features: without them `datasets` infers the columns from the first five samples of the first
shard and decodes `.png` members with `datasets.Image`, i.e. through PIL, which turns 16-bit RGB into
8-bit. `hf_features()` declares every member the shards can hold, the PNGs as bytes and `json` with
the fixed metadata schema (`defocuskit.data.metadata`), so any mix of shards loads in one call (a
member a sample lacks is None: `blur.png` of a sharp-only sample, `sharp.png` of a blur-map sample,
`coc.png` where no CoC is known) and `hf_decode` decodes the PNGs with OpenCV.
A `json` key outside the schema (a hand-made shard's own, kept by `pseudo-coc`) is no column, so `datasets`
drops it where `iter_samples` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from defocuskit.data import metadata
from defocuskit.data.reader import ShardError, decode_sample
from defocuskit.data.shards import MEMBERS
from defocuskit.data.tar_checks import size_wrong

# what hf_decode gives (decode_sample's keys)
DECODED = ("key", "sharp", "blur", "coc", "coc_sign", "blurmask", "left", "right", "meta")
_PNG_MEMBERS = tuple(m for m in MEMBERS if m.endswith(".png"))


def _feature(field: metadata.Field) -> Any:
    import datasets

    kinds = {
        "str": datasets.Value("string"),
        "float": datasets.Value("float64"),
        "int": datasets.Value("int64"),
        "strs": datasets.List(datasets.Value("string")),
        "floats": datasets.List(datasets.Value("float64")),
        "ints": datasets.List(datasets.Value("int64")),
        "matrix": datasets.List(datasets.List(datasets.Value("float64"))),
    }
    return kinds[field.kind]


def json_feature() -> dict[str, Any]:
    """The `json` member's features: the metadata schema as a struct (format-2 types)."""
    return {key: ({k: _feature(f) for k, f in field.items()} if isinstance(field, dict) else _feature(field))
            for key, field in metadata.SCHEMA.items()}


def hf_features() -> Any:
    """`datasets.Features` of a defocuskit shard: every PNG member as bytes (16 bits kept; decode with
    `hf_decode`), `json` as the metadata schema, `__key__` and `__url__` as text.

    Pass it as `load_dataset("webdataset", ..., features=hf_features())`. Format-1 shards (null for
    unknown) load too, with None where their metadata had null or lacked a key; only the `origin` of
    their CUHK blur-map samples (then a {blur, blurmask} dict) does not fit the list type: re-ingest those."""
    import datasets

    columns: dict[str, Any] = {m: datasets.Value("large_binary") for m in _PNG_MEMBERS}
    columns["json"] = json_feature()
    columns["__key__"] = datasets.Value("string")
    columns["__url__"] = datasets.Value("string")
    return datasets.Features(columns)


def _check_members(row: Mapping[str, Any]) -> None:
    for member in _PNG_MEMBERS:
        value = row.get(member)
        if value is None or isinstance(value, (bytes, bytearray, memoryview)):
            continue
        if isinstance(value, Mapping) and isinstance(value.get("bytes"), (bytes, bytearray)):
            continue
        raise TypeError(f"sample {row.get('__key__', '?')}: member {member} is a {type(value).__name__}, not PNG "
                        "bytes; load the shards with features=defocuskit.data.hf_features() (datasets.Image "
                        "decodes through PIL, which turns 16-bit PNGs into 8-bit)")


def _is_batch(example: Mapping[str, Any]) -> bool:
    """Whether `example` is a batch (a list per column) rather than one row, whichever columns it holds."""
    return any(isinstance(example.get(c), list) for c in ("__key__", "__url__", *_PNG_MEMBERS))


def hf_decode(example: Mapping[str, Any]) -> dict[str, Any]:
    """A `datasets` row of `hf_features()` -> {key, sharp, blur, coc, coc_sign, blurmask, left, right, meta} (as
    `decode_sample`):
    RGB uint8 / uint16 arrays as stored (None for members the sample lacks), coc float32 in pixels,
    blurmask uint8, meta with None where unknown.

    Takes one row (`ds[i]`, `IterableDataset.map`) or a batch, a dict of lists (`ds.with_transform`,
    `IterableDataset.map(batched=True)`), any subset of the columns, and returns the same shape. `Dataset.map`
    stores what it returns in Arrow (arrays become nested lists; 8- and 16-bit images, or a member some rows lack,
    cannot share a column): there, call hf_decode inside the mapped function and return what you compute.
    A row of a local shard whose size is not the one its folder's manifest lists is a ShardError naming the shard
    (`datasets` reads a tar cut short at a member's header as a shorter tar)."""
    if _is_batch(example):
        columns = list(example)
        rows = [dict(zip(columns, values)) for values in zip(*(example[c] for c in columns))]
        decoded = [hf_decode(row) for row in rows]
        return {k: [d[k] for d in decoded] for k in DECODED}
    _check_members(example)
    url = example.get("__url__")
    if isinstance(url, str) and (wrong := size_wrong(url)) is not None:  # datasets reads a cut tar as a shorter one
        raise ShardError(wrong)
    return decode_sample(example)
