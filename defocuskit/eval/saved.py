"""`eval --save-images DIR`: the file each output goes to (DIR/<method>/<name>.png, one name per sample key), and
the manifest in DIR of what evaluations saved there: a saved image replaces only a file an earlier evaluation
wrote."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from defocuskit.eval.config import EvalError
from defocuskit.io.atomic import NAME_MAX, atomic_write, name_within, remove_partial, write_journalled
from defocuskit.io.hub import changed_since
from defocuskit.io.images import encode_image

MANIFEST = ".defocuskit-eval-images.json"  # in DIR: {"written_by", "files": [paths in DIR], "sha256": {path: hex}}
JOURNAL = ".defocuskit-eval-images.journal"  # "path<TAB>sha256<TAB>temporary" before an image is written: it, the
# SHA-256 of what it will hold, and its io.atomic.partial_path temporary (a fresh name) are this run's (older
# versions wrote "path<TAB>sha256" or a bare "path": no temporary of theirs is removed)
WRITER = "defocuskit eval --save-images"
SAVED_LOCK = ".defocuskit-eval-images.lock"  # in DIR, held by the main process for the whole evaluation (io.locks)


def safe_name(key: str) -> str:
    """A sample key or method label as one file-name part: path separators become "_"."""
    return key.replace("/", "_").replace(os.sep, "_")


def _hashed(key: str) -> str:
    return f"{safe_name(key)}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:8]}"


def _fits(name: str) -> str:
    """`name` where `name`.png fits in a file name (NAME_MAX bytes), else cut with a hash of it (`name_within`)."""
    return name_within(name, NAME_MAX - len(".png"))


def image_names(keys: Iterable[str]) -> dict[str, str]:
    """The file name (no extension) of each sample key: `safe_name(key)`, except that keys whose names would
    coincide (ignoring case, for case-insensitive disks) each get "-" and 8 hex digits of the key's SHA-256, and a
    name too long for a file (a photo's name of 250 bytes) is cut, with a hash of it (`_fits`)."""
    groups: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        groups.setdefault(safe_name(key).casefold(), []).append(key)
    names = {key: _fits(safe_name(key) if len(group) == 1 else _hashed(key)) for group in groups.values()
             for key in group}
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name.casefold() in seen:
            raise EvalError(f"sample keys '{seen[name.casefold()]}' and '{key}' both save as {name}.png")
        seen[name.casefold()] = key
    return names


class SavedImages:
    """The outputs of one evaluation saved under `folder`; `names` maps every sample key to its file name
    (`image_names` of the split's keys), None where the keys are not known before scoring (remote shards:
    then a key holding a path separator always gets the hashed name)."""

    def __init__(self, folder: Path, names: dict[str, str] | None) -> None:
        self.folder = Path(folder)
        self.names = names
        self.journal = self.folder / JOURNAL
        journal = self._read_journal()
        self.owned = {**self._read_manifest(), **{rel: sha for rel, (sha, _) in journal.items()}}  # path -> SHA-256
        # killed runs began them: the temporaries they listed, where left, are ours to remove
        self.begun = {rel: temps for rel, (_, temps) in journal.items()}
        self.written: dict[str, str] = {}
        self.verified: set[str] = set()  # earlier images found unchanged

    def _read_journal(self) -> dict[str, tuple[str | None, list[str]]]:
        """The images that killed evaluations wrote or began to write (the journal; a torn last line is skipped),
        with the SHA-256 of what each held or was to hold and the temporaries listed for it."""
        try:
            lines = self.journal.read_text(encoding="utf-8").split("\n") if self.journal.is_file() else []
        except (OSError, UnicodeDecodeError):
            return {}
        found: dict[str, tuple[str | None, list[str]]] = {}
        for line in lines[:-1]:  # the last piece has no newline: unfinished
            rel, sha, temp = (line.split("\t") + ["", ""])[:3]
            if rel:
                found[rel] = (sha or None, found.get(rel, (None, []))[1] + ([temp] if temp else []))
        return found

    def _read_manifest(self) -> dict[str, str | None]:
        path = self.folder / MANIFEST
        if self.folder.exists() and not self.folder.is_dir():
            raise EvalError(f"{self.folder}: exists and is not a folder; give a folder for --save-images")
        if not (path.exists() or path.is_symlink()):
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("written_by") != WRITER or not isinstance(data.get("files"), list):
                raise ValueError("not a manifest of defocuskit eval")
            sha = data.get("sha256") if isinstance(data.get("sha256"), dict) else {}
            return {str(f): sha.get(f) for f in data["files"]}
        except (OSError, ValueError, AttributeError) as exc:
            raise EvalError(f"{path}: cannot read it as the list of images eval saved ({exc}); "
                            "it is left as it is: give another --save-images") from None

    def path(self, method: str, key: str) -> Path:
        """Where the output of `method` for the sample `key` goes."""
        name = self.names.get(key) if self.names is not None else None
        if name is None:
            name = _fits(key if safe_name(key) == key else _hashed(key))
        return self.folder / safe_name(method) / f"{name}.png"

    def _refuse(self, path: Path) -> None:
        rel = path.relative_to(self.folder).as_posix()
        if path.is_dir():
            raise EvalError(f"{path}: a folder where eval would save an image; give another --save-images")
        if not (path.exists() or path.is_symlink()) or rel in self.written:
            return
        if rel not in self.owned:
            raise EvalError(f"{path}: exists and was not written by an earlier evaluation (not listed in "
                            f"{self.folder / MANIFEST}); it is left as it is: give another --save-images")
        if self.owned[rel] and rel not in self.verified and changed_since(path, self.owned[rel]):
            raise EvalError(f"{path}: changed since an evaluation saved it (not the SHA-256 {MANIFEST} records); it "
                            "is left as it is: move it or give another --save-images")
        self.verified.add(rel)  # `check` hashed it: `save` does not again

    def check(self, methods: Iterable[str], keys: Iterable[str]) -> None:
        """EvalError naming the first file the outputs of `methods` for `keys` would replace that no earlier
        evaluation saved, or a folder in the way, or a key held by two pairs (their outputs would save as one file);
        creates the folder (EvalError when it cannot)."""
        keys = list(keys)
        seen: set[str] = set()
        for key in keys:  # two samples, one file: the first one's output would be lost
            if key in seen:
                raise EvalError(f"sample key '{key}' is held by two pairs of the split: their outputs would save as "
                                "one file; give each sample its own key (or leave out --save-images)")
            seen.add(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvalError(f"{self.folder}: cannot save images there ({exc.strerror or exc})") from None
        for method in methods:
            sub = self.folder / safe_name(method)
            if sub.exists() and not sub.is_dir():
                raise EvalError(f"{sub}: exists and is not a folder; give another --save-images")
            for key in keys:
                self._refuse(self.path(method, key))

    def save(self, method: str, key: str, image: np.ndarray) -> None:
        """Write one output (uint8/uint16 RGB); EvalError, nothing written, where it would replace a file no
        evaluation saved."""
        path = self.path(method, key)
        rel = path.relative_to(self.folder).as_posix()
        if rel in self.written:  # keys not known before scoring (remote shards): a second pair with this key
            raise EvalError(f"sample key '{key}' is held by two pairs of the split: their outputs would save as one "
                            f"file ({path}); give each sample its own key (or leave out --save-images)")
        self._refuse(path)
        new = not (path.exists() or path.is_symlink())  # as judged: a file put there from now on is not replaced
        path.parent.mkdir(parents=True, exist_ok=True)  # another process may not have made the folder yet
        for temp in self.begun.get(rel, ()):  # only the process that writes an image removes its temporaries
            remove_partial(self.folder / rel, temp)
        data = encode_image(path, image)
        sha = hashlib.sha256(data).hexdigest()

        def listed(temporary: str) -> None:  # listed before it is filled, with what it will hold and its temporary
            # (made just now: never a file that was there): a killed run's images stay ours, a file put there since
            # does not
            with open(self.journal, "a", encoding="utf-8") as journal:
                journal.write(f"{rel}\t{sha}\t{temporary}\n")

        try:  # where nothing stood at the check: never over a file put there since (a hard link never replaces)
            write_journalled(path, data, listed, exclusive=new)
        except FileExistsError as exc:
            if exc.filename != str(path):  # a file in the way of its temporary: named as it is
                raise
            raise EvalError(f"{path}: put there while this evaluation ran; it is left as it is: move it and run the "
                            "evaluation again") from None
        self.written[rel] = sha

    def write_manifest(self, written: dict[str, str] | None = None, finished: bool = True) -> None:
        """Record the files saved by earlier evaluations and `written` (path -> SHA-256; default: this process's)
        that exist; `finished` (every process has stopped saving): also remove the temporaries of images killed runs
        began that this one did not write again."""
        for rel, temps in self.begun.items() if finished else ():
            for temp in temps:
                remove_partial(self.folder / rel, temp)
        files = {**self.owned, **(self.written if written is None else written)}
        files = {f: sha for f, sha in files.items() if (self.folder / f).is_file()}
        text = json.dumps({"written_by": WRITER, "files": sorted(files),
                           "sha256": {f: sha for f, sha in sorted(files.items()) if sha}}, indent=1) + "\n"
        atomic_write(self.folder / MANIFEST, text)
        self.owned = files
        self.journal.unlink(missing_ok=True)  # folded into the list
