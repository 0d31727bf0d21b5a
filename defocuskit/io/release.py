"""Published checkpoints (`.pth` files of the authors' releases) read safely: `torch.load(weights_only=True)` only,
so a file that needs Python code to be unpickled is refused, naming what it needs. Also the layout of a checkpoint
(nested keys -> tensor shapes), which `tools/check_release.py` writes to tests/data/ and tests fill with random
tensors."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

# Container keys under which released training code saves the network's state dict, in the order tried:
# BasicSR (Restormer) 'params' / 'params_ema', plain training scripts 'state_dict' / 'model' / 'net'.
STATE_KEYS = ("params", "params_ema", "state_dict", "model", "net", "network")
# Prefixes of wrapped modules: torch.nn.DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# What torch.load(weights_only=True) names when a pickle needs code: "Unsupported global: GLOBAL argparse.Namespace
# was not an allowed global" (torch <= 2.12 and classes), "unsupported GLOBAL posix.system whose module posix is
# blocked" (torch 2.13, functions of blocked modules), "Unsupported class numpy.dtype" (older torch).
_GLOBAL = re.compile(r"unsupported (?:global:? +)?(?:GLOBAL|class) +([\w.]+)", re.IGNORECASE)
_WEIGHTS_ONLY = "Weights only load failed"  # torch's opening words when weights_only=True refused the file
# A renaming rule: a regular expression matching a whole released name, and the port's name (a template with
# \1 ... group references, or a function of the match).
Rule = tuple[str, str | Callable[[re.Match[str]], str]]


class ReleaseError(ValueError):
    """A release checkpoint that cannot be read or does not fit the port; the message names the file and keys."""


def read_checkpoint(path: str | Path) -> Any:
    """The object a checkpoint file holds, loaded on the CPU with `torch.load(weights_only=True)` (tensors,
    dicts, lists, numbers, strings only); ReleaseError naming the class when the file needs unpickling code."""
    path = Path(path)
    if path.is_dir():  # an unzipped release's folder: "not found" sent the user looking for a missing file
        raise ReleaseError(f"{path}: a folder, not a checkpoint file; give the .pth file in it")
    if path.exists() and not path.is_file():
        raise ReleaseError(f"{path}: not a regular file (a device, pipe or socket); give the checkpoint file")
    if not path.is_file():
        raise ReleaseError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # a plain pickle (not torch.save's) is refused below in one line, unannounced
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        reason = _reason(exc)
        if found is None and (reason is not None or _WEIGHTS_ONLY not in str(exc)):  # "Unsupported operand", ...
            raise _not_a_checkpoint(path) from None
        needs = f"the Python object {found.group(1).rstrip('.')}" if found else "Python objects other than tensors"
        raise ReleaseError(
            f"{path}: refused: it needs {needs} to be unpickled, i.e. code run while loading; defocuskit reads "
            "checkpoints with torch.load(weights_only=True) only. If you trust the file, save its state dict alone "
            "(torch.save(checkpoint['params'], 'weights.pth') in a session that loads it) and import that"
        ) from None
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot be read ({exc.strerror or _first_line(exc)})") from None
    except Exception:  # bytes that are no checkpoint raise anything: KeyError(101), IndexError, struct)
        raise _not_a_checkpoint(path) from None


def _not_a_checkpoint(path: Path) -> ReleaseError:
    """The error for a file torch.load cannot read: what its first bytes show it is, and what was expected."""
    with open(path, "rb") as f:
        head = f.read(64)
    return ReleaseError(f"{path}: not a readable PyTorch checkpoint: {_describe_head(head)}; expected a checkpoint "
                        "torch.save wrote (a zip archive, or a pickle in its legacy format)")


def _describe_head(head: bytes) -> str:
    """What a file that begins with `head` is, in a few words (a text file, a zip archive, a pickle, ...)."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive that is cut short or damaged, or not torch.save's"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (4, 5):
        return (f"a Python pickle of protocol {head[1]} (pickle.dump), not torch.save's format, which defocuskit "
                "does not unpickle (it could run its code); if you trust the file, load it where you do and "
                "torch.save its state dict, then import that")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] == 2:
        return "a pickle of protocol 2 (torch.save's legacy format) that is cut short or damaged"
    return describe_head(head) or f"neither a zip archive nor a pickle (it begins {head[:8].hex(' ')})"


def describe_head(head: bytes) -> str | None:
    """What a file that begins with `head` (its first 64 bytes or so) is where no binary format is expected of it:
    "an empty file", "a text file (it begins '...')"; None for other bytes. Shared by the readers of checkpoints and
    of model files, which say what they expected instead."""
    if not head:
        return "an empty file"
    text = _as_text(head)
    return None if text is None else f"a text file (it begins {' '.join(text.split())[:40]!r})"


def _as_text(head: bytes) -> str | None:
    """`head` as text when it is printable UTF-8 (a character cut at its end allowed); else None."""
    for cut in range(4):
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return text if text and all(c.isprintable() or c in "\t\r\n" for c in text) else None
    return None


def _reason(exc: BaseException) -> str | None:
    """The unpickler's own words in a torch.load error ("Unsupported operand 149", "invalid load key"); None where
    it gives none."""
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error: ").strip()
        if line.startswith(("Unsupported", "invalid load key")):
            return line
    return None


def _first_line(exc: BaseException) -> str:
    """The first line of an error that is not torch's advice on weights_only (never relayed: it suggests running the
    file's code)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "weights_only" not in line
             and _WEIGHTS_ONLY not in line]
    return lines[0] if lines else f"{type(exc).__name__}: empty or cut short"


def is_state_dict(obj: Any) -> bool:
    """Whether `obj` is a non-empty mapping of names to tensors."""
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_state_dict(obj: Any, keys: tuple[str, ...] = STATE_KEYS) -> dict[str, Any]:
    """The state dict inside a checkpoint: `obj` itself when it maps names to tensors, else the first of `keys`
    that holds one (one level of nesting followed, e.g. {'model': {'state_dict': ...}}); wrapper prefixes
    ('module.', '_orig_mod.') stripped. ReleaseError naming the keys found otherwise."""
    if is_state_dict(obj):
        return strip_prefixes(obj)
    if isinstance(obj, dict):
        for key in keys:
            inner = obj.get(key)
            if is_state_dict(inner):
                return strip_prefixes(inner)
            if isinstance(inner, dict):
                for sub in keys:
                    if is_state_dict(inner.get(sub)):
                        return strip_prefixes(inner[sub])
        found = ", ".join(f"'{k}'" for k in list(obj)[:12]) or "none"
        raise ReleaseError(f"no state dict under {', '.join(repr(k) for k in keys)} (its keys: {found})")
    raise ReleaseError(f"holds a {type(obj).__name__}, not a state dict or a dict of them")


def strip_prefixes(state: dict[str, Any], prefixes: tuple[str, ...] = WRAPPER_PREFIXES) -> dict[str, Any]:
    """`state` with each key's wrapper prefixes removed (where every key has the prefix)."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def rename_keys(state: dict[str, Any], rules: list[Rule], prefix: str = "") -> dict[str, Any]:
    """`state` with each key renamed by the first rule whose pattern matches it whole, `prefix` put in front;
    keys no rule matches keep their name (behind `prefix`), so that a strict check reports them as unexpected."""
    compiled = [(re.compile(pattern), new) for pattern, new in rules]
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = key
        for pattern, new in compiled:
            found = pattern.fullmatch(key)
            if found:
                name = new(found) if callable(new) else found.expand(new)
                break
        out[prefix + name] = value
    return out


def checkpoint_layout(obj: Any) -> Any:
    """The layout of a checkpoint object: tensors as {"shape": [...], "dtype": "float32"}, dicts and lists
    recursively, numbers and strings as they are (JSON-ready)."""
    if isinstance(obj, torch.Tensor):
        return {"shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        return {str(k): checkpoint_layout(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [checkpoint_layout(v) for v in obj]
    return obj


def random_checkpoint(layout: Any, generator: torch.Generator | None = None) -> Any:
    """A checkpoint object of `layout` (checkpoint_layout's form) with random normal float tensors (integer
    tensors zero), for testing an importer without the published weights."""
    if isinstance(layout, dict) and set(layout) == {"shape", "dtype"}:
        dtype = getattr(torch, layout["dtype"])
        shape = tuple(layout["shape"])
        if dtype.is_floating_point:
            return torch.randn(shape, generator=generator).to(dtype)
        return torch.zeros(shape, dtype=dtype)
    if isinstance(layout, dict):
        return {k: random_checkpoint(v, generator) for k, v in layout.items()}
    if isinstance(layout, list):
        return [random_checkpoint(v, generator) for v in layout]
    return layout
