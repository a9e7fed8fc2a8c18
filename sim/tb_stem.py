"""cocotb testbench of the stem engine alone (``stem_engine``): images in, tokens out.

The runner (:mod:`stepvit.sim.stem_verilator`) writes one JSON configuration and names it
in ``STEPVIT_SIM_CONFIG``. Keys: ``images`` (per image, one word per pixel position, channel
``c`` in byte ``c``), ``masks`` (per image, the mask word: bit ``module · T + t``),
``timeout_cycles`` (per image) and ``results`` (where the run is written: per image the
token words ``[step, token, chunk, word]``, the spike counts and the busy cycles).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

#: Environment variable that names the configuration file.
CONFIG_VARIABLE = "STEPVIT_SIM_CONFIG"
CLOCK_NS = 10


async def _load_pixels(dut, words: list[int], bank: int) -> None:
    """Write one image's pixel words into pixel bank ``bank``, one position a cycle."""
    every_channel = (1 << len(dut.pixel_valid)) - 1
    dut.pixel_bank.value = bank
    for address, word in enumerate(words):
        dut.pixel_valid.value = every_channel
        dut.pixel_address.value = address
        dut.pixel_data.value = word
        await RisingEdge(dut.clk)
    dut.pixel_valid.value = 0


async def _run_image(dut, mask: int, bank: int, timeout: int) -> dict:
    """Start one image from pixel bank ``bank``; collect its tokens until the engine is idle."""
    dut.mask.value = mask
    dut.bank.value = bank
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    tokens, cycles = [], 0
    while True:
        await FallingEdge(dut.clk)
        busy, valid = int(dut.busy.value), int(dut.token_valid.value)
        if valid:
            tokens.append([int(dut.token_step.value), int(dut.token_index.value),
                           int(dut.token_chunk.value), int(dut.token_data.value)])
        if not busy and not valid:
            break
        cycles += busy
        if cycles > timeout:
            raise AssertionError(f"the engine was still busy after {timeout} cycles")
        await RisingEdge(dut.clk)
    return {"tokens": tokens, "counts": int(dut.counts.value), "cycles": cycles}


@cocotb.test()
async def stem_images(dut) -> None:
    """Run every configured image through the engine, one after the other."""
    config = json.loads(Path(os.environ[CONFIG_VARIABLE]).read_text())
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.pixel_valid.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    results = []
    for index, (words, mask) in enumerate(zip(config["images"], config["masks"])):
        await _load_pixels(dut, words, index % 2)
        results.append(await _run_image(dut, mask, index % 2, config["timeout_cycles"]))
    Path(config["results"]).write_text(json.dumps(results))
