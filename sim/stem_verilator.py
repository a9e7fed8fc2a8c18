"""The stem engine's Verilog under Verilator (cocotb), against the golden model's stem.

:class:`StemSimulation` writes the engine of an export's stem as Verilog, builds it with
cocotb's Verilator runner once, and runs images through it (``sim/tb_stem.py``), returning
each image's stream ``X`` per step, its stem spike counts and its cycles, decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from amaranth.back import verilog

from stepvit.model.export import Export, StepvitError
from stepvit.rtl.stem_engine import COUNT_BITS, StemEngine
from stepvit.rtl.stem_plan import StemPlan
from stepvit.sim.runner import TIMESCALE, VERILATOR_BUILD_ARGS, _verilator_on_path
from stepvit.sim.tb_stem import CONFIG_VARIABLE

TOP = "stem_engine"
TESTBENCH = "stepvit.sim.tb_stem"


class StemSimulation:
    """The stem engine of ``export`` at ``lanes``, built with Verilator in ``build_dir``."""

    def __init__(self, export: Export, build_dir: str | Path, *, lanes: int) -> None:
        from cocotb_tools.runner import get_runner

        self.export = export
        self.plan = StemPlan.from_export(export, lanes=lanes)
        self.build_dir = Path(build_dir).resolve()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        engine = StemEngine(self.plan, arrays=export.arrays, thresholds=export.thresholds,
                            bits=export.bit_widths,
                            leak_shift=int(export.neuron["leak_shift"]),
                            reset=export.neuron["reset"])
        source = self.build_dir / f"{TOP}.v"
        source.write_text(verilog.convert(engine, name=TOP, emit_src=False))
        self.runner = get_runner("verilator")
        with _verilator_on_path():
            # a check of a few images: compiling unoptimised C++ saves more than it costs
            self.runner.build(sources=[source], hdl_toplevel=TOP,
                              build_args=[*VERILATOR_BUILD_ARGS, "-CFLAGS", "-O0"],
                              build_dir=self.build_dir,
                              timescale=TIMESCALE, log_file=self.build_dir / "build.log")

    def run(self, images: np.ndarray, masks: list[np.ndarray]) -> list[dict[str, Any]]:
        """Run ``images`` (uint8 ``[B, C, H, W]``) under the stem rows of ``masks``.

        Returns
        -------
        list of dict
            Per image: ``stream`` int64 ``[T, tokens, D]``, ``counts`` (per stem layer),
            ``cycles``.

        Raises
        ------
        StepvitError
            If the simulation fails or writes no result.
        """
        plan = self.plan
        rows = len(plan.stages)
        channels = plan.stages[0].in_shape[0]
        words = [[sum(int(image[c].flat[p]) << (8 * c) for c in range(channels))
                  for p in range(image[0].size)] for image in np.asarray(images)]
        mask_words = [sum(int(bit) << i for i, bit in enumerate(np.asarray(mask)[:rows].flatten()))
                      for mask in masks]
        results_path = self.build_dir / "results.json"
        results_path.unlink(missing_ok=True)
        config_path = self.build_dir / "config.json"
        config_path.write_text(json.dumps({
            "images": words, "masks": mask_words, "results": str(results_path),
            "timeout_cycles": 100 * sum(p.kind != "tokens" for p in plan.passes())
            * max(plan.bank_depth(i) + 64 for i in range(rows))}))
        try:
            with _verilator_on_path():
                self.runner.test(test_module=TESTBENCH, hdl_toplevel=TOP, testcase="stem_images",
                                 extra_env={CONFIG_VARIABLE: str(config_path)},
                                 build_dir=self.build_dir, test_dir=self.build_dir,
                                 results_xml=str(self.build_dir / "results.xml"),
                                 timescale=TIMESCALE, log_file=self.build_dir / "test.log")
        except (SystemExit, RuntimeError):
            pass  # judged by the results file below
        if not results_path.exists():
            log = self.build_dir / "test.log"
            raise StepvitError(f"the stem simulation wrote no result ({log})")
        return [self._decode(result) for result in json.loads(results_path.read_text())]

    def _decode(self, result: dict[str, Any]) -> dict[str, Any]:
        """Unpack the token words into ``X`` and the counts word into one count per layer."""
        plan, lanes = self.plan, self.plan.lanes
        bits = self.export.bit_widths["stream"]
        channels, height, width = plan.stages[plan.last_stage].out_shape
        stream = np.zeros((plan.t_max, height * width, channels), dtype=np.int64)
        for step, token, chunk, word in result["tokens"]:
            for lane in range(lanes):
                channel = chunk * lanes + lane
                if channel < channels:
                    value = (word >> (bits * lane)) & ((1 << bits) - 1)
                    stream[step, token, channel] = value - ((value >> (bits - 1)) << bits)
        mask = (1 << COUNT_BITS) - 1
        counts = [(result["counts"] >> (COUNT_BITS * i)) & mask for i in range(len(plan.stages))]
        return {"stream": stream, "counts": counts, "cycles": result["cycles"]}


__all__ = ["StemSimulation"]
