"""``stepvit sweep``: learned time-step masks against fixed-T baselines on one config.

Every arm is a run folder of its own under ``OUT`` (``learned-p<penalty>``,
``learned-t<target>``, ``fixed-T<T>``), trained with :func:`stepvit.model.train.train_run`
(resumed when its checkpoint is there, skipped when its ``metrics.json`` is), then
quantized into ``<run>/export`` (reused when newer than the checkpoint) and measured with
the integer golden model on the test split. The arms share the config's schedule; they
differ only in what they vary:

- ``--penalties P1,P2``: learned masks, penalty ``P`` and no step target (the penalty
  alone decides how many steps are kept);
- ``--targets S1,S2``: learned masks with ``target_timesteps = S`` (the config's penalty
  until the mean active steps reach ``S``, then the mask freezes);
- ``--fixed T1,T2``: every step active in every module, ``t_max = T``.

``OUT/sweep.json`` holds one row per arm; ``OUT/sweep.png`` plots integer accuracy against
mean active steps and against accumulates per image, learned and fixed side by side.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.options import add_progress_argument, output_folder

SWEEP_JSON = "sweep.json"
SWEEP_PLOT = "sweep.png"


def _numbers(text: str | None, option: str, kind: type) -> list:
    if not text:
        return []
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise StepvitError(f"{option} must be a comma-separated list of {kind.__name__}s, "
                           f"got {text!r}") from None
    if any(value < 0 for value in values):
        raise StepvitError(f"{option} must not hold a negative value, got {text!r}")
    return values


def _label(value: float) -> str:
    return f"{value:g}"


def sweep_arms(config: dict[str, Any], *, penalties: list[float], targets: list[float],
               fixed: list[int]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return ``(folder name, kind, config)`` of every arm of a sweep over ``config``.

    Raises
    ------
    StepvitError
        If no arm is asked for, or a fixed T is 0.
    """
    from stepvit.model.config import validate_config

    if not (penalties or targets or fixed):
        raise StepvitError("give at least one of --penalties, --targets, --fixed")
    if any(steps < 1 for steps in fixed):
        raise StepvitError(f"--fixed: every T must be >= 1, got {fixed}")
    arms = []
    for penalty in penalties:
        arm = copy.deepcopy(config)
        arm["training"].update(penalty=penalty, target_timesteps=0.0, fixed_timesteps=False)
        arms.append((f"learned-p{_label(penalty)}", "learned", arm))
    for target in targets:
        arm = copy.deepcopy(config)
        arm["training"].update(target_timesteps=target, fixed_timesteps=False)
        arms.append((f"learned-t{_label(target)}", "learned", arm))
    for steps in fixed:
        arm = copy.deepcopy(config)
        arm["model"]["t_max"] = steps
        arm["training"].update(fixed_timesteps=True, target_timesteps=0.0)
        arms.append((f"fixed-T{steps}", "fixed", arm))
    for name, _, arm in arms:
        arm["name"] = f"{config['name']}-{name}"
    return [(name, kind, validate_config(arm)) for name, kind, arm in arms]


def _train(config: dict[str, Any], run_dir: Path, progress: bool) -> dict[str, Any]:
    from stepvit.model.train import CHECKPOINT_NAME, METRICS_NAME, read_checkpoint, train_run

    metrics_path = run_dir / METRICS_NAME
    if metrics_path.is_file() and (run_dir / CHECKPOINT_NAME).is_file():
        saved = read_checkpoint(run_dir / CHECKPOINT_NAME)
        if saved["config"] == config and saved.get("metrics") is not None:
            return json.loads(metrics_path.read_text())
    return train_run(config, run_dir, resume="auto", progress=progress)


def _measure_export(run_dir: Path, images: Any, labels: Any, *, finetune_epochs: int,
                    progress: bool) -> dict[str, Any]:
    """Export ``run_dir`` (unless its export is newer than the checkpoint); return its row."""
    import torch

    from stepvit.model.data import load_dataset
    from stepvit.model.export import load_export
    from stepvit.model.export.writer import write_export
    from stepvit.model.export_cli import float_predictions, integer_outputs
    from stepvit.model.finetune import finetune
    from stepvit.model.golden import GoldenModel
    from stepvit.model.quantize import quantize
    from stepvit.model.train import CHECKPOINT_NAME, load_run, reference_model

    model, config, class_names = load_run(run_dir)
    # a quantization-aware run's model is its integer emulation
    floating = float_predictions(reference_model(run_dir, model), images)
    export_dir = run_dir / "export"
    manifest = export_dir / "manifest.yaml"
    stale = not manifest.is_file() or \
        manifest.stat().st_mtime < (run_dir / CHECKPOINT_NAME).stat().st_mtime
    if stale:
        if finetune_epochs:
            data = config["data"]
            train_images, train_labels, _ = load_dataset(data["dataset"], data["data_dir"],
                                                         "train")
            finetune(model, train_images, train_labels, epochs=finetune_epochs,
                     seed=config["training"]["seed"], progress=progress)
        write_export(export_dir, name=config["name"],
                     **quantize(model, class_names).writer_arguments())
    outputs = integer_outputs(GoldenModel(load_export(export_dir)), images, progress=progress)
    integer = outputs["predicted"]
    return {
        "float_accuracy": round(float((floating == labels).float().mean()), 6),
        "integer_accuracy": round(float((integer == labels).float().mean()), 6),
        "agreement": round(float((floating == integer).float().mean()), 6),
        "avg_timesteps": round(float(torch.as_tensor(outputs["mask"]).sum(dim=1)
                                     .double().mean()), 4),
        "ac_ops": round(outputs["work"]["ac_ops"], 1),
        "mac_ops": round(outputs["work"]["mac_ops"], 1),
    }


def run_sweep(config: dict[str, Any], out_dir: Path, *, penalties: list[float],
              targets: list[float], fixed: list[int], images: int | None = None,
              finetune_epochs: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Train, export and measure every arm; write ``sweep.json`` and ``sweep.png``."""
    from stepvit.model.data import load_dataset

    arms = sweep_arms(config, penalties=penalties, targets=targets, fixed=fixed)
    data = config["data"]
    test_images, test_labels, _ = load_dataset(data["dataset"], data["data_dir"], "test")
    test_images, test_labels = test_images[:images], test_labels[:images]
    rows = []
    for name, kind, arm in arms:
        started = time.perf_counter()
        metrics = _train(arm, out_dir / name, progress)
        row = {"arm": name, "kind": kind, "t_max": arm["model"]["t_max"],
               "penalty": None if kind == "fixed" else arm["training"]["penalty"],
               "target_timesteps": arm["training"]["target_timesteps"] or None,
               "train_seconds": round(metrics.get("train_seconds", 0.0), 1),
               **_measure_export(out_dir / name, test_images, test_labels,
                                 finetune_epochs=finetune_epochs, progress=progress),
               "images": len(test_labels),
               "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        write_sweep(rows, out_dir, config["name"])
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the sweep's rows as a fixed-width text table."""
    lines = [f"{'arm':<18}{'kind':<9}{'steps':>7}{'AC/img':>12}{'float':>9}{'integer':>9}"
             f"{'agree':>9}{'train_s':>9}"]
    for row in rows:
        lines.append(f"{row['arm']:<18}{row['kind']:<9}{row['avg_timesteps']:>7.2f}"
                     f"{row['ac_ops']:>12,.0f}{row['float_accuracy']:>9.4f}"
                     f"{row['integer_accuracy']:>9.4f}{row['agreement']:>9.4f}"
                     f"{row['train_seconds']:>9.0f}")
    return "\n".join(lines)


def write_sweep(rows: list[dict[str, Any]], out_dir: Path, title: str) -> None:
    """Write ``sweep.json`` and ``sweep.png`` (integer accuracy against steps and work)."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SWEEP_JSON).write_text(json.dumps({"config": title, "rows": rows}, indent=2)
                                      + "\n")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, marker in (("learned", "o"), ("fixed", "s")):
        chosen = sorted((row for row in rows if row["kind"] == kind),
                        key=lambda row: row["avg_timesteps"])
        if not chosen:
            continue
        for axis, key in zip(axes, ("avg_timesteps", "ac_ops")):
            axis.plot([row[key] for row in chosen],
                      [100 * row["integer_accuracy"] for row in chosen],
                      marker=marker, label=f"{kind} masks" if kind == "learned" else "fixed T")
            for row in chosen:
                axis.annotate(row["arm"], (row[key], 100 * row["integer_accuracy"]),
                              fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set_xlabel("mean active steps per module")
    axes[1].set_xlabel("accumulates per image")
    for axis in axes:
        axis.set_ylabel("integer test accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{title}: learned time-step masks against fixed T")
    figure.tight_layout()
    figure.savefig(out_dir / SWEEP_PLOT, dpi=120)
    plt.close(figure)


def sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``stepvit sweep``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (default: the packaged model/configs/digits.yaml)")
    parser.add_argument("--penalties", default=None, metavar="P1,P2",
                        help="learned-mask arms at these penalties (no step target)")
    parser.add_argument("--targets", default=None, metavar="S1,S2",
                        help="learned-mask arms with these target mean steps")
    parser.add_argument("--fixed", default=None, metavar="T1,T2",
                        help="fixed-T baselines (every step active) at these T")
    parser.add_argument("--out", type=Path, default=None,
                        help="sweep folder, one run folder per arm (default: runs/sweep-NAME)")
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--data-dir", type=Path, default=None, help="override data.data_dir")
    parser.add_argument("--images", type=int, default=None,
                        help="test images to measure (default: the whole test split)")
    parser.add_argument("--finetune-epochs", type=int, default=0,
                        help="quantization-aware fine-tuning epochs before each export")
    add_progress_argument(parser)


def sweep(args: argparse.Namespace) -> int:
    """Train, export and measure learned and fixed arms; print and write the table."""
    from stepvit.model.config import DEFAULT_CONFIG, load_config_with

    config = load_config_with(args.config or DEFAULT_CONFIG, epochs=args.epochs,
                              data_dir=args.data_dir)
    if args.images is not None and args.images < 1:
        raise StepvitError(f"--images must be >= 1, got {args.images}")
    if args.finetune_epochs < 0:
        raise StepvitError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    out_dir = output_folder(args.out or Path("runs") / f"sweep-{config['name']}", "--out")
    rows = run_sweep(config, out_dir,
                     penalties=_numbers(args.penalties, "--penalties", float),
                     targets=_numbers(args.targets, "--targets", float),
                     fixed=_numbers(args.fixed, "--fixed", int),
                     images=args.images, finetune_epochs=args.finetune_epochs,
                     progress=not args.no_progress)
    print(format_table(rows))
    print(f"stepvit sweep: {out_dir / SWEEP_JSON} and {out_dir / SWEEP_PLOT} written")
    return 0
