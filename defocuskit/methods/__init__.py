"""The methods defocuskit trains and runs, by name (an explicit table, no import-time magic)."""

from __future__ import annotations

import importlib

from defocuskit.config.typed import did_you_mean
from defocuskit.methods.base import Method

# name -> module defining METHOD; imported only when asked for, so heavy deps stay lazy.
_MODULES = {
    "hidd": "defocuskit.methods.hidd",
    "rddm": "defocuskit.methods.rddm",
    "nafnet": "defocuskit.methods.nafnet",
    "defocus-map": "defocuskit.methods.defocus_map",
    "jdrl": "defocuskit.methods.jdrl",
    "dncnn": "defocuskit.methods.dncnn",
    "ffdnet": "defocuskit.methods.ffdnet",
    "cyclegan": "defocuskit.methods.cyclegan",
    "restormer": "defocuskit.methods.restormer",
    "ifan": "defocuskit.methods.ifan",
    "drbnet": "defocuskit.methods.drbnet",
}


def method_names() -> list[str]:
    """Names of the trainable methods."""
    return sorted(_MODULES)


def release_method_names() -> list[str]:
    """Names of the methods whose port reads the authors' published checkpoints (Method.release)."""
    return [name for name in method_names() if get_method(name).release is not None]


def get_method(name: str) -> Method:
    """The Method called `name`; a clear error for an unknown one."""
    if not isinstance(name, str) or name not in _MODULES:  # a YAML list or mapping is no name (nor hashable)
        raise ValueError(f"unknown method '{name}' (known: {', '.join(method_names())}){did_you_mean(name, _MODULES)}")
    return importlib.import_module(_MODULES[name]).METHOD
