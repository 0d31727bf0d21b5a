"""The one interface every method implements: the training loop, `deblur` and `eval` see only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

# What a method needs from the shards:
#   "sharp":  sharp images only (sharp-only and paired samples both give sharp.png; the stream keeps each distinct
#             reference once: a stack's pairs share their scene's, train/references.py)
#   "paired": samples with blur.png and sharp.png
#   "coc":    samples with blur.png and coc.png (the circle-of-confusion ground truth)
#   "map":    samples with blur.png and coc.png or blurmask.png (a binary blur map): the defocus-map estimator
DataKind = Literal["sharp", "paired", "coc", "map"]
# The shard members a sample must have for each kind; a tuple entry: one of these alternatives.
Requirement = tuple[str | tuple[str, ...], ...]
MEMBERS: dict[str, Requirement] = {
    "sharp": ("sharp.png",), "paired": ("sharp.png", "blur.png"), "coc": ("sharp.png", "blur.png", "coc.png"),
    "map": ("blur.png", ("coc.png", "blurmask.png")),
}

# A training batch: float tensors, images in [0, 1], shape (B, C, H, W), C = recipe data.channels:
#   batch["sharp"], batch["blur"] (paired/coc), batch["coc"] (coc: (B, 1, H, W), pixels),
#   batch["f_number"] (B,) float, NaN where unknown; with Method.views also batch["left"], batch["right"]
#   (the dual-pixel views, zeros where absent) and batch["has_views"] (B,) bool; paired/coc also batch["aligned"]
#   (B,) bool: the pair is pixel-aligned by construction (rendered; data.metadata.pixel_aligned), absent = unknown.
Batch = dict[str, torch.Tensor]

# Per-sample conditions handed to `restore` beside the images (each optional):
#   conditions["coc"]: (B, 1, H, W) circle-of-confusion diameter in pixels (defocus map, coc.png or optics).
Conditions = dict[str, torch.Tensor]

# The sampler's progress, k-diffusion style: callback({"i": step, "n": steps, "x": ..., "sigma": ..., "denoised": ...})
# after each step; "i" and "n" always, the tensors where the sampler has them.
Callback = Callable[[dict[str, Any]], None]


class Sampler:
    """The base of every method's SamplerConfig dataclass: what running it costs and needs, as a diffusers scheduler
    owns its timesteps. A method's sampler overrides what differs from one plain network pass."""

    def resolved(self) -> Any:
        """The config as it will run (defaults that depend on other keys filled in)."""
        return self

    def nfe(self) -> int:
        """Network evaluations per sample path (per tile): steps x evaluations per step."""
        return 1

    def needs(self) -> frozenset[str]:
        """The conditions (Conditions keys) restore requires with this config."""
        return frozenset()

    def check(self, objective: Any) -> None:
        """ValueError, naming the sampler key, where these settings cannot run with the recipe's `objective`."""

    def timesteps(self, objective: Any) -> list[int] | None:
        """The training timesteps the sampler visits, in order, where a scheduler sets them (recorded in deblur.json
        and report.json); else None."""
        return None


@dataclass
class RestoreContext:
    """Everything restore gets beside the network and the images."""

    sampler: Any  # the method's SamplerConfig, resolved
    objective: Any  # the method's ObjectiveConfig (the noise schedule a sampler follows)
    generator: torch.Generator | None = None  # the source of the sampler's noise
    callback: Callback | None = None  # progress after each sampler step
    conditions: Conditions = field(default_factory=dict)  # per-sample inputs beside the images (see Conditions)

    def step(self, i: int, n: int, **tensors: Any) -> None:
        """Report step i (0-based) of n to the callback, with the tensors the sampler has."""
        if self.callback is not None:
            self.callback({"i": i, "n": n, **tensors})


@dataclass(frozen=True)
class Companion:
    """Another method's trained model file that this method's recipe names under `key` (RDDM: its defocus-map
    estimator at model.map_checkpoint), needed to build it for training."""

    key: str
    method: str


@dataclass(frozen=True)
class Protocol:
    """How a release runs its network at test time (its test script), recorded in every model file imported from
    it. defocuskit's own inference differs where the toolkit's rules say so: it reads 16-bit sources as 16-bit and
    reflect-pads to the network's multiple instead of cropping."""

    script: str  # the released test script these facts come from
    bit_depth: int  # test images as the release reads them (8: cv2.imread and / 255)
    channel_order: str  # what the released network takes: "rgb", or "bgr" (cv2 order without conversion)
    padding: str  # "none" (sizes taken as they come), "reflect" (bottom/right, to pad_multiple)
    pad_multiple: int  # the multiple H and W must be (the network's downsamplings)
    crop_multiple: int = 1  # the release crops test images to a multiple of this (1: no crop)


@dataclass(frozen=True)
class Release:
    """A published checkpoint format of the network this method ports (`defocuskit import-weights`).

    convert(checkpoint) -> state dict in the port's names: `checkpoint` is what torch.load(weights_only=True)
        returns for the published file (io.release.find_state_dict unwraps the usual containers); raises
        io.release.ReleaseError for a file of another network. Any change of layout (names, channel order) is here.
    recipe, overrides: the packaged recipe and `key=value` overrides that build the released network (and name
        the set it was trained on in data.train, for the model card); the imported model file carries that recipe.
    optional: names (or name prefixes ending in ".") of the port's tensors that a checkpoint may lack (a
        training-only module not every file carries); kept as built and listed in the model file.
    fits(tensors, recipe): where a file is another published configuration of the network than `recipe` (the
        release's, with the caller's overrides) builds, a ReleaseError naming the overrides that build it; it sees
        the overrides, which `convert` does not.
    """

    code: str  # the released repository the port follows (owner/name@commit)
    checkpoints: str  # the published files and where the authors link them
    convert: Callable[[Any], dict[str, torch.Tensor]]
    recipe: str
    protocol: Protocol
    overrides: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    fits: Callable[[dict[str, torch.Tensor], Any], None] | None = None


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel (.module) or torch.compile (._orig_mod) wrapper."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))


def _unchanged(raw: dict[str, Any]) -> dict[str, Any]:
    return raw


def rename_key(raw: dict[str, Any], section: str, old: str, new: str) -> dict[str, Any]:
    """`raw` with `section.old` renamed `section.new` (for upgrade_recipe); unchanged where `old` is absent."""
    part = raw.get(section)
    if not isinstance(part, dict) or old not in part:
        return raw
    part = dict(part)
    value = part.pop(old)
    part.setdefault(new, value)
    return {**raw, section: part}


def _all_parameters(model: nn.Module, phase: str) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def model_multiple(model: nn.Module) -> int:
    """The `multiple` attribute of the network (1 where it has none): H and W it needs to be multiples of."""
    return int(getattr(unwrap(model), "multiple", 1))


@dataclass(frozen=True)
class Method:
    """A deblurring method: its config sections, how to build its network, train it and run it.

    build(model_cfg, objective_cfg, for_training) -> nn.Module
        the network(s); `for_training=False` skips loading frozen parts from other files
        (the exported .safetensors carries every weight).
    loss(model, batch, objective_cfg, phase) -> scalar tensor
        the training objective of `phase`; randomness from torch's global RNG (the loop reseeds it per step).
        The batch's images have data.channels channels, which recipe validation checked against model.channels.
        The weights must get their gradients through `model`'s forward (under several processes `model` is
        DistributedDataParallel, which averages the processes' gradients of a backward through its forward only):
        read attributes through `unwrap(model)`, never run its network that way.
    phases: the optimizers, by name, each stepped once per training step in this order on the same
        micro-batches (one, "main", for most methods; "generator", "discriminator" for a GAN). Each has
        its own optimizer and LR schedule from the recipe's `optim` section, checkpointed and restored.
    phase_parameters(model, phase) -> list of parameters that phase's optimizer updates.
    restore(model, blur, ctx: RestoreContext) -> tensor
        deblurs a batch (B, C, H, W) in [0, 1], C the model's channels and H, W multiples of `pad_multiple`
        (inference.restore.restore_batch adapts other inputs: one channel at a time, padded and cropped back);
        returns (B, C_out, H, W) for the "deblur" output of the method (an image, or a defocus map).
    SamplerConfig: a dataclass subclassing `Sampler` (its resolved, nfe, needs and timesteps).
    upgrade_recipe(raw) -> raw
        a model file's recipe dict of an older version in today's keys.
    data: the kind of shard samples it trains on; `members` the shard members they need (default: the kind's),
        `terms` the loss terms (objective weight key, member) that only samples with that member feed.
    views: its loss reads the blurred shot's dual-pixel views where a sample has them (left.png, right.png):
        batches then carry "left", "right" (zeros where a sample has none) and "has_views" (B,) bool.
    companions: trained model files of other methods its recipe names (Companion), needed to train it.
    description: what the method is, in one line naming its paper (the Hub model card says it).
    whole_image: how inference may run the network on a large input. True: in one pass over the whole
        (padded) image, as far as a memory budget allows (translation-equivariant convolutions, whose
        cost grows linearly with the pixels); False: in tiles of the training size (self-attention,
        whose cost and whose learnt context depend on the input size). Each method says why.
    pad_multiple(model) -> int
        the multiple that the network needs H and W to be (a U-Net with k downsamplings: 2**k);
        inference reflect-pads its input to it and crops the output back.
    channels_last: on a CPU, inference hands the network its input in channels-last memory format
        (oneDNN's convolutions run NHWC without reordering each layer's input; the same values to float
        rounding). True only where `tools/bench_channels_last.py` measured it faster (docs/benchmarks.md).
    release: the published checkpoint format its port reads (Release), or None.
    """

    name: str
    data: DataKind
    ModelConfig: type
    ObjectiveConfig: type
    SamplerConfig: type
    build: Callable[[Any, Any, bool], nn.Module]
    loss: Callable[[nn.Module, Batch, Any, str], torch.Tensor]
    restore: Callable[[nn.Module, torch.Tensor, RestoreContext], torch.Tensor]
    output: Literal["image", "defocus_map"] = "image"
    description: str = ""
    upgrade_recipe: Callable[[dict[str, Any]], dict[str, Any]] = _unchanged
    phases: tuple[str, ...] = ("main",)
    phase_parameters: Callable[[nn.Module, str], list[nn.Parameter]] = _all_parameters
    members: Requirement | None = None
    terms: tuple[tuple[str, str], ...] = ()
    companions: tuple[Companion, ...] = ()
    whole_image: bool = False
    pad_multiple: Callable[[nn.Module], int] = model_multiple
    channels_last: bool = False
    release: Release | None = None
    views: bool = False

    def __post_init__(self) -> None:
        if not issubclass(self.SamplerConfig, Sampler):
            raise TypeError(f"method '{self.name}': its SamplerConfig must subclass methods.base.Sampler")

    @property
    def required_members(self) -> Requirement:
        """The shard members a training sample must have."""
        return self.members if self.members is not None else MEMBERS[self.data]
