"""The behaviour probe: what an export computes, in the golden model and in the Verilated design.

A dev script (pytest does not collect it) to show that a refactoring changed nothing: for
each export, each budget 1..t_max and each lane count it writes sha256 digests and a short
summary of the golden model's logits and per-layer, per-step spike counts, and of the
Verilated accelerator's result packets and cycle counts (the bulk path ``stepvit sim``
uses), on the images ``stepvit sim`` runs. Two files from two trees compare with ``diff``::

    python tests/behaviour_probe.py EXPORT [EXPORT...] --lanes 8,16,64 --images N \
        --out probe.json [--build FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def digest(array: Any) -> str:
    """Return the sha256 of an array's dtype, shape and bytes (int64, C order)."""
    values = np.ascontiguousarray(np.asarray(array), dtype=np.int64)
    header = f"{values.dtype.str}{values.shape}".encode()
    return hashlib.sha256(header + values.tobytes()).hexdigest()


def golden_probe(export: Any, images: np.ndarray, budget: int) -> dict[str, Any]:
    """Return the golden model's digests and summary at ``budget``."""
    from stepvit.model.golden import GoldenModel

    result = GoldenModel(export).run(images, masks=export.budget_mask(budget))
    spikes = np.stack([np.asarray(counts) for counts in result.spikes.values()], axis=1)
    return {
        "logits_sha256": digest(result.logits),
        "spikes_sha256": digest(spikes),
        "predicted": np.asarray(result.predicted).tolist(),
        "logit_sums": np.asarray(result.logits).sum(axis=1).tolist(),
        "spikes_per_layer": dict(zip(result.spikes, spikes.sum(axis=(0, 2)).tolist())),
    }


def design_probe(simulation: Any, images: np.ndarray, budget: int) -> dict[str, Any]:
    """Return the Verilated design's digests and summary at ``budget``."""
    from stepvit.rtl.protocol import unpack_results
    from stepvit.sim.bulk import compare_with_golden, golden_outputs

    export = simulation.export
    run = simulation.run(images, budget)
    mismatches = compare_with_golden(run.packets, golden_outputs(export, images, budget),
                                     export.layer_names(), budget, run.measured_cycles)
    return {
        "packets_sha256": digest(run.packets),
        "cycles_sha256": digest(run.measured_cycles),
        "predicted": unpack_results(run.packets, export.arch["num_classes"])[1].tolist(),
        "cycles": run.measured_cycles.tolist(),
        "stream_cycles": run.stream_cycles,
        "simulated_cycles": run.simulated_cycles,
        "golden_mismatches": len(mismatches),
    }


def probe_export(path: str, lanes: list[int], count: int, build: Path,
                 data_dir: Path) -> dict[str, Any]:
    """Return the probe of one export: golden and design results per budget and lane count."""
    from stepvit.model.export import load_export
    from stepvit.sim.bulk import VerilatorSimulation
    from stepvit.sim.commands import load_test_images

    export = load_export(path)
    images, source = load_test_images(export, count, data_dir)
    budgets = range(1, export.t_max + 1)
    report: dict[str, Any] = {
        "config_hash": f"{export.config_hash:08x}",
        "images": len(images),
        "image_source": source,
        "images_sha256": digest(images),
        "golden": {str(budget): golden_probe(export, images, budget) for budget in budgets},
        "design": {},
    }
    for lane_count in lanes:
        simulation = VerilatorSimulation(
            export, build / f"{export.config_hash:08x}-lanes{lane_count}", lanes=lane_count)
        report["design"][f"lanes{lane_count}"] = {
            str(budget): design_probe(simulation, images, budget) for budget in budgets}
    return report


def main(argv: list[str] | None = None) -> int:
    """Probe the exports and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exports", nargs="+", help="export directories")
    parser.add_argument("--lanes", default="8,16,64", help="lane counts, comma-separated")
    parser.add_argument("--images", type=int, default=8, help="test images (default 8)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON report to write")
    parser.add_argument("--build", type=Path, default=Path("build/probe"),
                        help="build folder of the designs (default build/probe)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder of the CIFAR data sets (default data)")
    args = parser.parse_args(argv)
    lanes = [int(value) for value in args.lanes.split(",")]
    start = time.perf_counter()
    report = {Path(path).name: probe_export(path, lanes, args.images, args.build, args.data_dir)
              for path in args.exports}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.out}: {len(args.exports)} exports, lanes {lanes}, {args.images} images, "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
