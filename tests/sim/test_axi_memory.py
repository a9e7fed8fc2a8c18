"""The simulated AXI memory takes its figures from a board and refuses impossible ones."""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.rtl.boards import load_board
from stepvit.sim.axi_memory import AxiReadMemory


@pytest.mark.parametrize("board", ["pynq-z2", "kv260"])
def test_the_memory_has_the_boards_width_latency_and_bandwidth(board: str) -> None:
    ddr = load_board(board).ddr
    memory = AxiReadMemory.from_board(load_board(board), None, None, np.zeros(16, np.uint8))
    assert (memory.data_width, memory.latency_cycles, memory.bytes_per_cycle) == (
        ddr.data_width, ddr.latency_cycles, ddr.bytes_per_cycle)
    memory.inject_error(ddr.beat_bytes + 3)
    assert memory.error_addresses == {ddr.beat_bytes}  # the beat that holds the byte


@pytest.mark.parametrize(("options", "message"), [
    ({"latency_cycles": 0}, "latency_cycles must be at least 1"),
    ({"bytes_per_cycle": 16.0}, "bytes_per_cycle must be in \\(0, 8\\]"),
    ({"bytes_per_cycle": 0.0}, "bytes_per_cycle must be in"),
])
def test_impossible_figures_are_refused(options: dict, message: str) -> None:
    figures = {"data_width": 64, "latency_cycles": 40, "bytes_per_cycle": 8.0, **options}
    with pytest.raises(ValueError, match=message):
        AxiReadMemory(None, None, np.zeros(16, np.uint8), **figures)
