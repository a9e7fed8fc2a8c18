"""The AXI write master's Verilog under Icarus (cocotb), against a board's simulated DDR.

:class:`AxiWriterSimulation` writes :class:`~stepvit.rtl.axi_writer.AxiBurstWriter` with the
board's AXI shape as Verilog, builds it once with cocotb's Icarus runner and runs writes
through it (``sim/tb_axi_writer.py``) into
:class:`~stepvit.sim.axi_memory.AxiWriteMemory` with the board's ``ddr`` figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stepvit.rtl.axi_writer import AxiBurstWriter
from stepvit.rtl.boards import Board
from stepvit.sim.axi_reader_verilog import BEATS_PER_WORD, build_icarus, run_testbench

TOP = "axi_writer_top"
TESTBENCH = "stepvit.sim.tb_axi_writer"


class AxiWriterSimulation:
    """The AXI write master of ``board``'s shape, as Verilog, built with Icarus.

    Parameters
    ----------
    board : Board
        Whose ``ddr`` figures give the master's beat and burst (and the memory's figures).
    build_dir : str or Path
        Folder for the Verilog, the compiled simulation, configurations and results.
    depth : int
        Words a run has at most; a word is :data:`BEATS_PER_WORD` beats.
    """

    def __init__(self, board: Board, build_dir: str | Path, *, depth: int) -> None:
        ddr = board.memory()
        self.board, self.depth = board, depth
        self.word_bytes = BEATS_PER_WORD * ddr.beat_bytes
        self.build_dir = Path(build_dir).resolve()
        writer = AxiBurstWriter(data_width=ddr.data_width,
                                word_width=BEATS_PER_WORD * ddr.data_width, depth=depth,
                                max_burst=ddr.max_burst)
        self.runner = build_icarus(writer, TOP, self.build_dir)

    def run(self, words: list[int], *, base: int, memory_bytes: int,
            valid_seed: int | None = None, error_address: int | None = None,
            name: str = "run") -> dict[str, Any]:
        """Write ``words`` from byte ``base`` of a zeroed memory; return what it holds.

        Returns
        -------
        dict
            ``memory`` (a ``uint8`` array), ``error`` (the flag), ``words_taken``, ``cycles``
            (from the ``start`` to ``busy`` low), ``counters``
            (:class:`~stepvit.sim.axi_memory.WriteCounters` as a dict) and ``violations``.

        Raises
        ------
        SimulationFailed
            If the testbench fails or writes no result.
        """
        outcome = run_testbench(self.runner, TESTBENCH, TOP, "write_run", self.build_dir,
                                name, {
            "board": str(self.board.folder), "memory_bytes": memory_bytes, "base": base,
            "words": [f"{word:x}" for word in words], "valid_seed": valid_seed,
            "error_address": error_address,
            "timeout_cycles": 100 * (len(words) * BEATS_PER_WORD + 100)})
        outcome["memory"] = np.frombuffer(bytes.fromhex(outcome["memory"]), dtype=np.uint8)
        return outcome


__all__ = ["AxiWriterSimulation"]
