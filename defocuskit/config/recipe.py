"""Recipes: YAML files with dotted key=value overrides, checked against typed dataclasses; the packaged recipes."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from defocuskit.config.typed import RecipeError, did_you_mean
from defocuskit.io.atomic import atomic_write

PACKAGED_RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # defocuskit/recipes: shipped in the wheel
MIN_WORK_SIDE = 8  # px, as ingest's --max-side (inference.scale.MIN_MAX_SIDE)
_COMMAND_LINE = re.compile(r"^(accelerate |defocuskit |python |PYTHONPATH=|Launch\b|\()")


@dataclass
class DataConfig:
    # shard pattern (brace or glob) or shard folder, or a list of them (their shards together)
    train: str | list[str] = "shards/train-*.tar"
    image_size: int = 256  # training crop size
    channels: int = 3  # 1: luminance (the HIDD paper reads grayscale)
    batch_size: int = 8  # per process
    num_workers: int = 2
    shuffle_buffer: int = 256
    resampled: bool = True  # endless stream of shards (webdataset resampled shards)
    # true: one of the 8 flips and 90-degree rotations, alike for every member; "hflip": a left-right mirror or not
    # (RDDM's and CycleGAN's releases); false: none
    augment: bool | Literal["hflip"] = True
    # validation shards (train.eval_every): a pattern or folder (its "test" split), or a list of them; None: none
    val: str | list[str] | None = None


@dataclass
class OptimConfig:
    name: str = "adam"  # "adam", "adamw" or "radam"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    # after warm-up: "constant", "cosine" (to 0 at train.max_steps) or "linear_decay" (constant until decay_start,
    # then linearly to 0 at train.max_steps: CycleGAN's, train/optim.py)
    schedule: str = "constant"
    # linear_decay only: where the decay starts, a fraction of train.max_steps (a float in [0, 1), e.g. 0.5) or a
    # step (an integer below train.max_steps)
    decay_start: int | float | None = None
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    grad_accum: int = 1
    mixed_precision: str = "auto"  # "auto" (Accelerate's: `accelerate launch --mixed_precision`, its config), "no", "fp16", "bf16"
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    log_with: str | None = None  # an Accelerate tracker name ("tensorboard", "wandb", ...)
    max_minutes: float | None = None  # stop (and export) after this wall time
    init_from: str | None = None  # fine-tune: a model file, save_pretrained folder or Hub id; its weights start the run
    eval_every: int = 0  # score the EMA weights on data.val every N steps (and at the end); 0: at the end only
    val_limit: int | None = 16  # the first N validation pairs (in shard order); None: every pair
    keep_best: bool = False  # also export best.safetensors: the EMA weights of the best validation PSNR
    flush_denormal: bool = True  # on a CPU, compute denormal floats as 0 (faster; docs/benchmarks.md); False: IEEE


@dataclass
class InferenceConfig:
    """How deblur, eval and the API run the exported model unless their options say otherwise."""

    # px: weigh the model's change per pixel by min(1, |CoC| / focus_gate) of a CoC map (imaging.focus_gate): the
    # --coc map given, else the training-free edge estimate; --focus-gate 0 (focus_gate=0) turns it off. None: no gate
    focus_gate: float | None = None
    # a defocus-map model's bound: where an image's f-number N is known, its map reads at most coc_bound x the image's
    # long side / N pixels (imaging.optics.bound_coc: a scene's CoC at f/N is its CoC at f/1 over N); "auto": the
    # largest CoC x f-number of the training shards' coc.png, resolved when training starts (null where no sample has
    # coc.png and an f-number); None: no bound
    coc_bound: float | str | None = None
    # the long side an image is deblurred at unless deblur, eval or the API say otherwise (inference.scale): "auto",
    # where its blur reads as wide as the training inputs' did; "trained", the training images' long side; pixels;
    # None: its own size (as --work-side 0 / work_side=0 asks of a model that has one). A defocus-map model reads its
    # map there and gives it back at the image's size (inference.scale.read_at_side), by --coc map, deblur and the API
    work_side: int | Literal["auto", "trained"] | None = None

    def __post_init__(self) -> None:
        if self.focus_gate is not None and not (self.focus_gate > 0 and math.isfinite(self.focus_gate)):
            raise ValueError(f"inference.focus_gate: expected a positive number of pixels or null, got {self.focus_gate}")
        bound = self.coc_bound
        if isinstance(bound, str) and bound != "auto" or isinstance(bound, float) and not (0 < bound < math.inf):
            raise ValueError("inference.coc_bound: expected auto, a positive fraction of the image's long side or "
                             f"null, got {bound!r}")
        side = self.work_side
        if isinstance(side, bool) or isinstance(side, int) and side < MIN_WORK_SIDE:
            raise ValueError(f"inference.work_side: expected auto, trained, a long side of at least {MIN_WORK_SIDE} "
                             f"pixels or null, got {side!r}")

    @property
    def resolved_bound(self) -> float | None:
        """coc_bound as a number (what training resolved `auto` to), or None (no bound, or `auto` never resolved)."""
        return self.coc_bound if isinstance(self.coc_bound, float) else None


@dataclass
class Recipe:
    method: str
    output_dir: str = "runs/default"
    seed: int = 0
    # the trained weights' license as a Hub identifier (mit, apache-2.0, cc-by-nc-4.0, ...): the model card's
    # `license`; None: not stated (the card says `other`). Mind the training data's terms.
    license: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: Any = None  # the method's ModelConfig
    objective: Any = None  # the method's ObjectiveConfig
    sampler: Any = None  # the method's SamplerConfig
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def empty_value(recipe: Recipe) -> str | None:
    """The line naming a path key given as an empty string (`data.train=$UNSET`), else None: the run read it as the
    working folder (output_dir, data.train, data.val) or as none at all (train.init_from, a fresh start)."""
    givens = [("output_dir", recipe.output_dir, "the run folder (e.g. output_dir=runs/NAME)"),
              ("train.init_from", recipe.train.init_from, "the model file to start from, or null for none")]
    for key in ("train", "val"):
        value = getattr(recipe.data, key)
        what = "a shard folder or pattern" + (" (e.g. data.train=shards/)" if key == "train" else ", or null for none")
        givens += [(f"data.{key}" + (f"[{i}]" if isinstance(value, list) else ""), v, what)
                   for i, v in enumerate(value if isinstance(value, list) else [value])]
    return next((f"{key}: empty; give {what}" for key, v, what in givens if isinstance(v, str) and not v.strip()),
                None)


def packaged_recipe_names() -> list[str]:
    """The names of the recipes shipped inside the package (their file names without .yaml), sorted."""
    return sorted(p.stem for p in PACKAGED_RECIPES.glob("*.yaml"))


def packaged_recipe(name: str) -> Path:
    """The packaged recipe file of `name` ("nafnet-tiny" or "nafnet-tiny.yaml"); RecipeError naming the known ones."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = PACKAGED_RECIPES / f"{stem}.yaml"
    if not stem or Path(stem).name != stem or not path.is_file():
        names = packaged_recipe_names()
        raise RecipeError(f"no packaged recipe named '{name}' (packaged: {', '.join(names)})"
                          f"{did_you_mean(stem, names)}")
    return path


def find_recipe(name_or_path: str | Path) -> Path:
    """The recipe file that a `train` argument names: an existing file wins; else the packaged recipe of
    that name, with or without .yaml, also written recipes/NAME.yaml (the README's spelling) outside the
    repository. RecipeError, with the packaged names, for anything else."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise RecipeError(f"{path}: a folder, not a recipe file")
    if path.parent in (Path("."), Path("recipes")):
        try:
            return packaged_recipe(path.name)
        except RecipeError:
            pass
    names = packaged_recipe_names()
    stem = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    raise RecipeError(f"recipe not found: {name_or_path} is no file, nor a packaged recipe "
                      f"(packaged: {', '.join(names)}){did_you_mean(stem, names)}")


def describe_recipe(path: Path) -> dict[str, str]:
    """A recipe file's name, method and one-line description: the first line of its header comment that is
    not a command, with "..." where the sentence goes on."""
    text = path.read_text()
    try:
        method = str((yaml.safe_load(text) or {}).get("method", "?"))
    except (yaml.YAMLError, AttributeError):
        method = "?"
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    prose = [i for i, line in enumerate(header) if line and not _COMMAND_LINE.match(line)]
    description = ""
    if prose:
        i = prose[0]
        description = header[i]
        goes_on = i + 1 < len(header) and header[i + 1] and not _COMMAND_LINE.match(header[i + 1])
        if goes_on and not description.endswith((".", ")", ":")):
            description += " ..."
    return {"name": path.stem, "method": method, "description": description}


def copy_recipe(name: str, dest: str | Path, force: bool = False) -> Path:
    """Copy the packaged recipe `name` to `dest` to edit it; the file written.

    `dest` is a folder (kept name) when it is one, ends with a slash or has no suffix; else the new file's
    name. An existing file, or a link (even one to nothing), is kept (RecipeError) unless `force`, which replaces
    that name with the copy (a link's own target is never written).
    """
    source = packaged_recipe(name)
    slash = str(dest).endswith(("/", "\\"))  # read before Path drops it: "my.recipes/" names a folder
    dest = Path(dest)
    folder = dest.is_dir() or slash or (not dest.exists() and not dest.suffix)
    target = dest / source.name if folder else dest
    if target.is_symlink() and not force:
        raise RecipeError(f"{target} is a link: give --force to replace the link with the copy")
    if target.exists() and not force:
        raise RecipeError(f"{target} exists: give --force to overwrite it")
    if target.is_dir():
        raise RecipeError(f"{target} is a folder: give the copy another name")
    if target.exists() and not target.is_symlink() and not target.is_file():  # a device, a pipe, a socket
        raise RecipeError(f"{target} is not a regular file (a device, pipe or socket): give the copy another name")
    target.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: the CLI's one line (cli/app.py)
    try:  # without `force` never over a file, one that appeared since the look above included
        atomic_write(target, source.read_bytes(), exclusive=not force)
    except FileExistsError:
        raise RecipeError(f"{target} exists: give --force to overwrite it") from None
    return target


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (tuples as lists), ready for YAML/JSON."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (what `--dry-run` prints and each run folder keeps)."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
