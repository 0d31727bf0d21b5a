"""Layout checks shared by the dataset adapters.

A source given a folder that is not its dataset fails before any work, with one message that says
what the adapter expected, what it found and, when another adapter's layout matches, which option
fits, e.g. "--vabd /x: expected {train,test}/{input,8,2_8,1_8}/ (VABD); train/ has none of 8/, 2_8/,
1_8/; found train/{depth,focal,input,target} — is this EBB (--ebb)?".

A dataset's `DatasetSource` gives its title, the layout it expects in words and `layout_problem(root)` (what keeps
`root` from being that dataset, or None); `check_layout(source, root)` raises LayoutError. `ingest` checks every
given source before listing any, and each `list_tasks` checks its own root too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from defocuskit.data.sample import IngestError, Rejected
from defocuskit.data.sources import DatasetSource, get_source, option_of
from defocuskit.io.formats import IMAGE_EXTENSIONS

# the datasets a layout hint may name ("is this EBB (--ebb)?"), in that order
DATASETS = ("dpdd", "realblur", "ded", "realdof", "vabd", "ebb", "cuhk-blur")
MAX_PARTS = 6  # groups of folders named by `describe`


class LayoutError(IngestError):
    """A source folder whose layout is not the dataset's; the message says what was expected and found."""


def check_layout(source: DatasetSource, root: Path) -> None:
    """Raise LayoutError unless `root` has the layout of `source` (a source without a fixed layout takes any)."""
    if source.layout_problem is None:
        return
    problem = source.layout_problem(Path(root))
    if problem is not None:
        raise LayoutError(message(source.name, Path(root), source.expected, problem))


def message(name: str, root: Path, expected: str, problem: str) -> str:
    """"--x ROOT: expected E (TITLE); PROBLEM; found F", plus a hint naming the sources whose layout fits."""
    title = get_source(name).title or name
    text = f"{option_of(name)} {root}: expected {expected} ({title}); {problem}; found {describe(root)}"
    fits = matching_sources(root, exclude=name)
    if fits:
        text += " — is this " + " or ".join(fits) + "?"
    return text


def matching_sources(root: Path, exclude: str) -> list[str]:
    """"TITLE (--option)" of every dataset whose layout `root` has; your own captures if it only holds photos."""
    fits = []
    for name in DATASETS:
        problem = get_source(name).layout_problem
        if name == exclude or problem is None:
            continue
        try:
            if problem(root) is None:
                fits.append(f"{get_source(name).title} ({option_of(name)})")
        except OSError:
            continue
    if not fits and exclude != "raw" and _holds_images(root, depth=2):
        fits.append(f"your own captures ({option_of('raw')})")
    return fits


# -------------------------------------------------------------------------------- a parent folder given

Problem = Callable[[Path], str | None]  # what keeps a folder from being the dataset itself, or None


def roots_inside(root: Path, problem: Problem) -> list[Path]:
    """The subfolders of `root` (hidden ones left out, sorted) that `problem` finds no fault with: the dataset
    folders lying in a parent folder (a download folder holding RealBlur/)."""
    try:
        dirs, _ = _children(Path(root))
    except OSError:
        return []
    return [d for d in dirs if _fits(d, problem)]


def _fits(folder: Path, problem: Problem) -> bool:
    try:
        return problem(folder) is None
    except OSError:
        return False


def dataset_root(root: Path, problem: Problem) -> Path:
    """The dataset folder that `root` names: `root` itself where `problem` finds no fault with it, else the one
    dataset folder inside it (a parent folder given), else `root` (whose layout check then fails)."""
    if _fits(Path(root), problem):
        return Path(root)
    inside = roots_inside(root, problem)
    return inside[0] if len(inside) == 1 else Path(root)


def parent_problem(name: str, root: Path, problem: Problem) -> str | None:
    """What keeps `root` from being dataset `name`'s folder or the parent of exactly one (see dataset_root), or
    None; a parent of several says to give one of them."""
    fault = problem(Path(root))
    if fault is None:
        return None
    inside = roots_inside(root, problem)
    if len(inside) == 1:
        return None
    if inside:
        fault += (f"; it holds {len(inside)} {get_source(name).title} folders: give {option_of(name)} one of them ("
                  + ", ".join(str(d) for d in inside) + ")")
    elif len(near := near_misses(root, problem, fault)) == 1:
        fault += f"; in {near[0][0].name}/: {near[0][1]}"
    return fault


def near_misses(root: Path, problem: Problem, fault: str) -> list[tuple[Path, str]]:
    """The subfolders of `root` that `problem` faults for another reason than `fault` (the root's own): the dataset
    folder of a parent given, which a deeper fault (`VABD/test/test/input/`) keeps from being read; with theirs."""
    try:
        dirs, _ = _children(Path(root))
    except OSError:
        return []
    found = []
    for d in dirs:
        try:
            why = problem(d)
        except OSError:
            continue
        if why is not None and why != fault:
            found.append((d, why))
    return found


def parent_rule(name: str, problem: Problem) -> tuple[Callable[[Path], str | None], Callable[[Path], Path]]:
    """(layout_problem, root_of) of source `name` whose dataset folder `problem` judges: the folder itself or the
    parent of exactly one such folder (parent_problem, dataset_root), one rule for every source that takes a parent."""
    def layout_problem(root: Path) -> str | None:
        return parent_problem(name, Path(root), problem)

    def root_of(root: Path) -> Path:
        return dataset_root(Path(root), problem)

    return layout_problem, root_of


def read_inside(name: str, root: Path) -> str | None:
    """One line where source `name` given `root` reads the dataset folder inside it, else None."""
    root_of = get_source(name).root_of
    if root_of is None or not Path(root).is_dir() or (used := root_of(Path(root))) == Path(root):
        return None
    return f"{option_of(name)} {root}: reading the {get_source(name).title} folder inside it, {used}"


# -------------------------------------------------------------------------------- what is there


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    """(subfolders, files) of `folder`, hidden ones left out, sorted by name; OSError propagates."""
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    return [p for p in entries if p.is_dir()], [p for p in entries if not p.is_dir()]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _braced(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def describe(root: Path) -> str:
    """What a folder holds, two levels deep, folders with the same subfolders grouped:
    "{test,train}/{depth,focal,input,target}, source/ (3 files), 2 files (a.txt, b.zip)"."""
    try:
        dirs, files = _children(Path(root))
    except OSError as exc:
        return f"a folder that cannot be listed ({exc.strerror or exc})"
    if not dirs and not files:
        return "an empty folder"
    by_subdirs: dict[tuple[str, ...], list[str]] = {}
    parts = []
    for d in dirs:
        try:
            subdirs, subfiles = _children(d)
        except OSError:
            parts.append(f"{d.name}/ (cannot be listed)")
            continue
        if subdirs:
            by_subdirs.setdefault(tuple(s.name for s in subdirs), []).append(d.name)
        else:
            parts.append(f"{d.name}/ ({_count(len(subfiles), 'file')})")
    parts = [f"{_braced(names)}/{_braced(list(subs))}" for subs, names in by_subdirs.items()] + parts
    if files:
        shown = ", ".join(f.name for f in files[:3]) + (", ..." if len(files) > 3 else "")
        parts.append(f"{_count(len(files), 'file')} ({shown})")
    return ", ".join(parts[:MAX_PARTS]) + (", ..." if len(parts) > MAX_PARTS else "")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _count_images(folder: Path, depth: int) -> int:
    """Image files in `folder` and its non-hidden subfolders down to `depth` levels (unreadable: 0)."""
    try:
        dirs, files = _children(folder)
    except OSError:
        return 0
    n = sum(1 for f in files if _is_image(f))
    if depth > 1:
        n += sum(_count_images(d, depth - 1) for d in dirs)
    return n


def _holds_images(folder: Path, depth: int) -> bool:
    return _count_images(folder, depth) > 0


def unused_images(source: str, folder: Path, known: Collection[str], uses: str,
                  depth: int = 1) -> Iterator[Rejected]:
    """Reject lines for the images an adapter would otherwise drop without a word: one per subfolder
    of `folder` that is not in `known` but holds images (within `depth` levels), one per image lying
    directly in `folder`. `uses` says what the adapter reads, for the reason."""
    try:
        dirs, files = _children(folder)
    except OSError:
        return
    for d in dirs:
        if d.name not in known and (n := _count_images(d, depth)):
            yield Rejected(source, str(d), f"folder not used ({_count(n, 'image')}): "
                                           f"{get_source(source).title} reads {uses}")
    for f in files:
        if _is_image(f):
            yield Rejected(source, str(f), f"image outside the folders {get_source(source).title} reads ({uses})")


def missing(folder: Path, names: Collection[str]) -> list[str]:
    """The names in `names` that are not subfolders of `folder`, as "name/"."""
    return [f"{n}/" for n in names if not (folder / n).is_dir()]


def nested_images(source: str, folder: Path, uses: str, depth: int = 2) -> Iterator[Rejected]:
    """Reject lines for the subfolders of `folder` that hold images (within `depth` levels), for an
    adapter that reads only the files lying directly in `folder`; `uses` says what it reads."""
    try:
        dirs, _ = _children(folder)
    except OSError:
        return
    for d in dirs:
        if n := _count_images(d, depth):
            yield Rejected(source, str(d), f"folder not used ({_count(n, 'image')}): "
                                           f"{get_source(source).title} reads {uses}")


def unread_images(source: str, folder: Path, extensions: Collection[str], uses: str) -> Iterator[Rejected]:
    """Reject lines for the images in `folder` that an adapter reading only the files there with one of
    `extensions` would pass over without a word: subfolders holding images (an archive extracted one level
    deeper, `target/target/`), and image files of another format (`.tif`, a camera's RAW file)."""
    yield from nested_images(source, folder, uses)
    try:
        _, files = _children(folder)
    except OSError:
        return
    read = {e.lower() for e in extensions}
    for f in files:
        if _is_image(f) and f.suffix.lower() not in read:
            yield Rejected(source, str(f), f"a {f.suffix} file: {get_source(source).title} reads {uses} "
                                           f"({', '.join(sorted(read))})")
