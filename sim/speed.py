"""Verilator's bulk path against Icarus+cocotb: simulated cycles per second, same images.

``python -m stepvit.sim.speed EXPORT --images N --budget B [--lanes P] [--build DIR]``
builds the design for both simulators (build time not counted), streams the same images at
the same budget through each, checks both against the golden model and prints one JSON
object: per simulator the cycles simulated, the wall time and the cycles per second, and
the ratio. A benchmark, not a test: Icarus is slow (about 2,000 cycles a second).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from stepvit.model.export.errors import StepvitError
from stepvit.rtl.build_folder import DEFAULT_LANES


def compare(export_dir: str | Path, *, images: int, budget: int, lanes: int,
            build_dir: str | Path) -> dict[str, Any]:
    """Run both simulators on the first ``images`` test images; return their speeds."""
    from stepvit.model.export import load_export
    from stepvit.sim import bulk
    from stepvit.sim.commands import load_test_images
    from stepvit.sim.runner import Simulation, golden_packets

    export = load_export(export_dir)
    batch, source = load_test_images(export, images, "data")
    build_dir = Path(build_dir)
    start = time.perf_counter()
    verilated = bulk.VerilatorSimulation(export, build_dir / "verilator-side", lanes=lanes)
    verilator_setup = time.perf_counter() - start
    verilator_report = bulk.check_budget(verilated, batch, budget)
    start = time.perf_counter()
    icarus = Simulation(export, build_dir / "icarus-side", lanes=lanes)
    icarus_setup = time.perf_counter() - start
    mask_rows = export.budget_mask(budget)
    config = icarus.config(batch, expected=golden_packets(export, batch, mask_rows),
                           mask_rows=mask_rows)
    start = time.perf_counter()
    results = icarus.run("stream_images", config)
    icarus_seconds = time.perf_counter() - start
    icarus_cycles = results["packets"][-1]["word_cycles"][-1]
    icarus_speed = icarus_cycles / icarus_seconds
    return {
        "export": str(export.path),
        "config_hash": f"{export.config_hash:08x}",
        "images": len(batch),
        "image_source": source,
        "budget": budget,
        "lanes": lanes,
        "verilator": {
            "mismatches": verilator_report["mismatches"],
            "mean_cycles": verilator_report["mean_cycles"],
            "simulated_cycles": verilator_report["simulated_cycles"],
            "wall_s": verilator_report["wall_s"],
            "cycles_per_second": verilator_report["cycles_per_second"],
            "setup_s": verilator_setup,
            "build_s": verilated.library.build_seconds,
        },
        "icarus_cocotb": {
            "mismatches": len(results["failures"]),
            "simulated_cycles": icarus_cycles,
            "wall_s": icarus_seconds,
            "cycles_per_second": icarus_speed,
            "setup_s": icarus_setup,
        },
        "speedup": verilator_report["cycles_per_second"] / icarus_speed,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run :func:`compare`, print its JSON."""
    parser = argparse.ArgumentParser(prog="python -m stepvit.sim.speed", description=__doc__)
    parser.add_argument("export", help="export directory")
    parser.add_argument("--images", type=int, default=8, help="test images (default 8)")
    parser.add_argument("--budget", type=int, default=None,
                        help="time-step budget (default t_max, the trained mask)")
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES,
                        help=f"lanes (default {DEFAULT_LANES})")
    parser.add_argument("--build", type=Path, default=Path("build") / "speed",
                        help="build folder (default build/speed)")
    args = parser.parse_args(argv)
    try:
        from stepvit.model.export import load_export

        budget = args.budget or load_export(args.export).t_max
        report = compare(args.export, images=args.images, budget=budget, lanes=args.lanes,
                         build_dir=args.build)
    except StepvitError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
