"""The one Accelerate training loop every method trains with (it sees only `Method.build` and `Method.loss`).

Run folder (`output_dir`): recipe.yaml (resolved, written when the run starts), metrics.jsonl,
checkpoints/step-NNNNNNN/ (Accelerate `save_state` folders, written under a temporary name and renamed
when complete; the loop's own state in them is safetensors and JSON, see `defocuskit.train.state`),
model.safetensors (the EMA weights, exported at the end; with `train.init_from` the run starts from that
model's weights, recorded in the export's metadata). With a validator (`data.val`, built by
`eval.validation.make_validator`), the EMA weights are scored every `train.eval_every` steps and at the end:
a "val_*" row in metrics.jsonl and the trackers, a grid of crops in val/step-NNNNNNN.png, and with
`train.keep_best` best.safetensors (the EMA weights of the best validation PSNR so far). The main process holds
`.train.lock` for the whole run: a second run into the same output_dir stops at once, naming the first (pid, host,
command).

Reproducibility: before every micro-batch the global RNGs are reseeded from (seed, rank, step, micro),
and the data of batch b is a fixed function of (seed, rank, b) (see `defocuskit.train.stream`), so a
resumed run continues exactly the stream and the loss curve of the uninterrupted one, and starts at
once: the stream seeks to its position, whatever the step.
With DEFOCUSKIT_LOG_KEYS=1 each process also records the sample keys it trained on
(seen-keys-rank{R}.jsonl, cut back to the resumed step as metrics.jsonl is) and a checksum of its final weights
(weights-rank{R}.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from defocuskit.config.recipe import Recipe, recipe_to_dict, recipe_to_yaml
from defocuskit.data.image_scale import median_blur_px, median_long_side
from defocuskit.data.names import trained_on
from defocuskit.io import locks
from defocuskit.io.atomic import atomic_write
from defocuskit.io.lifeline import die_with_parent, launched_worker
from defocuskit.io.modelfile import blur_entry, datasets_entry, long_side_entry, save_model
from defocuskit.io.threads import apply_threads
from defocuskit.methods import get_method
from defocuskit.methods.base import Method
from defocuskit.train.checkpoints import (
    METRICS,
    blocking_step_folder,
    check_data_position,
    clean_run_folder,
    list_checkpoints,
    load_checkpoint,
    not_ours,
    save_checkpoint,
    truncate_metrics,
)
from defocuskit.train.checks import (
    TrainingError,
    build_network,
    check_recipe,
    format_counts,
    parameter_counts,
    phase_params,
)
from defocuskit.train.data import check_data, make_loader, resolve_coc_bound
from defocuskit.train.ema import EMA
from defocuskit.train.exports import MODEL_FILE, earlier_weights, run_folder_metadata
from defocuskit.train.init import init_provenance, load_initial_weights
from defocuskit.train.optim import make_optimizer, make_scheduler
from defocuskit.train.progress import flat_config, training_bar
from defocuskit.train.resume import check_resume, check_steps, recorded_init
from defocuskit.train.runfolder import RECIPE_FILE, RECIPE_HEADER, check_run_folder
from defocuskit.train.running_stats import average_running_stats, running_stats
from defocuskit.train.state import LoopState, StepCounter
from defocuskit.train.step import train_step
from defocuskit.train.validation import Validate, ValidationHook

RUN_LOCK = ".train.lock"  # held by the main process for the whole run (io.locks)
LOG_KEYS_ENV = "DEFOCUSKIT_LOG_KEYS"
KEYS_FILE = "seen-keys-rank{rank}.jsonl"  # with LOG_KEYS_ENV: the sample keys process R trained on, by step


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(recipe: Recipe, resume: bool = True, validate: Validate | None = None) -> Path:
    """Train `recipe` (resuming from its newest checkpoint unless `resume` is False); the exported model's path.
    `validate` (`eval.validation.make_validator(recipe)`) scores the EMA weights during the run."""
    from accelerate import Accelerator

    if (recipe.train.eval_every or recipe.train.keep_best) and validate is None:
        raise TrainingError("train.eval_every / train.keep_best need a validator: give data.val and run "
                            "`defocuskit train` (or pass validate=eval.validation.make_validator(recipe))")
    method = get_method(recipe.method)
    check_recipe(recipe, method)
    # before anything is written: a folder, writable, no file of the user's
    check_run_folder(recipe.output_dir, validates=bool(recipe.train.eval_every or recipe.train.keep_best))
    urls = check_data(recipe, method)
    recipe, resolved = resolve_coc_bound(recipe, urls)
    out = Path(recipe.output_dir)
    checkpoints = list_checkpoints(out) if resume else []
    if checkpoints:
        check_steps(checkpoints)
        check_resume(checkpoints[-1][1], recipe)  # refused before any work (what changed: said once it trains)
    elif resume and (earlier := earlier_weights(out)) is not None:  # its checkpoints deleted: not resumable
        raise TrainingError(f"{earlier}: exported by an earlier run of this output_dir, which holds no checkpoint to "
                            "resume from (checkpoints/ removed?); a run would start at step 0 beside it, so nothing "
                            "was written: give --no-resume to start over (it removes that run's files) or another "
                            "output_dir")
    blocking = blocking_step_folder(out, checkpoints[-1][0] if checkpoints else 0, recipe.train.max_steps,
                                    recipe.train.checkpoint_every)
    if blocking is not None:
        raise TrainingError(f"{blocking}: {not_ours(blocking)}, where this run would save its checkpoint; nothing "
                            "was written: move it away or give another output_dir")

    if launched_worker():
        die_with_parent()  # a killed `accelerate launch` takes its workers with it
    t = recipe.train
    # checked before any work; a resume keeps the provenance its run started from (the file may since be gone or new)
    recorded = recorded_init(checkpoints[-1][1]) if t.init_from and checkpoints else None
    init = (None, recorded) if recorded else init_provenance(t.init_from) if t.init_from else None
    apply_threads(workers=recipe.data.num_workers)  # the DataLoader's worker processes count against the cores
    handlers = []
    if len(method.phases) > 1:  # a phase leaves the other phases' parameters without gradients
        from accelerate.utils import DistributedDataParallelKwargs

        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    explicit = t.mixed_precision != "auto"  # else Accelerate decides: the launcher's flag, its config, the env
    accelerator = Accelerator(
        gradient_accumulation_steps=t.grad_accum, mixed_precision=t.mixed_precision if explicit else None,
        log_with=t.log_with, project_dir=str(out), kwargs_handlers=handlers,
    )
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ("
                      + ("the recipe's train.mixed_precision" if explicit else
                         "from Accelerate: `accelerate launch --mixed_precision`, `accelerate config` or "
                         "ACCELERATE_MIXED_PRECISION; the recipe's train.mixed_precision is auto") + ")")
    if resolved:
        accelerator.print(resolved)
    if checkpoints and checkpoints[-1][0] < t.max_steps:  # where a resume is not the exact continuation
        changed = check_resume(checkpoints[-1][1], recipe, precision=accelerator.mixed_precision)
        if changed:
            accelerator.print(changed)
    with flushed_denormals(accelerator.device.type == "cpu" and t.flush_denormal):
        if not accelerator.is_main_process:
            return _train(recipe, resume, method, urls, checkpoints, accelerator, init, validate)
        made = locks.folders_to_make(out)  # where the run fails, no lock left in them, nor them where empty
        try:
            with contextlib.ExitStack() as held:
                held.push(locks.unmake_on_error(made))
                held.enter_context(locks.hold(out / RUN_LOCK, "train", f"output_dir {out}: another training run is "
                                              "using it", remove_on_error=bool(made)))
                return _train(recipe, resume, method, urls, checkpoints, accelerator, init, validate)
        except locks.LockedError as exc:
            raise TrainingError(f"{exc}; wait for it to finish or give another output_dir") from None


def denormals_flushed() -> bool:
    """Whether this process's CPU arithmetic computes denormal floats as zero."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@contextlib.contextmanager
def flushed_denormals(on: bool) -> Iterator[None]:
    """Denormal floats computed as zero inside (when `on`; they cost a CPU ~100x per operation), the
    process's previous setting restored after."""
    before = denormals_flushed()
    torch.set_flush_denormal(on or before)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _train(recipe: Recipe, resume: bool, method: Method, urls: list[str], checkpoints: list[tuple[int, Path]],
           accelerator: Any, init: tuple[Any, dict[str, str]] | None, validate: Validate | None = None) -> Path:
    """`train` on one process once the recipe, data and resume point are checked (and, on the main
    process, the run folder is held); `init`: the model file and provenance of `train.init_from`."""
    t = recipe.train
    out = Path(recipe.output_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    # the training images' scale (their median long side), recorded in model.safetensors and best.safetensors
    scale = {**long_side_entry(median_long_side(urls)), **blur_entry(median_blur_px(urls))} \
        if accelerator.is_main_process else {}  # and how wide their inputs' blur reads (--work-side auto)
    torch.manual_seed(recipe.seed)  # the same initial weights on every process
    model = build_network(method, recipe, True)
    if init is not None and not checkpoints:  # a resumed run has its own weights in the checkpoint
        load_initial_weights(model, init[0], method.name, recipe.train.init_from, recipe,  # checked before any write
                             sha256=init[1]["init_from_sha256"])
        accelerator.print(f"weights from {recipe.train.init_from} (sha256 {init[1]['init_from_sha256'][:12]}...); "
                          "optimizer and schedule start fresh")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        clean_run_folder(out, fresh=not resume, say=accelerator.print)
    accelerator.wait_for_everyone()
    accelerator.print(f"{method.name}: parameters\n{format_counts(parameter_counts(model))}")
    plain = [make_optimizer(phase_params(method, model, phase), recipe.optim) for phase in method.phases]
    schedulers = [make_scheduler(o, recipe.optim, t.max_steps) for o in plain]
    model, *optimizers = accelerator.prepare(model, *plain)
    # the schedulers are not prepared: Accelerate would step them once per process; they count optimizer steps here
    net = accelerator.unwrap_model(model)
    ema = EMA(net, t.ema_decay)
    counter = StepCounter()
    loader = make_loader(recipe, method, rank, world, urls=urls)
    stream = loader.dataset
    if stream.references is not None:  # a sharp-only method: how many distinct references of how many samples
        accelerator.print(stream.references.line(method.name))
    state = LoopState(accelerator, dict(zip(method.phases, schedulers)), ema, counter,
                      lambda step: stream.position(step * t.grad_accum))
    state.init = init[1] if init else None
    state.register()  # scheduler, EMA, step, data position and RNG as safetensors/JSON: nothing is unpickled

    if checkpoints:
        load_checkpoint(accelerator, checkpoints[-1][1])
        # each from its optimizer steps taken (a step the fp16 GradScaler skipped is none: train/optim.py)
        schedulers = [make_scheduler(o, recipe.optim, t.max_steps, s.last_epoch) for o, s in zip(plain, schedulers)]
        state.schedulers = dict(zip(method.phases, schedulers))
        if counter.step < t.max_steps:  # a run that trains no step draws no data
            check_data_position(accelerator, state.saved_data, stream, counter.step * t.grad_accum)
        accelerator.print(f"resumed from {checkpoints[-1][1]} (step {counter.step})")
    if accelerator.is_main_process:  # once the checkpoint loaded: a resume refused leaves the run's recipe as it was
        atomic_write(out / RECIPE_FILE, RECIPE_HEADER + "\n" + recipe_to_yaml(recipe))
    start = counter.step
    if start > t.max_steps:
        accelerator.print(f"note: {out} already holds step {start} > train.max_steps {t.max_steps}: no training; "
                          f"exporting the step-{start} model ({checkpoints[-1][1]}); --no-resume starts over")
    stream.start_batch = start * t.grad_accum
    if accelerator.is_main_process:
        truncate_metrics(out / METRICS, start)
    log_keys = os.environ.get(LOG_KEYS_ENV) == "1"
    if log_keys:  # the keys of steps trained after the checkpoint are logged again as they are trained again
        truncate_metrics(out / KEYS_FILE.format(rank=rank), start)
    if t.log_with:
        accelerator.init_trackers("defocuskit", config=flat_config(recipe_to_dict(recipe)))

    step = start
    if step < t.max_steps:
        hook = ValidationHook(validate, accelerator, recipe, method, ema, net, start,
                              {**(init[1] if init else {}), **scale}) if validate else None
        step = _run(accelerator, model, net, optimizers, schedulers, ema, counter, recipe, method, loader, log_keys,
                    hook)
    last = list_checkpoints(out)
    if not last or last[-1][0] != step:
        save_checkpoint(accelerator, net, recipe, step)

    path = out / MODEL_FILE
    averaged = ema.averaged_state_dict(net)
    if accelerator.is_main_process:
        save_model(path, averaged, method.name, recipe_to_dict(recipe),
                   extra={**(init[1] if init else {}), **run_folder_metadata(out), "steps": str(step),
                          **datasets_entry(trained_on(recipe.data.train)), **scale})
        accelerator.print(f"exported {path} (EMA weights, step {step})")
    if log_keys:
        sums = {"step": step, "weights": _checksum(net.state_dict()), "ema": _checksum(averaged)}
        (out / f"weights-rank{rank}.json").write_text(json.dumps(sums))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return path


def _run(accelerator: Any, model: nn.Module, net: nn.Module, optimizers: list[Any], schedulers: list[Any],
         ema: EMA, counter: StepCounter, recipe: Recipe, method: Method, loader: Any, log_keys: bool,
         hook: ValidationHook | None = None) -> int:
    """The steps from `counter.step` to `train.max_steps` (or until `train.max_minutes`); the last step done."""
    t = recipe.train
    out = Path(recipe.output_dir)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    start = counter.step
    batches = iter(loader)
    keys_file = open(out / KEYS_FILE.format(rank=rank), "a") if log_keys else None  # noqa: SIM115
    metrics = open(out / METRICS, "a") if accelerator.is_main_process else None  # noqa: SIM115
    bar = training_bar(t.max_steps, start, t.max_minutes, disable=not accelerator.is_main_process)
    t_start = t_log = time.time()
    wait, steps_here, step = 0.0, 0, start
    norms = running_stats(net)  # BatchNorm's running statistics: averaged over the processes every step
    try:
        while step < t.max_steps:
            micro_batches = []
            for micro in range(t.grad_accum):
                t0 = time.perf_counter()
                batch = next(batches)
                wait += time.perf_counter() - t0
                keys = batch.pop("key")
                if keys_file is not None:
                    keys_file.write(json.dumps({"step": step + 1, "micro": micro, "keys": list(keys)}) + "\n")
                    keys_file.flush()  # a killed run's steps stay in the log: the resume cuts back to its checkpoint
                micro_batches.append({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            timed_out = t.max_minutes is not None and (time.time() - t_start) / 60.0 >= t.max_minutes
            lr = optimizers[0].param_groups[0]["lr"]
            stats, stepped = train_step(accelerator, model, optimizers, schedulers, micro_batches, recipe, method,
                                        step, timed_out)
            average_running_stats(accelerator, norms)  # BatchNorm's: every process's data, the same everywhere
            if stepped:  # else no weight moved (fp16 skip): the EMA stays; the step counts (train/optim.py)
                ema.update(net)
            step += 1
            counter.step = step
            bar.update(1)
            counter.window.append(stats[:, :-1].mean(0).double().tolist())
            steps_here += 1
            stop = bool(stats[0, -1])
            if step % t.log_every == 0 or step == t.max_steps or stop:  # the last step is always logged
                now = time.time()
                images = steps_here * t.grad_accum * recipe.data.batch_size * world
                # the mean of the steps since the last row
                mean = np.mean(np.asarray(counter.window, dtype=np.float64), axis=0).tolist()
                record = {"step": step, "loss": mean[0], "lr": lr,
                          "images_per_s": images / max(now - t_log, 1e-9), "data_wait_s": wait, "time": now,
                          "processes": world, "samples_per_step": t.grad_accum * recipe.data.batch_size * world}
                if len(method.phases) > 1:
                    record["losses"] = dict(zip(method.phases, mean))
                postfix = {"loss": f"{record['loss']:.4g}", "lr": f"{lr:.3g}", "img_s": f"{record['images_per_s']:.1f}"}
                bar.set_postfix(postfix, refresh=False)
                if metrics is not None:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                accelerator.log({k: record[k] for k in ("loss", "lr", "images_per_s", "data_wait_s")}, step=step)
                t_log, wait, steps_here = now, 0.0, 0
                if step % t.log_every == 0:  # a row for the run's last step leaves its window to the resumed run
                    counter.window = []
            # the validation first: a run stopped during it resumes from the checkpoint before and does it again
            if hook is not None and (t.eval_every and step % t.eval_every == 0 or step == t.max_steps or stop):
                t_log += hook(step, metrics)  # validation time is not training time
            if step % t.checkpoint_every == 0 and step < t.max_steps:
                save_checkpoint(accelerator, net, recipe, step)
            if stop:
                accelerator.print(f"train.max_minutes ({t.max_minutes}) reached at step {step}: stopping")
                break
    finally:
        bar.close()
        for f in (keys_file, metrics):
            if f is not None:
                f.close()
    return step
