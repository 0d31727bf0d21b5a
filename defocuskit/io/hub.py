"""The Hugging Face Hub layout of a model: a folder with the model file, a config, the recipe and a model card.

    model.safetensors   the defocuskit model file, byte for byte (weights + method + recipe in its metadata)
    config.json         method, formats, versions, recipe, default sampler settings and NFE, how inference runs
                        it, license, training datasets (names), eval rows if known
    recipe.yaml         the resolved recipe
    README.md           the model card (io/card.py: Hub front matter, what the model is and how to use it)

Everything here is plain files and JSON; huggingface_hub is imported only to download, upload or write the card's
front matter.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import defocuskit
from defocuskit.io import locks
from defocuskit.io.atomic import atomic_path, atomic_write
from defocuskit.io.card import model_card
from defocuskit.io.modelfile import MODEL_FILE_MODE
from defocuskit.io.paths import nearest_existing

HUB_FORMAT = "defocuskit-hub-1"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RECIPE_FILE = "recipe.yaml"
CARD_FILE = "README.md"
DOWNLOADED = [MODEL_FILE, CONFIG_FILE]  # what `load` fetches of a Hub repo (the card and recipe are for people)
SAVE_JOURNAL = ".defocuskit-save.json"  # the SHA-256 of each file a save is writing (and who), until all are written

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_repo_id(source: str) -> bool:
    """True for `owner/name` (one slash, Hub characters, not a model file name)."""
    return bool(_REPO_ID.match(source)) and not source.endswith(".safetensors") and ".." not in source


def read_folder(folder: Path) -> tuple[Path, dict[str, Any] | None]:
    """The model file of a save_pretrained folder and its config.json (None where there is none); the model
    file's SHA-256 is checked against the one config.json records (ValueError when they differ)."""
    model_file = folder / MODEL_FILE
    if (folder / SAVE_JOURNAL).exists():
        raise ValueError(f"{folder}: a save_pretrained into it did not finish ({SAVE_JOURNAL} lists the files it was "
                         "writing); save into it again")
    if not model_file.is_file():
        present = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
        what = f"{MODEL_FILE} there is not a file" if model_file.exists() else f"no {MODEL_FILE} in this folder"
        raise FileNotFoundError(f"{folder}: {what} (found: {present}); a model folder is what `save_pretrained` "
                                "writes, or give the .safetensors file itself")
    config_file = folder / CONFIG_FILE
    if not (config_file.exists() or config_file.is_symlink()):
        return model_file, None
    config = _saved_config(config_file)
    if (actual := file_sha256(model_file)) != (expected := config["sha256"]):
        raise ValueError(f"{model_file}: its SHA-256 is {actual[:16]}..., config.json records {expected[:16]}...: the "
                         "model file was changed or damaged after it was saved")
    return model_file, config


def _saved_config(config_file: Path) -> dict[str, Any]:
    """The config.json that save_pretrained wrote beside a model file; ValueError naming it where it is not one:
    unreadable, not JSON, another format, or without the model's method and the SHA-256 that vouches for the model
    file (a config.json without it would load any weights put beside it)."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_file}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{config_file}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(config, dict) or config.get("format") != HUB_FORMAT:
        raise ValueError(f"{config_file}: not a defocuskit model config (format {HUB_FORMAT!r} expected)")
    sha = config.get("sha256")
    if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise ValueError(f"{config_file}: records no SHA-256 of {MODEL_FILE} (its 'sha256' is {sha!r}): the file "
                         "was edited; save the model into the folder again")
    if not isinstance(config.get("method"), str):
        raise ValueError(f"{config_file}: names no method (its 'method' is {config.get('method')!r}): the file was "
                         "edited; save the model into the folder again")
    return config


def download(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
             cache_dir: str | Path | None = None) -> Path:
    """The local folder of a Hub model repo's files (the model file and config.json), fetched or from the cache."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = huggingface_hub.snapshot_download(
            repo_id, revision=revision, token=token, cache_dir=cache_dir, allow_patterns=DOWNLOADED,
            library_name="defocuskit", library_version=defocuskit.__version__)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise FileNotFoundError(f"'{repo_id}' is no local file or folder, and the Hub model repo '{repo_id}'"
                                f"{f' at revision {revision}' if revision else ''} cannot be fetched: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return Path(folder)


def resolve_model(source: str | Path, *, revision: str | None = None, token: str | bool | None = None,
                  cache_dir: str | Path | None = None) -> tuple[Path, dict[str, Any] | None]:
    """(model file, config.json or None) of a `.safetensors` model file, a save_pretrained folder or (where no
    local path has that name) a Hub repo id `owner/name` (fetched into huggingface_hub's cache)."""
    if revision is not None and not isinstance(revision, str):
        raise TypeError(f"revision=: a branch, tag or commit of the Hub repo (a string), got {revision!r}")
    path = Path(source).expanduser()
    try:
        path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):  # a name no file system holds, a loop of links
            raise ValueError(f"{str(source)[:80]}{'...' if len(str(source)) > 80 else ''}: "
                             f"{'a name in it is too long' if exc.errno == errno.ENAMETOOLONG else 'a loop of links'}"
                             "; give a model file, a save_pretrained folder or a Hub repo id") from None
    if path.is_file() or path.is_dir():
        if revision is not None:
            kind = "file" if path.is_file() else "folder"
            raise ValueError(f"revision= is for Hub repo ids; {source} is a local {kind}")
        return (path, None) if path.is_file() else read_folder(path)
    if isinstance(source, str) and looks_like_repo_id(source):
        snapshot = download(source, revision=revision, token=token, cache_dir=cache_dir)
        missing = [name for name in DOWNLOADED if (snapshot / name).is_symlink() and not (snapshot / name).exists()]
        if missing or not (snapshot / MODEL_FILE).is_file():
            raise FileNotFoundError(f"'{source}': the cached download in {snapshot} is incomplete (no "
                                    f"{', '.join(missing or [MODEL_FILE])}); download it again (online, without "
                                    "HF_HUB_OFFLINE), or remove that snapshot from the huggingface_hub cache")
        return read_folder(snapshot)
    raise FileNotFoundError(f"model not found: {source} (no such file or folder, and not a Hub repo id owner/name)")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_state(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, modification time in ns) of a file, which a replacement (a new export moved over it) or
    a rewrite changes; None where it cannot be looked at (gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def changed_since(path: Path, sha256: str) -> bool:
    """Whether `path` is no longer the regular file whose SHA-256 was recorded as `sha256` (a link, a folder, or
    other content): a file a command wrote that someone has since replaced or edited."""
    return path.is_symlink() or not path.is_file() or file_sha256(path) != sha256


# ----------------------------------------------------------------------------------------- the folder


RECIPE_HEADER = "# resolved recipe; retrain with: defocuskit train recipe.yaml\n"


def write_folder(folder: str | Path, model_file: Path, config: dict[str, Any], recipe_yaml: str,
                 repo_id: str | None = None, description: str | None = None) -> Path:
    """Write the Hub layout into `folder` (created): the model file copied byte for byte, config.json, recipe.yaml
    and README.md (whose example loads `repo_id`; `description`: what the method is, one line), every file 0644;
    config.json records the SHA-256 of each file written, so a later save replaces only files unchanged since
    (`check_folder`). One save at a time (the folder itself is locked: BlockingIOError naming the holder); the
    SHA-256 of every file it writes is listed in `SAVE_JOURNAL` first and the journal removed last, so a killed
    save's folder is not loaded as a model and the next save replaces what it wrote. Returns the folder ("~" expanded,
    as load expands it)."""
    if not isinstance(folder, (str, Path)) or not str(folder).strip():
        raise (TypeError if not isinstance(folder, (str, Path)) else ValueError)(
            f"save_pretrained: a folder for the model, got {folder!r}")
    folder = Path(folder).expanduser()
    if folder.suffix in (".safetensors", ".json", ".yaml", ".md") and not folder.is_dir():  # not made a folder
        raise ValueError(f"save_pretrained: {folder} names a file; it writes a folder ({MODEL_FILE}, {CONFIG_FILE}, "
                         f"{RECIPE_FILE}, {CARD_FILE}): give the folder's name")
    check_folder(folder, model_file)
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_held(folder):
        _write_held(folder, model_file, config, recipe_yaml, repo_id, description)
    return folder


@contextlib.contextmanager
def _folder_held(folder: Path) -> Iterator[None]:
    """An exclusive OS lock on the folder itself (no lock file is left in the Hub layout), or BlockingIOError naming
    the save that holds it (from its journal). It dies with its process, kill -9 included."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _journal(folder).get("holder")
            raise BlockingIOError(f"{folder}: another save_pretrained is writing it ({locks.describe(holder)}); wait "
                                  "for it to finish or save into another folder") from None
        yield
    finally:
        os.close(fd)


def _write_held(folder: Path, model_file: Path, config: dict[str, Any], recipe_yaml: str, repo_id: str | None,
                description: str | None) -> None:
    check_folder(folder, model_file)  # again, holding the folder: what another save wrote meanwhile
    texts = {RECIPE_FILE: RECIPE_HEADER + recipe_yaml, CARD_FILE: model_card(config, recipe_yaml, repo_id, description)}
    written = {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in texts.items()}
    config_text = json.dumps({**config, "files": written}, indent=2, allow_nan=False) + "\n"
    writing = {MODEL_FILE: file_sha256(model_file), **written,
               CONFIG_FILE: hashlib.sha256(config_text.encode("utf-8")).hexdigest()}
    pending = _pending(folder)  # a killed save's files stay replaceable should this one be killed too
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": "save_pretrained",
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    atomic_write(folder / SAVE_JOURNAL, json.dumps({"writing": {n: sorted({*pending.get(n, []), sha})
                                                                 for n, sha in writing.items()}, "holder": holder}),
                 fsync=True)
    dest = folder / MODEL_FILE
    if not (dest.exists() and os.path.samefile(dest, model_file)):
        with atomic_path(dest, MODEL_FILE_MODE) as tmp:
            shutil.copyfile(model_file, tmp)
    for name, text in texts.items():
        _write_text(folder / name, text)
    _write_text(folder / CONFIG_FILE, config_text)
    (folder / SAVE_JOURNAL).unlink()


def _journal(folder: Path) -> dict[str, Any]:
    """The journal (`SAVE_JOURNAL`) of the save writing `folder` now or killed there, {} where there is none;
    FileExistsError naming it where a file there is not one a save wrote."""
    path = folder / SAVE_JOURNAL
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        journal = json.loads(path.read_text(encoding="utf-8")) if not path.is_symlink() else None
        writing = journal["writing"]
        ok = isinstance(writing, dict) and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                               for v in writing.values())
    except (OSError, ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise FileExistsError(f"{path}: in the way of save_pretrained's journal and not one it wrote; it is left as "
                              "it is: move it or save into another folder")
    return journal


def _pending(folder: Path) -> dict[str, list[str]]:
    """{name: SHA-256s} of the files that saves killed in `folder` were writing."""
    return _journal(folder).get("writing", {})


def check_folder(folder: Path, model_file: Path) -> None:
    """FileExistsError naming the first file of the Hub layout in `folder` that save_pretrained would replace and
    an earlier save_pretrained did not write, or that was changed since (its SHA-256 is not the one that save's
    config.json records, nor one a killed save listed in its journal): a user's README.md, a training run's
    recipe.yaml, another model. ValueError where a path above `folder` is a file ("afile/sub")."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; give a folder for the model")
    above = nearest_existing(folder.parent)
    if above is not None and not above.is_dir():  # save_pretrained("afile/sub"): NotADirectoryError [Errno 20]
        raise ValueError(f"save_pretrained: {above} is a file, not a folder, so {folder} cannot be made inside it; "
                         "give a folder for the model elsewhere")
    pending = _pending(folder)
    earlier = _own_config(folder / CONFIG_FILE)
    recorded = {MODEL_FILE: (earlier or {}).get("sha256"), **((earlier or {}).get("files") or {})}
    for name in (CONFIG_FILE, MODEL_FILE, RECIPE_FILE, CARD_FILE):
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            continue
        if name == MODEL_FILE and path.is_file() and os.path.samefile(path, model_file):
            continue  # the model saved into its own folder: left as it is
        sha = file_sha256(path) if path.is_file() and not path.is_symlink() else None
        ours = sha is not None and (sha in pending.get(name, []) or earlier is not None and (
            name == CONFIG_FILE or recorded.get(name) == sha))
        if not ours:
            raise FileExistsError(f"{path}: not written by an earlier save_pretrained, or changed since; it is left "
                                  "as it is: move it or save into another folder")


def _own_config(path: Path) -> dict[str, Any] | None:
    """A save_pretrained config.json (its format and library), or None."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(config, dict) and config.get("format") == HUB_FORMAT and config.get("library_name") == "defocuskit"
    return config if ok else None


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text, mode=MODEL_FILE_MODE)


def push_folder(folder: Path, repo_id: str, *, private: bool = False, token: str | bool | None = None,
                commit_message: str = "Upload defocuskit model") -> Any:
    """Create the Hub model repo if needed and upload `folder` to it; returns huggingface_hub's CommitInfo.

    Raises ConnectionError with one line (what failed and why: offline mode, no token, refused, network)
    instead of the HTTP library's traceback."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled

    api = huggingface_hub.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        target = getattr(url, "repo_id", None) or repo_id
        return api.upload_folder(repo_id=target, folder_path=str(folder), commit_message=commit_message,
                                 repo_type="model")
    except OfflineModeIsEnabled:
        raise ConnectionError(f"push_to_hub('{repo_id}'): HF_HUB_OFFLINE is set (offline mode); unset it to "
                              "upload, or keep the folder with save_pretrained") from None
    except HFValidationError as exc:
        raise ValueError(f"push_to_hub('{repo_id}'): not a Hub repo id ({_first_line(exc)}); give owner/name") from None
    except HfHubHTTPError as exc:
        raise ConnectionError(f"push_to_hub('{repo_id}'): the Hub refused it: {_first_line(exc)} (a token with "
                              "write access: `huggingface-cli login` or token=)") from None
    except Exception as exc:  # the HTTP stack's own errors (httpx, requests, sockets): no network, no such host
        raise ConnectionError(f"push_to_hub('{repo_id}'): could not reach the Hub ({type(exc).__name__}: "
                              f"{_first_line(exc)}); check the network, or keep the folder with save_pretrained"
                              ) from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name where it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
