"""``stepvit sweep``: learned time-step masks against fixed-T baselines on one config.

Every arm is trained at every seed of ``--seeds`` (default: the config's), each in a run
folder of its own, ``OUT/<arm>/seed<S>`` (arms ``learned-p<penalty>``, ``learned-t<target>``,
``fixed-T<T>``), which holds the run's ``config.yaml``. A run is trained with
:func:`stepvit.model.train.train_run` (resumed when its checkpoint is there, skipped when its
``metrics.json`` is), quantized into ``<run>/export`` (reused when newer than the
checkpoint) and measured with the integer golden model on the test split. The arms share
the config's schedule; they differ only in what they vary:

- ``--penalties P1,P2``: learned masks, penalty ``P`` and no step target (the penalty
  alone decides how many steps are kept);
- ``--targets S1,S2``: learned masks with ``target_timesteps = S`` (the config's penalty
  until the mean active steps reach ``S``, then the mask freezes);
- ``--fixed T1,T2``: every step active in every module, ``t_max = T``.

The runs are independent: ``--jobs N`` trains N at a time in processes of their own, and
``--print-commands`` only writes the ``stepvit train`` and ``stepvit export`` command lines
of the runs not yet finished (one line a run, to ``OUT/commands.txt`` and stdout), for a
cluster's scheduler to run (a Slurm job array reads line ``$SLURM_ARRAY_TASK_ID``); a later
``stepvit sweep --gather`` over the same folder measures whatever finished.

``OUT/sweep.json`` holds one row per arm and seed, the spread of each arm over its seeds
and the paired per-seed comparison of each learned arm with each fixed arm
(:mod:`stepvit.model.sweep_stats`); ``OUT/sweep.png`` plots integer accuracy (mean, error
bars one standard deviation) against mean active steps and accumulates per image.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stepvit.model.config import add_override_arguments
from stepvit.model.export.budgets import parse_ranges
from stepvit.model.export.errors import StepvitError
from stepvit.model.export.options import add_progress_argument, output_folder
from stepvit.model.sweep_stats import format_summary, paired_comparisons, summarize_arms

SWEEP_JSON = "sweep.json"
SWEEP_PLOT = "sweep.png"
COMMANDS_NAME = "commands.txt"
RUN_CONFIG_NAME = "config.yaml"
#: What ``--seeds`` accepts.
SEEDS_GRAMMAR = "a seed S, a list S1,S2 or a range A-B"


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


def parse_seeds(text: str | None, default: int) -> list[int]:
    """Return the seeds of ``--seeds`` (the budgets' grammar; ``None``: ``[default]``)."""
    if text is None:
        return [default]
    return parse_ranges(str(text).strip(), option="--seeds", grammar=SEEDS_GRAMMAR,
                        check=lambda seed: seed)


@dataclass(frozen=True)
class SweepRun:
    """One training of a sweep: an arm at a seed, in its own folder."""

    arm: str
    kind: str
    seed: int
    config: dict[str, Any]
    folder: Path

    def finished(self) -> bool:
        """Whether the run's training finished with this run's config."""
        from stepvit.model.train import CHECKPOINT_NAME, METRICS_NAME, read_checkpoint

        if not (self.folder / METRICS_NAME).is_file():
            return False
        saved = read_checkpoint(self.folder / CHECKPOINT_NAME)
        return saved["config"] == self.config and saved.get("metrics") is not None

    def commands(self, finetune_epochs: int) -> list[list[str]]:
        """Return the ``stepvit train`` and ``stepvit export`` commands of this run."""
        export = ["stepvit", "export", str(self.folder), "--out", str(self.folder / "export"),
                  "--no-progress"]
        if finetune_epochs:
            export += ["--finetune-epochs", str(finetune_epochs)]
        return [["stepvit", "train", "--config", str(self.folder / RUN_CONFIG_NAME),
                 "--out", str(self.folder), "--no-progress"], export]


def sweep_runs(config: dict[str, Any], out_dir: Path, *, penalties: list[float],
               targets: list[float], fixed: list[int], seeds: list[int]) -> list[SweepRun]:
    """Return every run of the sweep (arms x seeds), each with its config written."""
    from stepvit.model.config import validate_config

    runs = []
    for name, kind, arm in sweep_arms(config, penalties=penalties, targets=targets,
                                      fixed=fixed):
        for seed in seeds:
            seeded = copy.deepcopy(arm)
            seeded["training"]["seed"] = seed
            folder = out_dir / name / f"seed{seed}"
            runs.append(SweepRun(name, kind, seed, validate_config(seeded), folder))
    for run in runs:
        run.folder.mkdir(parents=True, exist_ok=True)
        (run.folder / RUN_CONFIG_NAME).write_text(yaml.safe_dump(run.config, sort_keys=False))
    return runs


def command_lines(runs: list[SweepRun], finetune_epochs: int) -> list[str]:
    """Return one shell line per run not yet finished: its training, then its export."""
    return [" && ".join(shlex.join(command) for command in run.commands(finetune_epochs))
            for run in runs if not run.finished()]


def train_in_parallel(runs: list[SweepRun], jobs: int, finetune_epochs: int,
                      log: Any = sys.stderr) -> None:
    """Train and export the unfinished ``runs``, ``jobs`` processes at a time.

    Each run is its own ``stepvit train`` and ``stepvit export`` process (as
    :func:`command_lines` prints them), its output in ``<run>/train.log``.

    Raises
    ------
    StepvitError
        Naming the runs whose process failed, after every run has had its turn.
    """
    pending = [run for run in runs if not run.finished()]

    def execute(run: SweepRun) -> tuple[SweepRun, int]:
        with (run.folder / "train.log").open("w") as output:
            for command in run.commands(finetune_epochs):
                line = [sys.executable, "-m", "stepvit.host.cli", *command[1:]]
                code = subprocess.run(line, stdout=output, stderr=subprocess.STDOUT).returncode
                if code:
                    return run, code
        return run, 0

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done, (run, code) in enumerate(pool.map(execute, pending), start=1):
            print(f"stepvit sweep: {done}/{len(pending)} {run.arm} seed {run.seed} "
                  f"{'done' if code == 0 else f'failed ({code})'}", file=log, flush=True)
            if code:
                failed.append(f"{run.folder} (see its train.log)")
    if failed:
        raise StepvitError(f"{len(failed)} run(s) failed: {', '.join(failed)}")


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
              targets: list[float], fixed: list[int], seeds: list[int] | None = None,
              images: int | None = None, finetune_epochs: int = 0, jobs: int = 1,
              gather: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train, export and measure every arm at every seed; write ``sweep.json`` and the plot.

    With ``jobs`` above 1 the runs train in that many processes at once; with ``gather``
    none trains, and the runs not finished are listed as ``missing``.

    Returns
    -------
    dict
        What ``sweep.json`` holds: ``rows`` (one per finished run), ``arms`` (spreads),
        ``paired`` (learned against fixed, per seed) and ``missing`` (run folders).
    """
    from stepvit.model.data import load_dataset
    from stepvit.model.train import train_run

    runs = sweep_runs(config, out_dir, penalties=penalties, targets=targets, fixed=fixed,
                      seeds=seeds if seeds is not None else [config["training"]["seed"]])
    if jobs > 1 and not gather:
        train_in_parallel(runs, jobs, finetune_epochs)
    data = config["data"]
    test_images, test_labels, _ = load_dataset(data["dataset"], data["data_dir"], "test")
    test_images, test_labels = test_images[:images], test_labels[:images]
    rows, missing = [], []
    for run in runs:
        started = time.perf_counter()
        if not run.finished():  # one checkpoint read a run
            if gather:
                missing.append(str(run.folder))
                continue
            train_run(run.config, run.folder, resume="auto", progress=progress)
        metrics = json.loads((run.folder / "metrics.json").read_text())
        rows.append({"arm": run.arm, "kind": run.kind, "seed": run.seed,
                     "t_max": run.config["model"]["t_max"],
                     "penalty": None if run.kind == "fixed" else run.config["training"]["penalty"],
                     "target_timesteps": run.config["training"]["target_timesteps"] or None,
                     "train_seconds": round(metrics.get("train_seconds", 0.0), 1),
                     **_measure_export(run.folder, test_images, test_labels,
                                       finetune_epochs=finetune_epochs, progress=progress),
                     "images": len(test_labels),
                     "seconds": round(time.perf_counter() - started, 1)})
        write_sweep(rows, out_dir, config["name"], missing)  # a stopped sweep keeps its rows
    return write_sweep(rows, out_dir, config["name"], missing)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Return the sweep's rows (one per arm and seed) as a fixed-width text table."""
    lines = [f"{'arm':<18}{'seed':>5} {'kind':<9}{'steps':>7}{'AC/img':>12}{'float':>9}"
             f"{'integer':>9}{'agree':>9}{'train_s':>9}"]
    for row in rows:
        lines.append(f"{row['arm']:<18}{row['seed']:>5} {row['kind']:<9}"
                     f"{row['avg_timesteps']:>7.2f}"
                     f"{row['ac_ops']:>12,.0f}{row['float_accuracy']:>9.4f}"
                     f"{row['integer_accuracy']:>9.4f}{row['agreement']:>9.4f}"
                     f"{row['train_seconds']:>9.0f}")
    return "\n".join(lines)


def write_sweep(rows: list[dict[str, Any]], out_dir: Path, title: str,
                missing: list[str] | None = None) -> dict[str, Any]:
    """Write ``sweep.json`` (rows, spreads, paired comparisons) and ``sweep.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"config": title, "rows": rows, "arms": summarize_arms(rows),
              "paired": paired_comparisons(rows), "missing": list(missing or [])}
    (out_dir / SWEEP_JSON).write_text(json.dumps(result, indent=2) + "\n")
    plot_sweep(result["arms"], out_dir / SWEEP_PLOT, title)
    return result


def plot_sweep(arms: list[dict[str, Any]], path: Path, title: str) -> None:
    """Plot each arm's integer accuracy against its steps and work, ± one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, marker in (("learned", "o"), ("fixed", "s")):
        chosen = sorted((arm for arm in arms if arm["kind"] == kind),
                        key=lambda arm: arm["avg_timesteps"]["mean"])
        if not chosen:
            continue
        accuracy = chosen_spread(chosen, "integer_accuracy", 100)
        for axis, key in zip(axes, ("avg_timesteps", "ac_ops")):
            where = chosen_spread(chosen, key, 1)
            axis.errorbar(where[0], accuracy[0], xerr=where[1], yerr=accuracy[1],
                          marker=marker, capsize=3,
                          label="learned masks" if kind == "learned" else "fixed T")
            for arm, x, y in zip(chosen, where[0], accuracy[0]):
                axis.annotate(f"{arm['arm']} (n={arm['integer_accuracy']['n']})", (x, y),
                              fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set_xlabel("mean active steps per module")
    axes[1].set_xlabel("accumulates per image")
    for axis in axes:
        axis.set_ylabel("integer accuracy (%), mean ± std")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"{title}: learned time-step masks against fixed T")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def chosen_spread(arms: list[dict[str, Any]], key: str,
                  scale: float) -> tuple[list[float], list[float]]:
    """Return the means and standard deviations (0 for one seed) of ``key``, scaled."""
    return ([scale * arm[key]["mean"] for arm in arms],
            [scale * (arm[key]["std"] or 0.0) for arm in arms])


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
    parser.add_argument("--seeds", default=None, metavar="S",
                        help=f"train every arm at these seeds: {SEEDS_GRAMMAR} "
                             "(default: the config's seed)")
    parser.add_argument("--out", type=Path, default=None,
                        help="sweep folder, OUT/ARM/seedS per run (default: runs/sweep-NAME)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, each in its own process (default 1)")
    work = parser.add_mutually_exclusive_group()
    work.add_argument("--print-commands", action="store_true",
                      help="train nothing: write the train/export command line of every "
                           "unfinished run (one a line) to OUT/commands.txt and stdout")
    work.add_argument("--gather", action="store_true",
                      help="train nothing: measure the runs that finished, list the others")
    add_override_arguments(parser, seed=False)
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
    if args.jobs < 1:
        raise StepvitError(f"--jobs must be >= 1, got {args.jobs}")
    out_dir = output_folder(args.out or Path("runs") / f"sweep-{config['name']}", "--out")
    arms = {"penalties": _numbers(args.penalties, "--penalties", float),
            "targets": _numbers(args.targets, "--targets", float),
            "fixed": _numbers(args.fixed, "--fixed", int),
            "seeds": parse_seeds(args.seeds, config["training"]["seed"])}
    if args.print_commands:
        lines = command_lines(sweep_runs(config, out_dir, **arms), args.finetune_epochs)
        (out_dir / COMMANDS_NAME).write_text("".join(line + "\n" for line in lines))
        print("\n".join(lines))
        print(f"stepvit sweep: {len(lines)} command line(s) in {out_dir / COMMANDS_NAME}; "
              f"then: stepvit sweep ... --out {out_dir} --gather", file=sys.stderr)
        return 0
    result = run_sweep(config, out_dir, **arms, images=args.images,
                       finetune_epochs=args.finetune_epochs, jobs=args.jobs,
                       gather=args.gather, progress=not args.no_progress)
    print(format_table(result["rows"]))
    print()
    print(format_summary(result["arms"], result["paired"]))
    if result["missing"]:
        print(f"stepvit sweep: {len(result['missing'])} run(s) not finished: "
              + ", ".join(result["missing"]), file=sys.stderr)
    print(f"stepvit sweep: {out_dir / SWEEP_JSON} and {out_dir / SWEEP_PLOT} written")
    return 0
