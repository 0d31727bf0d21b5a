"""defocuskit: single-image defocus deblurring research toolkit.

    import defocuskit
    model = defocuskit.load("runs/nafnet-tiny/model.safetensors")   # a model file, a save_pretrained folder or a Hub id
    sharp = model.deblur(image)                                     # numpy HxWxC / HxW or (B)CHW tensor; same type back

`load` and `DeblurModel` (defocuskit.api) are imported on first use: `import defocuskit` stays cheap (no torch).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

__version__ = "0.1.0"

__all__ = ["DeblurModel", "__version__", "load"]

_LAZY = {"load": "defocuskit.api", "DeblurModel": "defocuskit.api"}

if _TYPE_CHECKING:
    from defocuskit.api import DeblurModel, load


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'defocuskit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({k for k in globals() if not k.startswith("_")} | set(__all__))
