"""Training of the masked-timestep spiking ViT, on one process or many (``torchrun``).

``train_run(config, out_dir)`` trains, writes ``checkpoint.pt`` after every epoch, and at
the end ``metrics.json`` and ``training.png``. A run resumes from its ``checkpoint.pt`` if
one is there (``resume="auto"``); ``resume="fresh"`` starts over; ``resume="require"``
refuses to start without one. A checkpoint is:
``{"config", "state_dict", "epoch", "optimizer", "scheduler", "class_names",
"image_shape", "history", "metrics", "qat_epochs_done"}``.

The mask's schedule (:func:`mask_schedule`, one decision per batch): for
``penalty_warmup_epochs`` the weights train with every step active and the scores still;
then the penalty pushes the scores down (SGD, see :func:`_optimizers`) while the task loss
holds up the useful steps; in the last ``freeze_mask_epochs`` the mask is fixed and the
weights settle on it. With ``target_timesteps`` set, the mask freezes as soon as its mean
active steps are within the target, and a mask still above it when the freeze window
opens is cut to it (:func:`project_mask`): a finished run is always within its target.
With ``data.validation_fraction`` set, that share of the training images is held out, and
when the mask freezes they choose where its steps go (:func:`choose_mask_on_validation`).
At the end the BatchNorm statistics are recomputed with the final weights and mask.

With ``qat_epochs`` set, the run then trains that many epochs through the integer
emulation (:func:`stepvit.model.finetune.finetune`: BatchNorm statistics and mask frozen,
AdamW at ``qat_lr``), as FINN's Brevitas models are trained: from then on the run's model
*is* the integer network its export computes, its test accuracy is the emulation's, and
the plain float forward of its weights is reported beside it (``float_forward_accuracy``).
A checkpoint counts the quantization-aware epochs done (``qat_epochs_done``); a run that has
done some cannot go back to float epochs.

Several processes (``torchrun --nproc_per_node N``; ``WORLD_SIZE`` in the environment)
train with ``DistributedDataParallel``: each rank takes every N-th image of the epoch's
shuffled order with a batch of ``batch_size / N``, so the global batch is the config's.
Rank 0 writes the files.
"""

from __future__ import annotations

import enum
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stepvit.model.config import validate_config
from stepvit.model.data import augment, batches, hold_out, image_shape, load_dataset
from stepvit.model.export.errors import StepvitError
from stepvit.model.finetune import IntegerEmulation, finetune
from stepvit.model.lif import LIFNeuron
from stepvit.model.metrics import measure
from stepvit.model.network import SpikingViT
from stepvit.model.plots import plot_training
from stepvit.model.progress import progress_bar

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
PLOT_NAME = "training.png"
_CHECKPOINT_KEYS = ("config", "state_dict", "epoch", "optimizer", "class_names")
#: Momentum of the SGD that trains the time-step scores.
SCORE_MOMENTUM = 0.9
#: Held-out images the mask's choice is measured on, at most: each candidate mask is one
#: pass over them, and a choice tries about (active x inactive steps) candidates a round.
MASK_CHOICE_IMAGES = 1024


@dataclass(frozen=True)
class Distributed:
    """Where this process stands among the training processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0


def _start_distributed(threads: int) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if threads:
        torch.set_num_threads(threads)
    if world_size <= 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Distributed(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def mean_active_steps(model: SpikingViT) -> float:
    """Return the mean over modules of the active steps of the model's mask."""
    return float(model.timestep_mask().sum(dim=1).double().mean())


def rank_shard(count: int, *, seed: int, epoch: int, rank: int,
               world_size: int) -> torch.Tensor:
    """Return the indices of the training images that ``rank`` sees in ``epoch``.

    One shuffled order per (seed, epoch), the same on every rank; each rank takes every
    ``world_size``-th index of it, after cutting the order to a multiple of ``world_size``
    so that every rank runs the same number of batches (DDP waits for all of them).
    """
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(count, generator=generator)[:count // world_size * world_size]
    return order[rank::world_size]


def build_model(config: dict[str, Any], shape: tuple[int, int, int],
                num_classes: int) -> SpikingViT:
    """Return a new network for ``config`` (its ``model`` section and score_init)."""
    model_config = config["model"]
    try:
        model = SpikingViT(
            tuple(shape), model_config["patch"], model_config["dim"], model_config["heads"],
            model_config["depth"], model_config["mlp_dim"], num_classes, model_config["t_max"],
            leak_shift=model_config["leak_shift"], reset=model_config["reset"],
            attn_shift=model_config["attn_shift"], score_init=config["training"]["score_init"],
            stem=model_config["stem"])
    except ValueError as error:
        raise StepvitError(f"config 'model' does not fit images of shape {tuple(shape)}: "
                           f"{error}") from None
    if model_config["neuron"] == "relu":
        for module in model.modules():
            if isinstance(module, LIFNeuron):
                module.spiking = False
    return model


def fix_timesteps(model: SpikingViT) -> None:
    """Make every step of every module active for good (the fixed-T baseline)."""
    with torch.no_grad():
        model.timestep_scores.fill_(math.inf)
    model.timestep_scores.requires_grad_(False)


@contextmanager
def _in_mode(model: nn.Module, *, training: bool) -> Iterator[None]:
    """Put ``model`` in training or eval mode for a block; restore its mode afterwards."""
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def recalibrate_batchnorm(model: SpikingViT, images: torch.Tensor, batch_size: int,
                          device: torch.device) -> None:
    """Recompute every BatchNorm's running statistics as the plain mean over ``images``.

    The running averages of training lag behind: they mix batches seen under earlier
    weights and earlier masks. One pass in training mode, with the final weights and
    mask, gives the statistics that inference (and the quantizer's BN folding) should use.
    """
    norms = [module for module in model.modules()
             if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))]  # the stem's are 2-d
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches of this pass
    with _in_mode(model, training=True):
        for batch_images, _ in batches(images, torch.zeros(len(images)), batch_size):
            model(batch_images.to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a stepvit checkpoint, refusing a missing, corrupt or foreign file in one line."""
    path = Path(path)
    if not path.is_file():
        raise StepvitError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on a damaged file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StepvitError(f"checkpoint {path} is unreadable ({reason[:120]})") from None
    if not isinstance(checkpoint, dict):
        raise StepvitError(f"checkpoint {path} is not a stepvit checkpoint")
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise StepvitError(f"checkpoint {path} lacks {', '.join(missing)}")
    return checkpoint


def _model_from_checkpoint(checkpoint: dict[str, Any], path: Path) -> SpikingViT:
    config = validate_config(checkpoint["config"])
    shape = tuple(checkpoint.get("image_shape") or image_shape(config["data"]["dataset"]))
    model = build_model(config, shape, len(checkpoint["class_names"]))
    if config["training"]["fixed_timesteps"]:
        fix_timesteps(model)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).splitlines()[0]
        raise StepvitError(f"checkpoint {path} does not fit its config: {first[:160]}") from None
    return model


def load_run(run_dir: str | Path) -> tuple[SpikingViT, dict[str, Any], list[str]]:
    """Return ``(model, config, class_names)`` of a trained run, the model in eval mode.

    Raises
    ------
    StepvitError
        If ``run_dir/checkpoint.pt`` is missing, corrupt or does not fit its config.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    checkpoint = read_checkpoint(path)
    model = _model_from_checkpoint(checkpoint, path)
    model.eval()
    return model, validate_config(checkpoint["config"]), list(checkpoint["class_names"])


def reference_model(run_dir: str | Path, model: SpikingViT) -> nn.Module:
    """Return the model a run's export is compared with.

    After quantization-aware epochs that is ``model``'s integer emulation (the network the
    run trained and reports); otherwise ``model`` itself, the float network.
    """
    checkpoint = read_checkpoint(Path(run_dir) / CHECKPOINT_NAME)
    if int(checkpoint.get("qat_epochs_done", 0)):
        return IntegerEmulation(model).eval()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader, masks: torch.Tensor | None = None) -> float:
    """Return the accuracy of ``model`` over ``loader`` (an iterable of images, labels).

    ``masks`` (``[2L + 2, T]``, 0/1) replaces the trained time-step mask, e.g. a
    budget-capped one. The model's train/eval mode is restored afterwards.
    """
    device = next(model.parameters()).device
    correct = total = 0
    with _in_mode(model, training=False):
        for images, labels in loader:
            logits = model(images.to(device), masks=masks)
            correct += int((logits.argmax(dim=1).cpu() == labels.cpu()).sum())
            total += len(labels)
    if total == 0:
        raise StepvitError("evaluate: the loader yielded no images")
    return correct / total


def _optimizers(model: SpikingViT, config: dict[str, Any]
                ) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
    """Return the optimizers (name -> optimizer) and their cosine schedules.

    The weights learn with AdamW. The time-step scores learn with plain SGD + momentum:
    Adam would scale a score's step to about ``lr`` whatever its gradient, so a score
    whose task gradient is noise would random-walk across 0; with SGD the step follows
    ``sigmoid'(score) * (dCE/dm + lambda / modules)``, the balance the penalty is about.
    """
    training = config["training"]
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        if name == "timestep_scores":
            continue
        # Weight decay on matrices only: decaying BN affine, biases or positions hurts.
        (decayed if parameter.ndim >= 2 and name != "embed.pos" else plain).append(parameter)
    optimizers: dict[str, torch.optim.Optimizer] = {"weights": torch.optim.AdamW([
        {"params": decayed, "weight_decay": training["weight_decay"]},
        {"params": plain, "weight_decay": 0.0},
    ], lr=training["lr"])}
    if model.timestep_scores.requires_grad:
        optimizers["scores"] = torch.optim.SGD([model.timestep_scores], lr=training["score_lr"],
                                               momentum=SCORE_MOMENTUM)
    epochs = training["epochs"]

    def cosine(epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))

    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
                  for name, optimizer in optimizers.items()}
    return optimizers, schedulers


def _same_run(saved: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether two configs describe the same run (the epoch count may grow)."""
    def without_epochs(config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "training": {**config["training"], "epochs": None,
                                       "qat_epochs": None, "qat_lr": None}}
    return without_epochs(saved) == without_epochs(wanted)


def _save_atomically(payload: dict[str, Any], path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


class MaskPhase(enum.Enum):
    """What one training batch does with the time-step scores (:func:`mask_schedule`)."""

    #: The scores stay where they are (every step active at ``score_init > 0``) and no
    #: penalty acts: the weights learn first, so the steps are judged by a trained network.
    WARMUP = "warmup"
    #: The penalty pushes the scores down; the task loss holds the useful steps up.
    LEARN = "learn"
    #: The mask is fixed for good: no penalty, the scores do not move.
    FROZEN = "frozen"


def mask_schedule(epoch: int, steps: float, training: dict[str, Any], *,
                  frozen: bool) -> MaskPhase:
    """Return what a batch of ``epoch`` does with the mask, its mean active ``steps`` given.

    The rule, in order: the fixed-T baseline never learns its mask; a mask once frozen
    stays frozen; the last ``freeze_mask_epochs`` have it frozen; with a
    ``target_timesteps``, the mask freezes as soon as it is within the target after the
    warm-up (the target is a ceiling the penalty reaches and the task loss cannot undo);
    the ``penalty_warmup_epochs`` train the weights alone; then the scores learn under the
    penalty. Where the freeze window opens above the target, :func:`project_mask` cuts the
    mask to it, so a finished run is always within it.

    Parameters
    ----------
    epoch : int
        The epoch (0-based).
    steps : float
        The mask's mean active steps over modules before this batch.
    training : dict
        The config's ``training`` section.
    frozen : bool
        Whether the mask was frozen before this batch.
    """
    if training["fixed_timesteps"] or frozen:
        return MaskPhase.FROZEN
    target = training["target_timesteps"]
    past_warmup = epoch >= training["penalty_warmup_epochs"]
    if epoch >= training["epochs"] - training["freeze_mask_epochs"] \
            or (target and past_warmup and steps <= target):
        return MaskPhase.FROZEN
    return MaskPhase.LEARN if past_warmup else MaskPhase.WARMUP


@torch.no_grad()
def project_mask(model: SpikingViT, target: float) -> None:
    """Switch off the lowest-scored active steps until the mask is within ``target``.

    The mean over modules of active steps ends at most ``target``; every module that has an
    active step keeps at least one (its best-scored), so no module is cut out by this rule.
    """
    scores = model.timestep_scores
    _silence_unreachable(model)
    mask = scores > 0
    budget = math.floor(target * mask.shape[0] + 1e-9)
    while int(mask.sum()) > budget:
        droppable = mask & (mask.sum(dim=1, keepdim=True) > 1) & _keeps_every_module(model)
        if not droppable.any():
            break
        candidates = droppable.nonzero()  # row-major: equal scores go in index order
        row, step = candidates[int(scores[droppable].argmin())].tolist()
        scores[row, step] = -abs(float(scores[row, step])) - 1.0
        _silence_unreachable(model)
        mask = scores > 0


def _silence_unreachable(model: SpikingViT) -> None:
    """Turn off the scores of the steps the stem's nesting leaves off.

    The scores then read as the mask that runs.
    """
    scores = model.timestep_scores
    unreachable = (scores > 0) & (model.timestep_mask() == 0)
    scores[unreachable] = -scores[unreachable].abs() - 1.0


def _keeps_every_module(model: SpikingViT) -> torch.Tensor:
    """Return ``[modules, T]``: whether switching that step off leaves every module a step.

    Only the stem can lose more than the step itself (its rows nest, :meth:`SpikingViT.nested`).
    """
    active = model.timestep_mask().bool()
    keeps = torch.ones_like(active)
    for row in range(model.stem_modules if model.stem_config is not None else 0):
        for step in active[row].nonzero().flatten().tolist():
            trial = active.clone()
            trial[row, step] = False
            if not model.nested(trial.to(torch.int64)).any(dim=1)[active.any(dim=1)].all():
                keeps[row, step] = False
    return keeps


@torch.no_grad()
def validation_loss(model: SpikingViT, validation: tuple[torch.Tensor, torch.Tensor],
                    mask: torch.Tensor) -> float:
    """Return the mean cross-entropy of ``model`` under ``mask`` on the validation split."""
    device = model.timestep_scores.device
    total = 0.0
    with _in_mode(model, training=False):
        for images, labels in batches(*validation, 512):
            logits = model(images.to(device), masks=mask)
            total += float(nn.functional.cross_entropy(logits, labels.to(device),
                                                       reduction="sum"))
    return total / len(validation[1])


@torch.no_grad()
def choose_mask_on_validation(model: SpikingViT,
                              validation: tuple[torch.Tensor, torch.Tensor], *,
                              moves: int = 4) -> list[float]:
    """Move active steps where the validation split says they serve best; set the scores.

    Starting from the model's mask, each round tries every move of one active step to an
    inactive one (the number of active steps, so the work, stays the same; a module keeps
    at least one step if it had one) and makes the move that lowers the validation loss
    most, for at most ``moves`` rounds, on the first :data:`MASK_CHOICE_IMAGES` images.
    The scores near 0 that the penalty leaves decide little: here the data decide.
    Returns the loss after each round (the first: before).
    """
    validation = (validation[0][:MASK_CHOICE_IMAGES], validation[1][:MASK_CHOICE_IMAGES])
    mask = model.timestep_mask()
    losses = [validation_loss(model, validation, mask)]
    for _ in range(moves):
        best, best_loss = None, losses[-1]
        for source in mask.nonzero().tolist():
            if mask[source[0]].sum() == 1:
                continue
            for target in (mask == 0).nonzero().tolist():
                candidate = mask.clone()
                candidate[tuple(source)], candidate[tuple(target)] = 0, 1
                loss = validation_loss(model, validation, candidate)
                if loss < best_loss - 1e-9:
                    best, best_loss = candidate, loss
        if best is None:
            break
        mask = best
        losses.append(best_loss)
    scores = model.timestep_scores
    scores.copy_(torch.where(mask.bool(), scores.abs().clamp(min=1e-3),
                             -scores.abs().clamp(min=1e-3)))
    return losses


@dataclass
class _RunState:
    """What a run carries from epoch to epoch (and through its checkpoint)."""

    model: SpikingViT
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    class_names: list[str]
    shape: tuple[int, ...]
    start_epoch: int = 0
    qat_done: int = 0
    mask_frozen: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    validation: tuple[torch.Tensor, torch.Tensor] | None = None
    mask_choice: list[float] = field(default_factory=list)

    def checkpoint(self, config: dict[str, Any], epoch: int,
                   metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the checkpoint of this state after ``epoch`` epochs."""
        return {
            "config": config,
            "state_dict": {name: value.detach().cpu()
                           for name, value in self.model.state_dict().items()},
            "epoch": epoch,
            "optimizer": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scheduler": {name: sch.state_dict() for name, sch in self.schedulers.items()},
            "class_names": list(self.class_names),
            "image_shape": list(self.shape),
            "history": self.history,
            "metrics": metrics,
            "qat_epochs_done": self.qat_done,
            "mask_frozen": self.mask_frozen,
            "mask_choice": self.mask_choice,
        }


def _saved_checkpoint(config: dict[str, Any], checkpoint_path: Path,
                      resume: str) -> dict[str, Any] | None:
    """Return the checkpoint to resume from (None to start fresh), refusing a foreign one."""
    if resume not in ("auto", "require", "fresh"):
        raise ValueError(f"resume must be 'auto', 'require' or 'fresh', got {resume!r}")
    if resume == "require" and not checkpoint_path.is_file():
        raise StepvitError(f"--resume: no checkpoint at {checkpoint_path}")
    if resume == "fresh" or not checkpoint_path.is_file():
        return None
    checkpoint = read_checkpoint(checkpoint_path)
    if not _same_run(validate_config(checkpoint["config"]), config):
        raise StepvitError(f"{checkpoint_path} was trained with another config: "
                           "use --fresh to start over or another --out")
    return checkpoint


def _new_state(config: dict[str, Any], shape: tuple[int, ...], class_names: list[str],
               device: torch.device) -> _RunState:
    model = build_model(config, shape, len(class_names))
    if config["training"]["fixed_timesteps"]:
        fix_timesteps(model)
    model.to(device)
    optimizers, schedulers = _optimizers(model, config)
    return _RunState(model, optimizers, schedulers, class_names, shape)


def _restore(state: _RunState, checkpoint: dict[str, Any], path: Path, epochs: int) -> None:
    """Load ``checkpoint`` into ``state``: weights, optimizers, epoch, history, mask state."""
    state.model.load_state_dict(_model_from_checkpoint(checkpoint, path).state_dict())
    try:
        for name, optimizer in state.optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizer"][name])
            state.schedulers[name].load_state_dict(checkpoint["scheduler"][name])
    except (ValueError, KeyError, RuntimeError, TypeError) as error:
        raise StepvitError(f"checkpoint {path}: bad optimizer state "
                           f"({str(error)[:120]})") from None
    state.start_epoch = int(checkpoint["epoch"])
    state.history = list(checkpoint.get("history", []))
    state.qat_done = int(checkpoint.get("qat_epochs_done", 0))
    state.mask_frozen = bool(checkpoint.get("mask_frozen", False))
    state.mask_choice = list(checkpoint.get("mask_choice", []))
    if state.qat_done and state.start_epoch < epochs:
        raise StepvitError(
            f"{path} has {state.qat_done} quantization-aware epoch(s) after epoch "
            f"{state.start_epoch}: it cannot train float epochs up to {epochs}; use --fresh")


def train_one_epoch(state: _RunState, network: nn.Module, epoch: int,
                    train: tuple[torch.Tensor, torch.Tensor], config: dict[str, Any],
                    context: Distributed, bar: Any) -> dict[str, float]:
    """Train one epoch on this rank's shard of ``train``; return its loss and accuracy.

    Each batch asks :func:`mask_schedule` whether the scores wait, learn under the penalty
    or are frozen; the batch that freezes them first cuts the mask to the target and,
    with a validation split, lets that split place the steps
    (:func:`choose_mask_on_validation`).
    """
    training, data, model = config["training"], config["data"], state.model
    loss_function = nn.CrossEntropyLoss(label_smoothing=training["label_smoothing"])
    rank_batch = max(1, training["batch_size"] // context.world_size)
    shard = rank_shard(len(train[1]), seed=training["seed"], epoch=epoch, rank=context.rank,
                       world_size=context.world_size)
    augment_generator = torch.Generator().manual_seed(
        (training["seed"] * 100003 + epoch) * 64 + context.rank)
    model.train()
    loss_sum = correct = seen = 0.0
    for images, labels in batches(*train, rank_batch, shard):
        steps_now = mean_active_steps(model)
        phase = mask_schedule(epoch, steps_now, training, frozen=state.mask_frozen)
        if phase is MaskPhase.FROZEN and not state.mask_frozen:
            state.mask_frozen = True
            if not training["fixed_timesteps"]:  # a fixed-T baseline keeps every step
                if training["target_timesteps"]:
                    project_mask(model, training["target_timesteps"])
                if state.validation is not None:
                    state.mask_choice = choose_mask_on_validation(model, state.validation)
        if data["augment"]:
            images = augment(images, augment_generator, padding=data["crop_padding"],
                             flip=data["flip"])
        images, labels = images.to(context.device), labels.to(context.device)
        logits = network(images)
        loss = loss_function(logits, labels)
        if phase is MaskPhase.LEARN:
            loss = loss + training["penalty"] * model.penalty()
        for optimizer in state.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if phase is not MaskPhase.LEARN:
            model.timestep_scores.grad = None  # optimizers skip a parameter without grad
        for optimizer in state.optimizers.values():
            optimizer.step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += float((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
        # drawn by update(), at most every mininterval (a refresh here would draw each batch)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}",
                        acc=f"{correct / seen:.3f}", steps=f"{steps_now:.2f}", refresh=False)
        bar.update(1)
    for scheduler in state.schedulers.values():
        scheduler.step()
    return {"loss": loss_sum / seen, "train_accuracy": correct / seen}


def train_run(config: dict[str, Any], out_dir: str | Path, *, resume: str = "auto",
              progress: bool = True) -> dict[str, Any] | None:
    """Train the network of ``config`` into ``out_dir``; return its metrics.

    Parameters
    ----------
    config : dict
        A config (checked and completed by :func:`stepvit.model.config.validate_config`).
    out_dir : str or Path
        Run folder: ``checkpoint.pt``, ``metrics.json``, ``training.png``.
    resume : str
        ``"auto"`` resumes from ``out_dir/checkpoint.pt`` when it exists, ``"require"``
        insists on it, ``"fresh"`` ignores it and starts over.
    progress : bool
        Show a tqdm bar (rank 0 only).

    Returns
    -------
    dict or None
        The metrics written to ``metrics.json``; None on ranks other than 0.
    """
    config = validate_config(config)
    training, data = config["training"], config["data"]
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    checkpoint = _saved_checkpoint(config, checkpoint_path, resume)
    context = _start_distributed(training["threads"])
    torch.manual_seed(training["seed"])
    train = load_dataset(data["dataset"], data["data_dir"], "train")
    test = load_dataset(data["dataset"], data["data_dir"], "test")
    state = _new_state(config, tuple(train[0].shape[1:]), train[2], context.device)
    if data["validation_fraction"]:
        kept, state.validation = hold_out(*train[:2], data["validation_fraction"],
                                          seed=training["seed"])
        train = (*kept, train[2])
    epochs = training["epochs"]
    if checkpoint is not None:
        _restore(state, checkpoint, checkpoint_path, epochs)
    network: nn.Module = state.model
    if context.world_size > 1:
        network = nn.parallel.DistributedDataParallel(
            state.model,
            device_ids=[context.device.index] if context.device.type == "cuda" else None)
    rank_batch = max(1, training["batch_size"] // context.world_size)
    batches_per_epoch = -(-(len(train[1]) // context.world_size) // rank_batch)
    bar = progress_bar(total=(epochs - state.start_epoch) * batches_per_epoch,
                       desc=f"train {config['name']}", enabled=progress and context.is_main,
                       unit="batch")
    for epoch in range(state.start_epoch, epochs):
        started = time.perf_counter()
        logged = train_one_epoch(state, network, epoch, train[:2], config, context, bar)
        if context.is_main:
            state.history.append({"epoch": epoch + 1, **logged, **_epoch_report(
                state, test[:2], started)})
            out_dir.mkdir(parents=True, exist_ok=True)
            _save_atomically(state.checkpoint(config, epoch + 1), checkpoint_path)
        if context.world_size > 1:
            dist.barrier()
    bar.close()
    if context.world_size > 1:
        # The DDP wrapper holds the process group: dropped first, the group's threads end
        # here rather than at the interpreter's exit, where a rank once aborted ("terminate
        # called without an active exception", twice in the two-process test, under load).
        del network
        dist.destroy_process_group()  # every rank is past the last barrier: rank 0 goes on alone
    if not context.is_main:
        return None
    return _finish_run(state, config, checkpoint, train, test, out_dir, context, progress)


def _epoch_report(state: _RunState, test: tuple[torch.Tensor, torch.Tensor],
                  started: float) -> dict[str, Any]:
    """Return an epoch's test accuracy, mask and duration for the run's history."""
    model = state.model
    return {
        "test_accuracy": evaluate(model, batches(*test, 512)),
        "avg_timesteps": mean_active_steps(model),
        "mask": model.timestep_mask().tolist(),
        "mask_frozen": state.mask_frozen,
        "seconds": time.perf_counter() - started,
    }


def _finish_run(state: _RunState, config: dict[str, Any], checkpoint: dict[str, Any] | None,
                train: tuple, test: tuple, out_dir: Path, context: Distributed,
                progress: bool) -> dict[str, Any]:
    """Recalibrate, run the quantization-aware epochs, measure; write the run's files."""
    training, epochs, model = config["training"], config["training"]["epochs"], state.model
    checkpoint_path = out_dir / CHECKPOINT_NAME
    calibrated = checkpoint is not None and state.start_epoch == epochs \
        and (checkpoint.get("metrics") is not None or state.qat_done > 0)
    if not calibrated:  # a finished or quantization-aware checkpoint has its statistics
        recalibrate_batchnorm(model, train[0], 512, context.device)

    def save(done: int) -> None:
        state.qat_done = done
        _save_atomically(state.checkpoint(config, epochs), checkpoint_path)

    state.qat_done = _quantization_aware_epochs(
        model, config, train[:2], test[:2], done=state.qat_done, history=state.history,
        save=save, progress=progress)
    metrics = measure(model, *test[:2], batch_size=512, progress=progress)
    if state.qat_done:
        # the last epoch is quantization-aware and measured its emulation on the test split
        metrics["float_forward_accuracy"] = metrics["test_accuracy"]
        metrics["test_accuracy"] = state.history[-1]["test_accuracy"]
    frozen_at = next((entry["epoch"] for entry in state.history if entry.get("mask_frozen")),
                     None)
    metrics.update({
        "dataset": config["data"]["dataset"],
        "split": "test",
        "fixed_timesteps": training["fixed_timesteps"],
        "target_timesteps": None if training["fixed_timesteps"]
        else training["target_timesteps"] or None,
        "mask_frozen_in_epoch": frozen_at,
        "mask_choice_validation_losses": state.mask_choice,
        "train_images": len(train[1]),
        "validation_images": 0 if state.validation is None else len(state.validation[1]),
        "epochs": epochs,
        "seed": training["seed"],
        "world_size": context.world_size,
        "quantization_aware_epochs": state.qat_done,
        "train_seconds": sum(entry["seconds"] for entry in state.history),
        "class_names": state.class_names,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_atomically(state.checkpoint(config, epochs, metrics), checkpoint_path)
    (out_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    plot_training(state.history, metrics, out_dir / PLOT_NAME)
    return metrics


def _quantization_aware_epochs(model: SpikingViT, config: dict[str, Any],
                               train: tuple[torch.Tensor, torch.Tensor],
                               test: tuple[torch.Tensor, torch.Tensor], *, done: int,
                               history: list[dict[str, Any]], save: Any,
                               progress: bool) -> int:
    """Train the configured epochs through the integer emulation that ``done`` has not.

    Each epoch is one :func:`~stepvit.model.finetune.finetune` call on the ``train``
    images and labels (a fresh AdamW at ``qat_lr``), logged in ``history`` with
    ``"quantization_aware": True`` and the emulation's accuracy on ``test``, and saved.
    Returns the quantization-aware epochs done.
    """
    training = config["training"]
    test_images, test_labels = test
    for epoch in range(done, training["qat_epochs"]):
        started = time.perf_counter()
        losses = finetune(model, *train, epochs=1, lr=training["qat_lr"],
                          seed=training["seed"] * 1009 + epoch, progress=progress)
        history.append({
            "epoch": len(history) + 1,
            "quantization_aware": True,
            "loss": losses[0],
            "test_accuracy": evaluate(IntegerEmulation(model),
                                      batches(test_images, test_labels, 512)),
            "avg_timesteps": mean_active_steps(model),
            "seconds": time.perf_counter() - started,
        })
        done = epoch + 1
        save(done)
    return done
