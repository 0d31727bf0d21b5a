"""Whether a run folder's newest checkpoint can be resumed with the recipe given now, judged before any work.

The checkpoint's recipe (its recipe.json) is compared with the recipe key by key:
  * keys that shape the saved state (method, model, data.channels, optim.name), the weights' provenance
    (train.init_from: a resumed run continues the checkpoint's weights, not the init_from file's) or what the
    network's inputs and outputs mean (MEANING_KEYS, e.g. RDDM's noise schedule) must agree: otherwise the resume
    is refused, naming the key with both values;
  * keys that change what the steps from the checkpoint on compute (seed, data.batch_size, optim.lr, ...) may
    change: the run goes on with the new values and says so in one line naming each key, old -> new, since it is
    not the exact continuation of the interrupted run;
  * keys that change no weight (train.checkpoint_every, log_every, eval_every, ...) are not mentioned (the shards,
    their split and the DataLoader workers are judged by `checkpoints.check_data_position`).
train.mixed_precision is judged by the precision the steps compute in: `auto` resolves where the run starts
(`accelerate launch --mixed_precision`, `accelerate config`, the environment, the machine), so a resume of an `auto`
checkpoint that resolves otherwise is said with both resolved values (the checkpoint's loop_state.json records its
own), and `bf16` -> `auto` resolving to bf16 again is the exact continuation.
A checkpoint folder whose saved step is not the one its name says (a renamed folder) is refused too: the run
would go on from the wrong step and prune the real newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from defocuskit.config.recipe import Recipe, recipe_to_dict

# recipe keys a checkpoint must agree on to be resumed (they shape the saved state, or the weights' provenance)
RESUME_KEYS = ("method", "model", "data.channels", "optim.name", "train.init_from")
# objective keys that fix what the numbers going into or coming out of a method's network mean: weights trained under
# other values read the same tensors as something else, so a resume (and a fine-tune, train.init_from: train/init.py)
# is refused where they differ, as where a model key does. Where each is used:
MEANING_KEYS: dict[str, tuple[str, ...]] = {
    # methods/rddm.py schedule_of -> diffusion/ddim_residual.make_scheduler: the denoiser's integer timestep input t
    # indexes this noise schedule (models/rddm.py q_sample in training, the DDIM steps in methods/rddm.py restore):
    # under another schedule the same t is another noise level
    "rddm": ("objective.num_train_timesteps", "objective.beta_start", "objective.beta_end"),
}
# Every other objective key weighs or chooses the loss, which a fine-tune may change: rddm pre_weight; hidd sigma_min,
# sigma_max (NCSN++ takes sigma itself, models/ncsnpp.py: the range says which levels are trained and sampled, not
# what a level means), reduce_mean; defocus_map coc_norm (methods/defocus_map.py divides prediction and target alike:
# the output stays in pixels), loss, quantile, charbonnier_eps, coc_weight, blur_weight; nafnet loss, target_lowpass
# (which target the image is fitted to, not its scale); restormer, ifan, drbnet loss and weights; jdrl's stage
# schedule, weights, flow and mask; cyclegan's lambdas (models/cyclegan.py: loss weights) and unpaired; dncnn and
# ffdnet have none.
# keys that change no weight a run computes (the data's files and workers: check_data_position)
NO_EFFECT = ("output_dir", "license", "data.train", "data.num_workers", "train.checkpoint_every",
             "train.keep_checkpoints", "train.log_every", "train.log_with", "train.max_minutes", "train.eval_every",
             "train.keep_best")
# keys that change only what a validation scores: named where the run validates (data.val given)
VALIDATION = ("data.val", "train.val_limit", "sampler", "inference")
PRECISION = "train.mixed_precision"  # judged by what it resolves to (precision_change)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested recipe dict as {"data.batch_size": 4, ...} (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def recorded_init(checkpoint: Path) -> dict[str, str] | None:
    """The provenance of train.init_from (`init_from`, `init_from_sha256`) that the run a checkpoint is of started
    from, as recorded then; None where it records none (no init_from, or a checkpoint written before the record)."""
    init = _loop_state(checkpoint, "init")
    ok = isinstance(init, dict) and all(isinstance(init.get(k), str) for k in ("init_from", "init_from_sha256"))
    return {k: init[k] for k in ("init_from", "init_from_sha256")} if ok else None


def _loop_state(checkpoint: Path, key: str) -> Any:
    """The value of `key` in a checkpoint's loop_state.json (None where it cannot be read: the load names why)."""
    try:
        return json.loads((checkpoint / "loop_state.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _saved_step(checkpoint: Path) -> int | None:
    """The step a checkpoint's loop_state.json records (None where it cannot be read: the load names why)."""
    step = _loop_state(checkpoint, "step")
    return step if isinstance(step, int) else None


def precision_change(old: Any, new: Any, old_resolved: Any, new_resolved: Any) -> str | None:
    """"train.mixed_precision OLD -> NEW", `auto` with what it resolved to, where the precision the steps compute in
    changes (or may: a side not known, and the key changed); None where it stays."""
    old_resolved = old_resolved if isinstance(old_resolved, str) else (old if old != "auto" else None)
    new_resolved = new_resolved if isinstance(new_resolved, str) else (new if new != "auto" else None)
    same = old_resolved == new_resolved if old_resolved and new_resolved else old == new  # unknown: by the key
    if same:
        return None

    def shown(value: Any, resolved: Any) -> str:
        return f"{value!r} ({resolved})" if value == "auto" and resolved else repr(value)

    return f"{PRECISION} {shown(old, old_resolved)} -> {shown(new, new_resolved)}"


def check_steps(checkpoints: list[tuple[int, Path]]) -> None:
    """ValueError naming the first checkpoint folder whose saved step is not the step of its name."""
    for step, folder in checkpoints:
        saved = _saved_step(folder)
        if saved is not None and saved != step:
            raise ValueError(f"{folder}: holds the state of step {saved}, not {step} (renamed?); a resume would take "
                             f"it for step {step} (and go on from the wrong step, or prune it as an old one): name it "
                             f"step-{saved:07d} or move it out of checkpoints/")


def check_resume(checkpoint: Path, recipe: Recipe, precision: str | None = None) -> str | None:
    """ValueError (naming the key, both values) when `checkpoint` cannot be resumed with `recipe`; else the one line
    to say where the run will not be the exact continuation of the interrupted run (None when it will be).
    `precision`: the mixed precision this run computes in (Accelerate's, once the recipe's `auto` is resolved)."""
    try:
        saved = flatten(json.loads((checkpoint / "recipe.json").read_text()))
    except (OSError, ValueError) as e:
        raise ValueError(f"{checkpoint}: not a readable defocuskit checkpoint ({e})") from None
    now = flatten(recipe_to_dict(recipe))
    changed = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    for key in changed:
        if _under(key, RESUME_KEYS + MEANING_KEYS.get(recipe.method, ())):
            raise ValueError(f"{checkpoint}: checkpoint has {key}={saved.get(key)!r} but the recipe has "
                             f"{key}={now.get(key)!r}; use another output_dir or --no-resume")
    by_length = {"cosine", "linear_decay"} & {saved.get("optim.schedule"), now.get("optim.schedule")}  # to 0 there
    skip = NO_EFFECT + (() if by_length else ("train.max_steps",)) + (() if recipe.data.val else VALIDATION)
    said = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed if not _under(k, skip + (PRECISION,))]
    said += [x] if (x := precision_change(saved.get(PRECISION), now.get(PRECISION),
                                          _loop_state(checkpoint, "mixed_precision"), precision)) else []
    if not said:
        return None
    step = _saved_step(checkpoint)
    return (f"warning: the recipe differs from the checkpoint's ({', '.join(said)}): the run goes on with the new "
            f"values from step {step if step is not None else checkpoint.name[5:].lstrip('0') or 0}, not the exact "
            "continuation of the interrupted run")
