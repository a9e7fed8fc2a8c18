"""The ``stepvit sim`` command: the generated Verilog against the golden model, bit for bit.

Only argparse and the standard library at the top; torch, amaranth and cocotb are
imported inside the command.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from stepvit.model.export.errors import StepvitError
from stepvit.model.export.options import (
    add_budget_argument,
    add_build_argument,
    add_progress_argument,
    image_count,
    output_folder,
)
from stepvit.rtl.build_folder import add_lanes_argument, build_design, check_lanes

#: The report's file name in the ``--out`` folder.
SIM_REPORT = "sim.json"
#: ``--simulator`` choices, the default first.
SIMULATORS = ("verilator", "icarus")
#: Reports of more images than this print without their per-image lists (sim.json has them).
PRINTED_IMAGES = 64


def sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``stepvit sim``."""
    parser.add_argument("export", help="export directory (manifest.yaml + weights.npz)")
    parser.add_argument("--images", type=image_count, default=8,
                        help="test images to run, or 'all' for the whole test split (default 8)")
    add_budget_argument(parser)
    parser.add_argument("--simulator", choices=SIMULATORS, default=SIMULATORS[0],
                        help="verilator (default: the C++ bulk path) or icarus (cocotb, the "
                             "cross-check; slow)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="verilator: threads, one model each (default 1)")
    parser.add_argument("--trace", type=Path, default=None, metavar="FILE.fst",
                        help="verilator: write the waveform of one image (--trace-image) at "
                             "the first budget")
    parser.add_argument("--trace-image", type=int, default=0,
                        help="the image --trace records (default 0)")
    add_lanes_argument(parser)
    parser.add_argument("--backpressure", action="store_true",
                        help="random pauses on both streams (results must not change)")
    add_build_argument(parser, "build folder: the design `stepvit rtl` recorded there, or a "
                               "new one (default build/sim/<config hash>-lanes<P>)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder of the CIFAR data sets (default data; unused for digits)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for {SIM_REPORT} (default: the build folder)")
    add_progress_argument(parser)


def load_test_images(export: Any, count: int | None,
                     data_dir: str | Path) -> tuple[Any, str]:
    """Return the first ``count`` test images of the export's data set, and their source.

    The export's golden vectors (read and checked by ``load_golden_vectors``) are used when
    the file is there and holds ``count`` images; an untrained export (no data set in its
    manifest) gets reproducible random images. ``count`` ``None`` is the whole test split.
    """
    import numpy as np

    from stepvit.model.export.vectors import VECTORS_FILE, load_golden_vectors

    dataset = (export.manifest.get("accuracy") or {}).get("dataset")
    if count is None and not dataset:
        raise StepvitError("--images all: the export names no data set (an untrained "
                           "export); give a number of random images")
    if count is not None and (Path(export.path) / VECTORS_FILE).is_file():
        vectors = load_golden_vectors(export)
        if len(vectors.images) >= count:
            return vectors.images[:count], VECTORS_FILE
    if not dataset:
        shape = (count, *export.arch["image_shape"])
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), "random"
    from stepvit.model.data import load_dataset

    images, _, _ = load_dataset(dataset, data_dir, "test")
    if count is None:
        return images.numpy().astype(np.uint8), f"{dataset} test split"
    if len(images) < count:
        raise StepvitError(f"--images {count}: the {dataset} test split has {len(images)}")
    return images[:count].numpy().astype(np.uint8), f"{dataset} test split"


def check_budget(simulation: Any, images: Any, budget: int | None, *,
                 backpressure: bool) -> dict[str, Any]:
    """Simulate ``images`` at one budget and compare every packet with the golden model."""
    import numpy as np

    from stepvit.model.export.stem import accumulate_lower_bound
    from stepvit.model.golden import GoldenModel
    from stepvit.rtl.build_folder import stem_lanes_of
    from stepvit.rtl.protocol import expected_packet, packet_mismatches, word_names
    from stepvit.sim.runner import SimulationFailed, decode_results, stream_cycles_of

    export, lanes = simulation.export, simulation.lanes
    mask_rows = export.budget_mask(budget)
    golden = GoldenModel(export).run(images, masks=mask_rows)
    spikes = np.asarray(golden.layer_spike_totals())
    expected = [expected_packet(golden.logits[i].tolist(), int(golden.predicted[i]), spikes[i])
                for i in range(len(images))]
    config = simulation.config(images, expected=expected, mask_rows=mask_rows,
                               backpressure=backpressure)
    try:
        results = simulation.run("stream_images", config)
    except SimulationFailed as failure:
        if failure.results is None:
            raise
        results = failure.results
    names = word_names(export.arch["num_classes"], export.layer_names())
    failures = list(results["failures"])
    mismatched = sorted({
        image for image, packet in enumerate(results["packets"])
        if packet_mismatches(image, expected[image], packet["words"], packet["word_cycles"], names)
        or any(message.startswith(f"image {image} ") for message in failures)
    })
    decoded = decode_results(results, export.arch["num_classes"])
    cycles = [image["cycles"] for image in decoded]
    stream = stream_cycles_of(results["packets"])
    work = {key: np.asarray(value).tolist() for key, value in golden.work.items()}
    accumulates = [a + e for a, e in zip(work["ac_ops"], work["embed_ac_ops"])]
    lower_bound = accumulate_lower_bound(export.arch, golden.work, lanes,
                                         stem_lanes_of(simulation.build_dir)).tolist()
    return {
        "budget": budget,
        "images": len(images),
        "mismatches": len(mismatched),
        "mismatched_images": mismatched,
        "failures": failures[:20],
        "cycles_per_image": cycles,
        "mean_cycles": sum(cycles) / len(cycles),
        "stream_cycles_per_image": stream / len(images),
        "accumulates_per_image": accumulates,
        "ac_ops_per_image": work["ac_ops"],
        "embed_ac_ops_per_image": work["embed_ac_ops"],
        "lower_bound_cycles": sum(lower_bound) / len(lower_bound),
        "efficiency": sum(lower_bound) / stream if stream else None,
        "dense_reference_cycles": sum(work["dense_ac_ops"]) / len(images) / lanes,
    }


def sim(args: argparse.Namespace) -> int:
    """Simulate the Verilog on test images against the golden model; non-zero on mismatch."""
    if args.images is not None and args.images < 1:
        raise StepvitError(f"--images must be at least 1, got {args.images}")
    check_lanes(args.lanes)
    if args.jobs < 1:
        raise StepvitError(f"--jobs must be at least 1, got {args.jobs}")
    if args.simulator == "icarus" and (args.jobs > 1 or args.trace is not None):
        raise StepvitError("--jobs and --trace need --simulator verilator")
    if args.simulator == "verilator" and args.backpressure:
        raise StepvitError("--backpressure needs --simulator icarus (the cocotb testbench)")
    from stepvit.model.export import load_export, parse_budgets
    from stepvit.model.progress import progress_bar
    from stepvit.sim.runner import simulation_for

    export = load_export(args.export)
    budgets = parse_budgets(args.budget, export.t_max)
    if args.build is not None:
        output_folder(args.build, "--build")
    out = output_folder(args.out, "--out") if args.out is not None else None
    images, source = load_test_images(export, args.images, args.data_dir)
    if args.trace is not None and not 0 <= args.trace_image < len(images):
        raise StepvitError(f"--trace-image {args.trace_image} is outside 0..{len(images) - 1}")
    build, lanes = build_design(export, args.lanes, args.build)
    extra: dict[str, Any] = {"simulator": args.simulator}
    if args.simulator == "verilator":
        from stepvit.sim import bulk

        simulation: Any = bulk.VerilatorSimulation(export, build, lanes=lanes,
                                                   trace=args.trace is not None)
        extra.update(jobs=args.jobs, verilator_build_s=simulation.library.build_seconds,
                     verilator_build_reused=simulation.library.reused)
        check = partial(bulk.check_budget, jobs=args.jobs)
    else:
        simulation = simulation_for(export, lanes=lanes, build_dir=build)
        check = partial(check_budget, backpressure=args.backpressure)
    runs = [check(simulation, images, budget)
            for budget in progress_bar(budgets, desc="budgets", unit="budget", leave=False,
                                       enabled=not args.no_progress)]
    if args.trace is not None:
        extra["trace"] = str(simulation.trace_image(images[args.trace_image], budgets[0],
                                                    args.trace))
    report = {
        "export": str(export.path),
        "config_hash": f"{export.config_hash:08x}",
        "lanes": lanes,
        "images": len(images),
        "image_source": source,
        **extra,
        "mismatches": sum(run["mismatches"] for run in runs),
        "runs": runs,
    }
    text = json.dumps(report, indent=2)
    ((out or simulation.build_dir) / SIM_REPORT).write_text(text + "\n")
    if len(images) > PRINTED_IMAGES:  # the per-image lists stay in sim.json
        report["runs"] = [{key: value for key, value in run.items()
                           if not isinstance(value, list) or key == "failures"} for run in runs]
        text = json.dumps(report, indent=2)
    print(text)
    return 1 if report["mismatches"] else 0

