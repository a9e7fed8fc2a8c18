"""Training configuration: a YAML file with ``data``, ``model`` and ``training`` sections.

Every key has a default (:data:`DEFAULTS`); a file sets the keys it changes. An unknown
key, a value of the wrong type or out of range, a missing or malformed file are refused
with one :class:`~stepvit.model.export.errors.StepvitError` line that names the key.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.reader import RESET_RULES
from stepvit.model.export.stem import POOL_KEYS, STAGE_KEYS, STEM_KEYS, check_stem, complete_stem

#: The data sets :func:`stepvit.model.data.load_dataset` knows.
DATASETS = ("digits", "cifar10", "cifar100", "fashion-mnist", "mnist")

#: The config packaged with stepvit that ``stepvit train`` uses by default.
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits.yaml"

DEFAULTS: dict[str, Any] = {
    "name": "digits",
    "data": {
        "dataset": "digits",
        "data_dir": "data",       # CIFAR folders / IDX files live here; digits ships with
                                  # scikit-learn, fashion-mnist also comes from Debian
        "augment": False,         # random crops (and flips) of the training batches
        "crop_padding": 4,        # crops are shifted by up to this many pixels
        "flip": True,             # horizontal flips (not for digits: a flipped 2 is no 2)
        "validation_fraction": 0.0,  # share of the training images held out for choices
                                     # (the final mask); the test split is only reported
    },
    "model": {
        "patch": 2,
        "dim": 32,
        "heads": 2,
        "depth": 2,
        "mlp_dim": 64,
        "t_max": 4,
        "leak_shift": 1,
        "reset": "hard",
        "attn_shift": 3,
        "neuron": "lif",          # "relu": the non-spiking twin (a float baseline of the
                                  # same shape; `stepvit train --non-spiking`), not exportable
        "stem": None,             # a convolutional stem (Spikformer's SPS) in place of the
                                  # linear patch embedding: {stages: [...], pool, rpe}
                                  # (model/export/stem.py); patch is not used then
    },
    "training": {
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.01,
        "score_lr": 0.05,         # the time-step scores learn at their own rate
        "weight_decay": 0.01,
        "seed": 0,
        "penalty": 0.1,           # lambda: weight of the expected active steps in the loss
        "penalty_warmup_epochs": 0,  # epochs trained with lambda = 0 before the penalty starts
        "score_init": 1.0,        # > 0: every step starts active
        "freeze_mask_epochs": 0,  # last epochs with the mask fixed: the weights settle on it
        "target_timesteps": 0.0,  # > 0: the penalty acts until the mask's mean active
                                  # steps are within this, then the mask freezes
        "label_smoothing": 0.0,
        "fixed_timesteps": False,  # the baseline: every step active, no penalty
        "qat_epochs": 0,          # > 0: then this many epochs through the integer emulation
                                  # (quantization-aware), after which the run's model is
                                  # the integer network its export computes
        "qat_lr": 1e-4,
        "threads": 1,             # CPU threads per process; 0: torch's default. The tensors
                                  # are small: on a shared CPU one thread is fastest
    },
}

# key -> (type, lowest allowed value or None); bool is checked before int (bool is an int).
_CHECKS: dict[str, tuple[type, float | None]] = {
    "name": (str, None),
    "data.dataset": (str, None),
    "data.data_dir": (str, None),
    "data.augment": (bool, None),
    "data.crop_padding": (int, 0),
    "data.flip": (bool, None),
    "data.validation_fraction": (float, 0),
    "model.patch": (int, 1),
    "model.dim": (int, 1),
    "model.heads": (int, 1),
    "model.depth": (int, 1),
    "model.mlp_dim": (int, 1),
    "model.t_max": (int, 1),
    "model.leak_shift": (int, 1),
    "model.reset": (str, None),
    "model.attn_shift": (int, 0),
    "model.neuron": (str, None),
    "training.epochs": (int, 1),
    "training.batch_size": (int, 1),
    "training.lr": (float, 0),
    "training.score_lr": (float, 0),
    "training.weight_decay": (float, 0),
    "training.seed": (int, 0),
    "training.penalty": (float, 0),
    "training.penalty_warmup_epochs": (int, 0),
    "training.score_init": (float, None),
    "training.freeze_mask_epochs": (int, 0),
    "training.target_timesteps": (float, 0),
    "training.label_smoothing": (float, 0),
    "training.fixed_timesteps": (bool, None),
    "training.qat_epochs": (int, 0),
    "training.qat_lr": (float, 0),
    "training.threads": (int, 0),
}


def _merge(defaults: dict[str, Any], given: dict[str, Any], prefix: str) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise StepvitError(f"unknown config key {path!r} (known here: {known})")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise StepvitError(f"config key {path!r} must be a mapping, got {value!r}")
            merged[key] = _merge(defaults[key], value, f"{path}.")
        else:
            merged[key] = value
    return merged


def _check_value(path: str, value: Any) -> Any:
    kind, lowest = _CHECKS[path]
    if kind is bool:
        valid = isinstance(value, bool)
    elif kind is float:
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if valid else value
    else:
        valid = isinstance(value, kind) and not isinstance(value, bool)
    if not valid:
        raise StepvitError(f"config key {path!r} must be a {kind.__name__}, got {value!r}")
    if lowest is not None and value < lowest:
        raise StepvitError(f"config key {path!r} must be >= {lowest}, got {value!r}")
    return value


#: ``model.neuron``: LIF layers, or ReLUs in their place (the non-spiking twin).
NEURONS = ("lif", "relu")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a complete, checked copy of ``config`` (defaults filled in).

    Raises
    ------
    StepvitError
        On an unknown key, a wrong type, or a value out of range; the message names the key.
    """
    if not isinstance(config, dict):
        raise StepvitError(f"a config must be a mapping of sections, got {type(config).__name__}")
    merged = _merge(DEFAULTS, config, "")
    for path in _CHECKS:
        section, _, key = path.rpartition(".")
        holder = merged[section] if section else merged
        holder[key] = _check_value(path, holder[key])
    if merged["data"]["validation_fraction"] >= 1:
        raise StepvitError("config key 'data.validation_fraction' must be below 1, got "
                           f"{merged['data']['validation_fraction']!r}")
    if merged["data"]["dataset"] not in DATASETS:
        raise StepvitError(
            f"config key 'data.dataset' must be one of {', '.join(DATASETS)}, "
            f"got {merged['data']['dataset']!r}")
    if merged["model"]["reset"] not in RESET_RULES:
        raise StepvitError(
            f"config key 'model.reset' must be 'hard' or 'soft', got {merged['model']['reset']!r}")
    if merged["model"]["neuron"] not in NEURONS:
        raise StepvitError(
            f"config key 'model.neuron' must be 'lif' or 'relu', got {merged['model']['neuron']!r}")
    if merged["model"]["neuron"] != "lif" and merged["training"]["qat_epochs"]:
        raise StepvitError(
            "config key 'training.qat_epochs' needs 'model.neuron: lif' (the non-spiking "
            "twin has no integer network)")
    if merged["model"]["stem"] is not None:
        merged["model"]["stem"] = _checked_stem(merged["model"]["stem"], merged["model"]["dim"])
    if merged["model"]["dim"] % merged["model"]["heads"]:
        raise StepvitError(
            f"config key 'model.heads' ({merged['model']['heads']}) must divide "
            f"'model.dim' ({merged['model']['dim']})")
    return merged


def _checked_stem(stem: Any, dim: int) -> dict[str, Any]:
    """Return the ``model.stem`` config complete and checked.

    Its geometry is checked later, against the data set's image size.
    """
    where = "model.stem"
    if not isinstance(stem, dict) or not set(stem) <= set(STEM_KEYS) or "stages" not in stem:
        raise StepvitError(f"config key {where!r} must be a mapping with 'stages' and "
                           f"optionally 'pool', 'rpe', got {stem!r}")
    stages = stem["stages"]
    if not isinstance(stages, list) or not stages:
        raise StepvitError(f"config key '{where}.stages' must be a non-empty list of stages")
    for index, stage in enumerate(stages):
        if (not isinstance(stage, dict) or "channels" not in stage
                or not set(stage) <= set(STAGE_KEYS)):
            raise StepvitError(
                f"config key '{where}.stages[{index}]' must be a mapping with 'channels' and "
                f"optionally {', '.join(repr(k) for k in STAGE_KEYS[1:])}, got {stage!r}")
        for key, value in stage.items():
            if key != "pool" and (not isinstance(value, int) or isinstance(value, bool)):
                raise StepvitError(f"config key '{where}.stages[{index}].{key}' must be an "
                                   f"int, got {value!r}")
    pool = stem.get("pool") or {}
    if not isinstance(pool, dict) or not set(pool) <= set(POOL_KEYS):
        raise StepvitError(f"config key '{where}.pool' must be a mapping of "
                           f"{', '.join(POOL_KEYS)}, got {pool!r}")
    try:
        completed = complete_stem(stem)
    except (TypeError, ValueError):
        raise StepvitError(f"config key {where!r} holds a value that is not a number: "
                           f"{stem!r}") from None
    # the geometry depends on the image size: checked here on a large image, at build time
    # on the data set's
    problem = check_stem({**completed, "rpe": stem.get("rpe", False)}, (1, 4096, 4096), where)
    if problem:
        raise StepvitError(f"config key {problem}")
    if completed["stages"][-1]["channels"] != dim:
        raise StepvitError(f"config key '{where}.stages' must end with 'model.dim' ({dim}) "
                           f"channels, got {completed['stages'][-1]['channels']}")
    return completed


def load_config(path: str | Path) -> dict[str, Any]:
    """Read, complete and check the YAML config at ``path``.

    Raises
    ------
    StepvitError
        If the file is missing, is not YAML, or holds a bad key or value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise StepvitError(f"cannot read config {path}: {error.strerror or error}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise StepvitError(f"config {path} is not valid YAML{line}") from None
    if loaded is None:
        raise StepvitError(f"config {path} is empty")
    return validate_config(loaded)


def add_override_arguments(parser: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """Add the options that override a config: ``--epochs``, ``--seed`` and ``--data-dir``."""
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    if seed:
        parser.add_argument("--seed", type=int, default=None, help="override training.seed")
    parser.add_argument("--data-dir", type=Path, default=None, help="override data.data_dir")


def load_config_with(path: str | Path, *, epochs: int | None = None,
                     data_dir: str | Path | None = None,
                     seed: int | None = None) -> dict[str, Any]:
    """Read the config at ``path`` with the command line's overrides.

    ``epochs``, ``data_dir`` and ``seed`` come from ``--epochs``, ``--data-dir``, ``--seed``.

    Raises
    ------
    StepvitError
        As :func:`load_config`, or when ``epochs`` is below 1 or ``seed`` below 0.
    """
    config = load_config(path)
    if epochs is not None:
        if epochs < 1:
            raise StepvitError(f"--epochs must be >= 1, got {epochs}")
        config["training"]["epochs"] = epochs
    if seed is not None:
        if seed < 0:
            raise StepvitError(f"--seed must be >= 0, got {seed}")
        config["training"]["seed"] = seed
    if data_dir is not None:
        config["data"]["data_dir"] = str(data_dir)
    return validate_config(config)
