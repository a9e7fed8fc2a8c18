"""cocotb testbench of the AXI write master's Verilog: one run into a simulated DDR.

The runner (:mod:`stepvit.sim.axi_writer_verilog`) writes one JSON configuration and names
it in ``STEPVIT_SIM_CONFIG``. Keys: ``board`` (the folder whose ``ddr`` figures the memory
takes), ``memory_bytes``, ``base``, ``words`` (the run's words, as hex strings),
``valid_seed`` (random gaps in the word stream, or null), ``error_address`` (a byte whose
burst is answered with SLVERR, or null), ``timeout_cycles`` and ``results`` (where the
outcome is written: the memory's bytes, the error flag, the cycles from the start to
``busy`` low, the memory's counters and the bus rules broken).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from stepvit.rtl.boards import load_board
from stepvit.sim.axi_memory import AxiWriteMemory
from stepvit.sim.tb_axi_reader import CLOCK_NS, CONFIG_VARIABLE, RESET_CYCLES

#: Share of cycles the word stream offers nothing when the configuration asks for gaps.
VALID_GAP_SHARE = 0.25


@cocotb.test()
async def write_run(dut) -> None:
    """Start a run, offer its words, wait until ``busy`` drops; write what the memory holds."""
    config = json.loads(Path(os.environ[CONFIG_VARIABLE]).read_text())
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for name in ("start", "base", "words", "word_valid", "word_data"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    memory = np.zeros(config["memory_bytes"], dtype=np.uint8)
    ddr = AxiWriteMemory.from_board(load_board(config["board"]), dut, dut.clk, memory,
                                    prefix="")
    if config.get("error_address") is not None:
        ddr.inject_error(config["error_address"])
    cocotb.start_soon(ddr.run())
    words = [int(word, 16) for word in config["words"]]
    seed = config.get("valid_seed")
    rng = None if seed is None else np.random.default_rng(seed)

    await FallingEdge(dut.clk)
    dut.base.value = config["base"]
    dut.words.value = len(words)
    dut.start.value = 1
    start_cycle = ddr.cycle
    await FallingEdge(dut.clk)
    dut.start.value = 0
    offered = 0
    while True:
        valid = offered < len(words) and (rng is None or rng.random() >= VALID_GAP_SHARE)
        dut.word_valid.value = int(valid)
        dut.word_data.value = words[offered] if valid else 0
        await ReadOnly()
        if valid and int(dut.word_ready.value):
            offered += 1
        if not int(dut.busy.value):
            break
        if ddr.cycle - start_cycle > config["timeout_cycles"]:
            raise AssertionError(f"the run was not done after {config['timeout_cycles']} "
                                 f"cycles ({ddr.counters.beats} beats taken)")
        await FallingEdge(dut.clk)
    Path(config["results"]).write_text(json.dumps({
        "memory": memory.tobytes().hex(), "error": int(dut.error.value),
        "words_taken": offered, "cycles": ddr.cycle - start_cycle,
        "counters": asdict(ddr.counters), "violations": ddr.violations}))
