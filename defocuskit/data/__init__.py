"""Ingest, shards and their readers. `hf_features` / `hf_decode` (Hugging Face `datasets`) load on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["hf_decode", "hf_features"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from defocuskit.data import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'defocuskit.data' has no attribute {name!r}")
