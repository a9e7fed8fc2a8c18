"""cocotb testbench of the AXI tile top (``axi_tile_top``): one fetch from a simulated DDR.

The runner (:mod:`stepvit.sim.axi_reader_verilog`) writes one JSON configuration and names
it in ``STEPVIT_SIM_CONFIG``. Keys: ``board`` (the folder whose ``ddr`` figures the memory
takes), ``memory`` (its bytes, in hex), ``base`` and ``words`` (the run), ``flip`` (a byte
inverted the cycle after the fetch starts, or null), ``error_address`` (a byte whose beat is
answered with SLVERR, or null), ``arready_seed`` (random ``arready`` gaps, or null),
``timeout_cycles`` and ``results`` (where the outcome is written: the words read back from
the filled bank, the error flag, the cycles and the memory's counters).
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
from stepvit.sim.axi_memory import AxiReadMemory

#: Environment variable that names the configuration file.
CONFIG_VARIABLE = "STEPVIT_SIM_CONFIG"
CLOCK_NS = 10
RESET_CYCLES = 2
#: Share of cycles ``arready`` is held low when the configuration asks for gaps.
ARREADY_GAP_SHARE = 0.25


def _arready_pattern(seed: int):
    """Yield ``arready`` allowances: low on a random quarter of the cycles."""
    rng = np.random.default_rng(seed)
    while True:
        yield bool(rng.random() >= ARREADY_GAP_SHARE)


@cocotb.test()
async def fetch_run(dut) -> None:
    """Fetch a run into the free bank, wait until it is filled, swap and read it back."""
    config = json.loads(Path(os.environ[CONFIG_VARIABLE]).read_text())
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    for name in ("fetch", "swap", "base", "words", "read_addr"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    memory = np.frombuffer(bytes.fromhex(config["memory"]), dtype=np.uint8).copy()
    seed = config.get("arready_seed")
    ddr = AxiReadMemory.from_board(
        load_board(config["board"]), dut, dut.clk, memory,
        arready_pattern=None if seed is None else _arready_pattern(seed))
    if config.get("error_address") is not None:
        ddr.inject_error(config["error_address"])
    cocotb.start_soon(ddr.run())

    await FallingEdge(dut.clk)
    dut.base.value = config["base"]
    dut.words.value = config["words"]
    dut.fetch.value = 1
    fetch_cycle = ddr.cycle  # the memory's cycle count as this falling edge began
    await FallingEdge(dut.clk)
    dut.fetch.value = 0
    if config.get("flip") is not None:
        ddr.memory[config["flip"]] ^= 0xFF
    while True:
        await ReadOnly()
        if int(dut.filled.value):
            break
        if ddr.cycle - fetch_cycle > config["timeout_cycles"]:
            raise AssertionError(f"the bank was not filled after {config['timeout_cycles']} "
                                 f"cycles ({ddr.counters.beats} beats served)")
        await FallingEdge(dut.clk)
    error = int(dut.error.value)

    await FallingEdge(dut.clk)
    dut.swap.value = 1
    await FallingEdge(dut.clk)
    dut.swap.value = 0
    received = []
    for index in range(config["words"]):  # the read port answers a cycle later
        dut.read_addr.value = index
        await FallingEdge(dut.clk)
        await ReadOnly()
        received.append(int(dut.read_data.value))
        await FallingEdge(dut.clk)
    counters = ddr.counters
    Path(config["results"]).write_text(json.dumps({
        "words": received, "error": error, "fetch_cycle": fetch_cycle,
        "cycles": None if counters.last_beat_cycle is None
        else counters.last_beat_cycle - fetch_cycle,
        "counters": {**asdict(counters), "stall_cycles": counters.stall_cycles},
        "violations": ddr.violations}))
