"""The ``stepvit`` subcommands that the model part owns.

Only argparse and the standard library at the top: torch is imported inside each command,
so ``stepvit --help`` works where torch is absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepvit.model.config import add_override_arguments
from stepvit.model.export.options import (
    add_progress_argument,
    output_folder,
)

# `stepvit export` and `stepvit eval` live with the quantizer; the CLI finds them here.
from stepvit.model.export_cli import (  # noqa: F401
    eval,
    eval_arguments,
    export,
    export_arguments,
    random_export,
    random_export_arguments,
)

# --- train -------------------------------------------------------------------------------


def train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stepvit train``."""
    parser.epilog = ("A run resumes from OUT/checkpoint.pt when that file exists. Several "
                     "processes or GPUs: torchrun --nproc_per_node N -m stepvit.host.cli "
                     "train ... (DistributedDataParallel; the config's batch_size is the "
                     "global batch).")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (default: the packaged model/configs/digits.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/NAME, or runs/NAME-fixed with "
                             "--fixed-timesteps, runs/NAME-twin with --non-spiking)")
    parser.add_argument("--fixed-timesteps", action="store_true",
                        help="the baseline: every time step active in every module, no penalty")
    parser.add_argument("--non-spiking", action="store_true",
                        help="the non-spiking twin: every LIF layer a ReLU, one time step (a "
                             "float baseline of the same shape and schedule; not exportable)")
    add_override_arguments(parser)
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="insist on resuming from OUT/checkpoint.pt (without this flag a "
                            "run resumes anyway when that file exists)")
    start.add_argument("--fresh", action="store_true",
                       help="ignore OUT/checkpoint.pt and train from scratch")
    add_progress_argument(parser)


def train(args: argparse.Namespace) -> int:
    """Train a network as the config says; write checkpoint, metrics and plot."""
    from stepvit.model.config import DEFAULT_CONFIG, load_config_with, validate_config
    from stepvit.model.train import train_run

    config = load_config_with(args.config or DEFAULT_CONFIG, epochs=args.epochs,
                              data_dir=args.data_dir, seed=args.seed)
    if args.fixed_timesteps:
        config["training"]["fixed_timesteps"] = True
    if args.non_spiking:
        config["model"].update(neuron="relu", t_max=1)
        config["training"].update(fixed_timesteps=True, qat_epochs=0)
    config = validate_config(config)
    suffix = ("-twin" if config["model"]["neuron"] == "relu"
              else "-fixed" if config["training"]["fixed_timesteps"] else "")
    out_dir = output_folder(args.out or Path("runs") / f"{config['name']}{suffix}", "--out")
    resume = "require" if args.resume else "fresh" if args.fresh else "auto"
    metrics = train_run(config, out_dir, resume=resume, progress=not args.no_progress)
    if metrics is not None:
        summary = {key: metrics[key] for key in (
            "test_accuracy", "float_forward_accuracy", "quantization_aware_epochs",
            "avg_timesteps", "timesteps_per_block", "ac_ops", "energy_uj", "train_seconds")
            if key in metrics}
        print(json.dumps({"run": str(out_dir), **summary}))
    return 0
