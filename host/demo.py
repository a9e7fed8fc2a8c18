"""``stepvit demo``: the whole chain on digits, no board needed.

train (reused when the run has its metrics) → export (reused when newer than the
checkpoint) → Verilog → the Verilog against the golden model, bit for bit, on a few test
images → the budget benchmark on the simulation → the Yosys resource report. Each step
is the ``stepvit`` command of the part that owns it, called through
:func:`stepvit.host.cli.main`, so the demo is exactly what a user can type.
``--bench-only`` (``make bench``) reuses or makes the export and runs the benchmark alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from stepvit.model.export.options import (
    add_build_argument,
    add_progress_argument,
    output_folder,
)
from stepvit.rtl.boards import DEFAULT_BOARD
from stepvit.rtl.build_folder import DEFAULT_LANES

#: Test images per budget in the demo's benchmark: at about 10 k cycles an image, Icarus
#: needs seconds per image, and the demo must end within 15 minutes on two cores.
DEMO_BENCH_IMAGES = 8
#: Test images per budget in ``make bench`` (``--bench-only``): as many as the golden vectors.
BENCH_ONLY_IMAGES = 32


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (default: model/configs/digits.yaml)")
    parser.add_argument("--run", type=Path, default=Path("runs/digits"),
                        help="run folder (default runs/digits)")
    add_build_argument(parser, "build folder for the Verilog and the reports "
                               "(default build/digits)")
    parser.add_argument("--board", default=DEFAULT_BOARD, help=f"board for the clock and the "
                        f"resource budget (default {DEFAULT_BOARD})")
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES,
                        help=f"accumulator lanes of the design (default {DEFAULT_LANES})")
    parser.add_argument("--sim-images", type=int, default=2,
                        help="test images checked bit for bit by `stepvit sim` (default 2; the "
                             "benchmark checks its own images at every budget too)")
    parser.add_argument("--bench-images", type=int, default=None,
                        help=f"test images per budget in the benchmark (default "
                             f"{DEMO_BENCH_IMAGES}, {BENCH_ONLY_IMAGES} with --bench-only)")
    parser.add_argument("--retrain", action="store_true",
                        help="train and export again even if the run has them")
    parser.add_argument("--bench-only", action="store_true",
                        help="reuse (or make) the export and run the benchmark alone")
    add_progress_argument(parser)


def _step(name: str, argv: list[str], timings: dict[str, float]) -> None:
    """Run one ``stepvit`` command; a failure ends the demo with one line."""
    from stepvit.host.cli import main
    from stepvit.model.export.errors import StepvitError

    print(f"\n== {name}: stepvit {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    try:
        status = main(argv)
    except SystemExit as error:  # argparse refused the arguments (it printed why)
        status = error.code if isinstance(error.code, int) else 2
    timings[name] = round(time.perf_counter() - start, 2)
    if status != 0:
        raise StepvitError(f"the {name} step failed (stepvit {argv[0]} exited {status}); "
                           f"rerun it alone with: stepvit {' '.join(argv)}")


def _export_is_current(run: Path, export_dir: Path) -> bool:
    """Return whether ``export_dir`` loads and is newer than the run's checkpoint."""
    from stepvit.model.export import load_export
    from stepvit.model.export.errors import StepvitError

    checkpoint, manifest = run / "checkpoint.pt", export_dir / "manifest.yaml"
    if not manifest.is_file() or not (export_dir / "golden_vectors.npz").is_file():
        return False
    if checkpoint.is_file() and checkpoint.stat().st_mtime > manifest.stat().st_mtime:
        return False
    try:
        load_export(export_dir)
    except StepvitError:
        return False
    return True


def demo(args: argparse.Namespace) -> int:
    """Run the whole chain on digits and say where the reports are."""
    from stepvit.model.config import load_config
    from stepvit.model.export import load_export
    from stepvit.model.export.errors import StepvitError

    if args.bench_images is None:
        args.bench_images = BENCH_ONLY_IMAGES if args.bench_only else DEMO_BENCH_IMAGES
    for option in ("lanes", "sim_images", "bench_images"):
        if getattr(args, option) < 1:
            raise StepvitError(f"--{option.replace('_', '-')} must be at least 1")
    if args.config is not None:
        load_config(args.config)  # a bad config is the demo's own one-line error
    start = time.perf_counter()
    timings: dict[str, float] = {}
    run = output_folder(args.run, "--run")
    build = output_folder(args.build or Path("build/digits"), "--build")
    export_dir = run / "export"
    bench_dir = build / "bench"
    lanes = str(args.lanes)
    quiet = ["--no-progress"] if args.no_progress else []

    if args.retrain or not (run / "metrics.json").is_file():
        train = ["train", "--out", str(run)]
        if args.config is not None:
            train += ["--config", str(args.config)]
        if args.retrain:
            train.append("--fresh")
        _step("train", train + quiet, timings)
    else:
        print(f"== train: reusing {run} (metrics.json exists; --retrain trains again)")
    if args.retrain or not _export_is_current(run, export_dir):
        _step("export", ["export", str(run), "--out", str(export_dir), *quiet], timings)
    else:
        print(f"== export: reusing {export_dir}")
    if not args.bench_only:
        _step("rtl", ["rtl", str(export_dir), "--build", str(build), "--lanes", lanes], timings)
        # the trained masks alone (budget t_max): the benchmark checks every budget
        t_max = str(load_export(export_dir).t_max)
        _step("sim", ["sim", str(export_dir), "--images", str(args.sim_images), "--budget",
                      t_max, "--lanes", lanes, "--out", str(build), *quiet], timings)
    _step("bench", ["bench", str(export_dir), "--backend", "sim", "--images",
                    str(args.bench_images), "--lanes", lanes, "--board", args.board,
                    "--out", str(bench_dir), *quiet], timings)
    if not args.bench_only:
        _step("synth", ["synth", str(build), "--board", args.board, *quiet], timings)

    summary: dict[str, Any] = {
        "run": str(run),
        "export": str(export_dir),
        "bench": str(bench_dir / "bench.json"),
        "plot": str(bench_dir / "bench.png"),
        "seconds_per_step": timings,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if not args.bench_only:
        summary.update(verilog=str(build / "stepvit_accel.v"), sim=str(build / "sim.json"),
                       synth=str(build / f"synth_{args.board}.json"))
    summary_path = build / ("bench_summary.json" if args.bench_only else "demo.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n== done in {summary['seconds']:.0f} s")
    for key in ("run", "export", "verilog", "sim", "bench", "plot", "synth"):
        if key in summary:
            print(f"  {key:8} {summary[key]}")
    print(f"  summary  {summary_path}")
    return 0
