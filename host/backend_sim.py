"""The sim backend: the generated Verilog under Verilator or Icarus.

Verilator (``sim/bulk.py``, the default) runs the C++ bulk path; Icarus driven by cocotb
(``sim/runner.py``) is the cross-check.

Cycle counts are exact; the host stages other than ``execute`` are the simulation's
business, so only ``execute`` (the whole simulator run) is timed here. amaranth, Verilator
and cocotb are imported when the first batch runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stepvit.host.accelerator import STAGES, Accelerator, InferenceResult
from stepvit.model.export import Export
from stepvit.model.export.errors import StepvitError
from stepvit.rtl.build_folder import build_design, check_lanes
from stepvit.sim.commands import SIMULATORS


class SimAccelerator(Accelerator):
    """The accelerator's Verilog, simulated one batch per simulator run.

    Parameters
    ----------
    export : Export
        The export the design is generated from.
    lanes : int, optional
        Parallel accumulator lanes of the generated design: ``build_dir``'s recorded design,
        else :data:`~stepvit.rtl.build_folder.DEFAULT_LANES`; another than the folder's is
        refused.
    build_dir : path, optional
        Where the design and the simulator build (reused between batches); default
        ``build/sim/<config hash>-lanes<P>``.
    simulator : str
        ``"verilator"`` (the C++ bulk path) or ``"icarus"`` (cocotb).
    jobs : int
        verilator only: threads, one model each.
    """

    name = "sim"

    def __init__(self, export: Export, *, lanes: int | None = None,
                 build_dir: str | Path | None = None, simulator: str = "verilator",
                 jobs: int = 1) -> None:
        check_lanes(lanes, "lanes")
        if simulator not in SIMULATORS:
            raise StepvitError(f"unknown simulator {simulator!r} (known: {', '.join(SIMULATORS)})")
        if jobs < 1:
            raise StepvitError(f"jobs must be at least 1, got {jobs}")
        super().__init__(export)
        self.build_dir, self.lanes = build_design(export, lanes, build_dir)
        self.simulator = simulator
        self.jobs = jobs
        self._verilated = None

    def _apply_budget(self, budget: int | None) -> None:
        """Keep the budget: the simulation writes it to the mask registers at every run."""

    def _infer(self, images: np.ndarray) -> InferenceResult:
        if self.simulator == "verilator":
            return self._infer_verilator(images)
        from stepvit.sim.runner import simulate, stream_cycles_of

        start = time.perf_counter()
        outputs = simulate(self.export, images, budget=self.budget, lanes=self.lanes,
                           build_dir=self.build_dir)
        execute_s = time.perf_counter() - start
        stage_seconds = dict.fromkeys(STAGES, 0.0)
        stage_seconds["execute"] = execute_s
        return InferenceResult(
            logits=np.array([output["logits"] for output in outputs], dtype=np.int64),
            predicted=np.array([output["predicted"] for output in outputs], dtype=np.int64),
            cycles=np.array([output["cycles"] for output in outputs], dtype=np.int64),
            spike_totals=np.array([output["spike_totals"] for output in outputs], dtype=np.int64),
            stage_seconds=stage_seconds,
            stream_cycles=stream_cycles_of(outputs),
        )

    def _infer_verilator(self, images: np.ndarray) -> InferenceResult:
        from stepvit.rtl.protocol import unpack_results
        from stepvit.sim.bulk import VerilatorSimulation

        if self._verilated is None:
            self._verilated = VerilatorSimulation(self.export, self.build_dir, lanes=self.lanes)
        run = self._verilated.run(images, self.budget, jobs=self.jobs)
        logits, predicted, cycles, spike_totals = unpack_results(
            run.packets, self.export.arch["num_classes"])
        stage_seconds = dict.fromkeys(STAGES, 0.0)
        stage_seconds["execute"] = run.seconds
        return InferenceResult(logits=logits, predicted=predicted, cycles=cycles,
                               spike_totals=spike_totals, stage_seconds=stage_seconds,
                               stream_cycles=run.stream_cycles)

    def _release(self) -> None:
        """Nothing is held between simulator runs; the build folder stays for reuse."""
