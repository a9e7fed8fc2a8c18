"""Training of the masked-timestep spiking ViT, on one process or many (``torchrun``).

``train_run(config, out_dir)`` trains, writes ``checkpoint.pt`` after every epoch, and at
the end ``metrics.json`` and ``training.png``. A run resumes from its ``checkpoint.pt`` if
one is there (``resume="auto"``); ``resume="fresh"`` starts over; ``resume="require"``
refuses to start without one. A checkpoint is:
``{"config", "state_dict", "epoch", "optimizer", "scheduler", "class_names",
"image_shape", "history", "metrics", "qat_epochs_done"}``.

The mask's schedule: for ``penalty_warmup_epochs`` the network trains with ``lambda = 0``;
then the penalty pushes the scores down (SGD, see :func:`_optimizers`) while the task loss
holds up the useful steps; in the last ``freeze_mask_epochs`` the mask is fixed and the
weights settle on it. With ``target_timesteps`` set, the penalty acts only while the
mask's mean active steps exceed the target and the mask freezes once within it. At the
end the BatchNorm statistics are recomputed with the final weights and mask.

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

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stepvit.model.config import validate_config
from stepvit.model.data import augment, batches, image_shape, load_dataset
from stepvit.model.export.errors import StepvitError
from stepvit.model.finetune import IntegerEmulation, finetune
from stepvit.model.lif import LIFNeuron
from stepvit.model.metrics import measure, timestep_summary
from stepvit.model.network import SpikingViT
from stepvit.model.plots import plot_training
from stepvit.model.progress import progress_bar

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
PLOT_NAME = "training.png"
_CHECKPOINT_KEYS = ("config", "state_dict", "epoch", "optimizer", "class_names")
#: Momentum of the SGD that trains the time-step scores.
SCORE_MOMENTUM = 0.9


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
    model = SpikingViT(
        tuple(shape), model_config["patch"], model_config["dim"], model_config["heads"],
        model_config["depth"], model_config["mlp_dim"], num_classes, model_config["t_max"],
        leak_shift=model_config["leak_shift"], reset=model_config["reset"],
        attn_shift=model_config["attn_shift"], score_init=config["training"]["score_init"])
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


@torch.no_grad()
def recalibrate_batchnorm(model: SpikingViT, images: torch.Tensor, batch_size: int,
                          device: torch.device) -> None:
    """Recompute every BatchNorm's running statistics as the plain mean over ``images``.

    The running averages of training lag behind: they mix batches seen under earlier
    weights and earlier masks. One pass in training mode, with the final weights and
    mask, gives the statistics that inference (and the quantizer's BN folding) should use.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm1d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches of this pass
    was_training = model.training
    model.train()
    for batch_images, _ in batches(images, torch.zeros(len(images)), batch_size):
        model(batch_images.to(device))
    model.train(was_training)
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
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for images, labels in loader:
        logits = model(images.to(device), masks=masks)
        correct += int((logits.argmax(dim=1).cpu() == labels.cpu()).sum())
        total += len(labels)
    model.train(was_training)
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
    if resume not in ("auto", "require", "fresh"):
        raise ValueError(f"resume must be 'auto', 'require' or 'fresh', got {resume!r}")
    config = validate_config(config)
    training = config["training"]
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    checkpoint = None
    if resume == "require" and not checkpoint_path.is_file():
        raise StepvitError(f"--resume: no checkpoint at {checkpoint_path}")
    if resume != "fresh" and checkpoint_path.is_file():
        checkpoint = read_checkpoint(checkpoint_path)
        if not _same_run(validate_config(checkpoint["config"]), config):
            raise StepvitError(
                f"{checkpoint_path} was trained with another config: "
                "use --fresh to start over or another --out")
    context = _start_distributed(training["threads"])
    torch.manual_seed(training["seed"])

    data = config["data"]
    train_images, train_labels, class_names = load_dataset(data["dataset"], data["data_dir"],
                                                           "train")
    test_images, test_labels, _ = load_dataset(data["dataset"], data["data_dir"], "test")
    shape = tuple(train_images.shape[1:])
    model = build_model(config, shape, len(class_names))
    fixed = training["fixed_timesteps"]
    if fixed:
        fix_timesteps(model)
    model.to(context.device)
    optimizers, schedulers = _optimizers(model, config)
    epochs = training["epochs"]
    start_epoch = qat_done = 0
    history: list[dict[str, float]] = []

    if checkpoint is not None:
        model.load_state_dict(_model_from_checkpoint(checkpoint, checkpoint_path).state_dict())
        try:
            for name, optimizer in optimizers.items():
                optimizer.load_state_dict(checkpoint["optimizer"][name])
                schedulers[name].load_state_dict(checkpoint["scheduler"][name])
        except (ValueError, KeyError, RuntimeError, TypeError) as error:
            raise StepvitError(f"checkpoint {checkpoint_path}: bad optimizer state "
                               f"({str(error)[:120]})") from None
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint.get("history", []))
        qat_done = int(checkpoint.get("qat_epochs_done", 0))
        if qat_done and start_epoch < epochs:
            raise StepvitError(
                f"{checkpoint_path} has {qat_done} quantization-aware epoch(s) after epoch "
                f"{start_epoch}: it cannot train float epochs up to {epochs}; use --fresh")

    network = model
    if context.world_size > 1:
        network = nn.parallel.DistributedDataParallel(
            model, device_ids=[context.device.index] if context.device.type == "cuda" else None)
    loss_function = nn.CrossEntropyLoss(label_smoothing=training["label_smoothing"])
    target = training["target_timesteps"]
    rank_batch = max(1, training["batch_size"] // context.world_size)
    batches_per_epoch = -(-(len(train_labels) // context.world_size) // rank_batch)
    bar = progress_bar(total=(epochs - start_epoch) * batches_per_epoch,
                       desc=f"train {config['name']}", enabled=progress and context.is_main,
                       unit="batch")
    for epoch in range(start_epoch, epochs):
        epoch_started = time.perf_counter()
        model.train()
        shard = rank_shard(len(train_labels), seed=training["seed"], epoch=epoch,
                           rank=context.rank, world_size=context.world_size)
        augment_generator = torch.Generator().manual_seed(
            (training["seed"] * 100003 + epoch) * 64 + context.rank)
        loss_sum = correct = seen = 0.0
        for images, labels in batches(train_images, train_labels, rank_batch, shard):
            steps_now = mean_active_steps(model)
            within_target = target == 0 or steps_now <= target
            # The mask freezes in the last epochs, once it meets the target (if one is set).
            mask_frozen = epoch >= epochs - training["freeze_mask_epochs"] and within_target
            penalize = not (fixed or mask_frozen or epoch < training["penalty_warmup_epochs"]
                            or (target and within_target))
            if data["augment"]:
                images = augment(images, augment_generator, padding=data["crop_padding"],
                                 flip=data["flip"])
            images, labels = images.to(context.device), labels.to(context.device)
            logits = network(images)
            loss = loss_function(logits, labels)
            if penalize:
                loss = loss + training["penalty"] * model.penalty()
            for optimizer in optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if mask_frozen:
                model.timestep_scores.grad = None  # optimizers skip a parameter without grad
            for optimizer in optimizers.values():
                optimizer.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += float((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
            # drawn by update(), at most every mininterval (a refresh here would draw each batch)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}",
                            acc=f"{correct / seen:.3f}",
                            steps=f"{steps_now:.2f}", refresh=False)
            bar.update(1)
        for scheduler in schedulers.values():
            scheduler.step()
        if context.is_main:
            history.append({
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "test_accuracy": evaluate(model, batches(test_images, test_labels, 512)),
                "avg_timesteps": timestep_summary(model.timestep_mask(),
                                                  model.module_names())["avg_timesteps"],
                "seconds": time.perf_counter() - epoch_started,
            })
            out_dir.mkdir(parents=True, exist_ok=True)
            _save_atomically(_checkpoint(config, model, optimizers, schedulers, epoch + 1,
                                         class_names, shape, history, None), checkpoint_path)
        if context.world_size > 1:
            dist.barrier()
    bar.close()
    if context.world_size > 1:
        dist.destroy_process_group()  # every rank is past the last barrier: rank 0 goes on alone
    if not context.is_main:
        return None

    calibrated = checkpoint is not None and start_epoch == epochs \
        and (checkpoint.get("metrics") is not None or qat_done > 0)
    if not calibrated:  # a finished or quantization-aware checkpoint has its statistics
        recalibrate_batchnorm(model, train_images, 512, context.device)
    qat_done = _quantization_aware_epochs(
        model, config, (train_images, train_labels), (test_images, test_labels),
        done=qat_done, history=history,
        save=lambda done: _save_atomically(_checkpoint(
            config, model, optimizers, schedulers, epochs, class_names, shape, history, None,
            done), checkpoint_path), progress=progress)
    metrics = measure(model, test_images, test_labels, batch_size=512, progress=progress)
    if qat_done:
        # the last epoch is quantization-aware and measured its emulation on the test split
        metrics["float_forward_accuracy"] = metrics["test_accuracy"]
        metrics["test_accuracy"] = history[-1]["test_accuracy"]
    metrics.update({
        "dataset": data["dataset"],
        "split": "test",
        "fixed_timesteps": fixed,
        "epochs": epochs,
        "world_size": context.world_size,
        "quantization_aware_epochs": qat_done,
        "train_seconds": sum(entry["seconds"] for entry in history),
        "class_names": class_names,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_atomically(_checkpoint(config, model, optimizers, schedulers, epochs, class_names,
                                 shape, history, metrics, qat_done), checkpoint_path)
    (out_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    plot_training(history, metrics, out_dir / PLOT_NAME)
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
            "avg_timesteps": timestep_summary(model.timestep_mask(),
                                              model.module_names())["avg_timesteps"],
            "seconds": time.perf_counter() - started,
        })
        done = epoch + 1
        save(done)
    return done


def _checkpoint(config: dict[str, Any], model: SpikingViT,
                optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, Any],
                epoch: int, class_names: list[str], shape: tuple[int, ...],
                history: list[dict[str, float]], metrics: dict[str, Any] | None,
                qat_epochs_done: int = 0) -> dict[str, Any]:
    return {
        "config": config,
        "state_dict": {name: value.detach().cpu() for name, value in model.state_dict().items()},
        "epoch": epoch,
        "optimizer": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "scheduler": {name: scheduler.state_dict() for name, scheduler in schedulers.items()},
        "class_names": list(class_names),
        "image_shape": list(shape),
        "history": history,
        "metrics": metrics,
        "qat_epochs_done": qat_epochs_done,
    }
