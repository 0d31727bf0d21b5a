"""Published checkpoints imported: a release's `.pth` (read with weights_only=True) -> a defocuskit model file.

The method's `Release` (methods/base.py) maps the release's names onto its port; here every tensor is checked
against the port's network built from the release's recipe (no key missing, none unexpected, every shape equal)
and the weights are written as a normal model file (io/modelfile.py) whose metadata also records the source
checkpoint's name and sha256, the released code and its test-time protocol. `deblur`, `eval`, the API and
`train.init_from` read that file as they read any other. It is written through a temporary that a journal beside it
lists first (io/output_journal.py): the next import of the same file removes what an import killed mid-write left.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from defocuskit.config.recipe import recipe_to_dict
from defocuskit.config.typed import did_you_mean, layered_overrides
from defocuskit.io.hub import file_sha256
from defocuskit.io.modelfile import check_finite, save_model
from defocuskit.io.output_journal import journalled_output
from defocuskit.io.paths import nearest_existing
from defocuskit.io.release import ReleaseError, read_checkpoint
from defocuskit.methods import get_method, release_method_names
from defocuskit.methods.base import Method
from defocuskit.methods.recipes import load_recipe

LISTED = 12  # keys named in a refusal (then "... and N more")


@dataclass(frozen=True)
class Imported:
    """What `import_release` wrote."""

    path: Path
    method: str
    tensors: int
    parameters: int
    sha256: str  # of the source checkpoint
    kept: tuple[str, ...]  # the port's tensors the checkpoint lacked (Release.optional), kept as built


def release_method(name: str) -> Method:
    """The method `name`, which must read published checkpoints; ValueError naming those that do."""
    if name not in (known := release_method_names()):
        raise ValueError(f"method {name!r} reads no published checkpoints (those that do: {', '.join(known)})"
                         f"{did_you_mean(name, known)}")
    return get_method(name)


def _listing(keys: list[str]) -> str:
    more = f" ... and {len(keys) - LISTED} more" if len(keys) > LISTED else ""
    return ", ".join(keys[:LISTED]) + more


def _is_optional(key: str, optional: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in optional)


def convert_checkpoint(method: Method, checkpoint: Path, overrides: list[str] | tuple[str, ...] = ()
                       ) -> tuple[nn.Module, Any, tuple[str, ...]]:
    """(the port's network holding the checkpoint's weights, its recipe, the keys kept as built) for a release
    checkpoint; ReleaseError listing every missing, unexpected or misshapen tensor."""
    release = method.release
    assert release is not None
    try:
        tensors = release.convert(read_checkpoint(checkpoint))
    except ReleaseError as exc:
        message = str(exc)
        raise ReleaseError(message if message.startswith(str(checkpoint)) else f"{checkpoint}: {message}") from None
    recipe = load_recipe(release.recipe, layered_overrides(release.overrides, overrides))
    if release.fits is not None:  # another published configuration (IFAN_8.pytorch): the overrides that build it
        try:
            release.fits(tensors, recipe)
        except ReleaseError as exc:
            raise ReleaseError(f"{checkpoint}: {exc}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the port's tensors a checkpoint may lack are built the same way every time
        net = method.build(recipe.model, recipe.objective, False)
    own = net.state_dict()
    missing = sorted(k for k in own if k not in tensors and not _is_optional(k, release.optional))
    unexpected = sorted(k for k in tensors if k not in own)
    if missing or unexpected:
        parts = ([f"{len(missing)} missing: {_listing(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected: {_listing(unexpected)}"] if unexpected else [])
        raise ReleaseError(f"{checkpoint}: does not fit the '{method.name}' port of {release.code} (names in the "
                           f"port's spelling): {'; '.join(parts)}")
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(tensors)
             if tuple(tensors[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise ReleaseError(f"{checkpoint}: {len(wrong)} tensors differ in shape from the '{method.name}' port "
                           f"(checkpoint vs port): {_listing(wrong)}")
    kept = tuple(sorted(k for k in own if k not in tensors))
    state = {k: (tensors[k] if k in tensors else v).to(v.dtype) for k, v in own.items()}
    check_finite(state, checkpoint)
    net.load_state_dict(state, strict=True)  # what load_model will do with the file
    return net, recipe, kept


def import_release(method_name: str, checkpoint: str | Path, out: str | Path,
                   overrides: list[str] | tuple[str, ...] = (), overwrite: bool = False) -> Imported:
    """Import the release checkpoint of `method_name` into the model file `out` (see the module docstring);
    `overrides`: recipe key=value settings on top of the release's (the model section must still fit). An
    existing `out` is kept (ValueError) unless `overwrite`."""
    method = release_method(method_name)
    slash = str(out).endswith(("/", "\\"))  # read before Path drops it: "models/" names a folder
    checkpoint, out = Path(checkpoint), Path(out)
    if out.resolve() == checkpoint.resolve():
        raise ValueError(f"--out {out} is the checkpoint itself")
    if out.is_dir() or slash:
        raise ValueError(f"--out {out}{'/' if slash else ''} {'is' if out.is_dir() else 'names'} a folder; give the "
                         f"model file's name (e.g. {out / 'model.safetensors'})")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} exists: give --force to replace it")
    if (above := nearest_existing(out.parent)) is not None and not above.is_dir():  # before the conversion, which
        raise ValueError(f"--out {out}: {above} is a file, not a folder; give another path")  # was then misnamed
    net, recipe, kept = convert_checkpoint(method, checkpoint, overrides)
    release = method.release
    assert release is not None
    sha = file_sha256(checkpoint)
    provenance = {"code": release.code, "checkpoint": checkpoint.name, "sha256": sha,
                  "protocol": dataclasses.asdict(release.protocol), "kept_as_built": list(kept)}
    state = net.state_dict()
    try:  # without `overwrite` never over a file, one that appeared during the conversion included
        with journalled_output(out, "import-weights") as token:  # a killed import's temporary: cleared by the next
            save_model(out, state, method.name, recipe_to_dict(recipe), exclusive=not overwrite, partial=token,
                       extra={"source_checkpoint": checkpoint.name, "source_sha256": sha,
                              "release": json.dumps(provenance)})
    except FileExistsError:
        raise ValueError(f"--out {out} exists (it appeared while the checkpoint was converted): it is left as it is; "
                         "give --force to replace it") from None
    return Imported(out, method.name, len(state), sum(p.numel() for p in net.parameters()), sha, kept)


def import_to_temporary(method_name: str, checkpoint: str | Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    """(model file, the temporary folder holding it) of a release checkpoint imported for this session: the
    folder and the file go when the returned folder object is dropped."""
    folder = tempfile.TemporaryDirectory(prefix="defocuskit-import-")
    try:
        path = Path(folder.name) / f"{Path(checkpoint).stem}.safetensors"
        import_release(method_name, checkpoint, path)
    except BaseException:
        folder.cleanup()
        raise
    return path, folder
