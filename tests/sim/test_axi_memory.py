"""The simulated AXI memory's read and write ports take their figures from a board and
refuse impossible ones."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest

from stepvit.rtl.boards import load_board
from stepvit.sim.axi_memory import RESP_OKAY, RESP_SLVERR, AxiReadMemory, AxiWriteMemory


@pytest.mark.parametrize("port", [AxiReadMemory, AxiWriteMemory])
@pytest.mark.parametrize("board", ["pynq-z2", "kv260"])
def test_the_memory_has_the_boards_width_latency_and_bandwidth(board: str, port) -> None:
    ddr = load_board(board).ddr
    memory = port.from_board(load_board(board), None, None, np.zeros(16, np.uint8))
    assert (memory.data_width, memory.latency_cycles, memory.bytes_per_cycle) == (
        ddr.data_width, ddr.latency_cycles, ddr.bytes_per_cycle)
    memory.inject_error(ddr.beat_bytes + 3)
    assert memory.error_addresses == {ddr.beat_bytes}  # the beat that holds the byte


@pytest.mark.parametrize(("options", "message"), [
    ({"latency_cycles": 0}, "latency_cycles must be at least 1"),
    ({"bytes_per_cycle": 16.0}, "bytes_per_cycle must be in \\(0, 8\\]"),
    ({"bytes_per_cycle": 0.0}, "bytes_per_cycle must be in"),
])
@pytest.mark.parametrize("port", [AxiReadMemory, AxiWriteMemory])
def test_impossible_figures_are_refused(options: dict, message: str, port) -> None:
    figures = {"data_width": 64, "latency_cycles": 40, "bytes_per_cycle": 8.0, **options}
    with pytest.raises(ValueError, match=message):
        port(None, None, np.zeros(16, np.uint8), **figures)


class _Signal:
    """A cocotb handle's stand-in: a ``value``."""

    def __init__(self, value: int = 0) -> None:
        self.value = value


def _write_port(**values: int) -> SimpleNamespace:
    names = ("awvalid", "awready", "awaddr", "awlen", "awsize", "awburst", "wvalid", "wready",
             "wdata", "wstrb", "wlast", "bvalid", "bready", "bresp")
    return SimpleNamespace(**{name: _Signal(values.get(name, 0)) for name in names})


def _write(memory: AxiWriteMemory, dut: SimpleNamespace, address: int, beats: list[int],
           *, last_at: int | None = None, strobe: int = 0xFF) -> None:
    """Accept a burst of ``beats`` at ``address``, then take its beats (``wlast`` on beat
    ``last_at``, default the last), as the memory's loop does."""
    dut.awaddr.value, dut.awlen.value = address, len(beats) - 1
    dut.awsize.value, dut.awburst.value = 3, 0b01
    memory._accept()
    for index, beat in enumerate(beats):
        dut.wdata.value, dut.wstrb.value = beat, strobe
        dut.wlast.value = int(index == (len(beats) - 1 if last_at is None else last_at))
        memory._take()


def test_the_write_port_writes_each_beat_where_its_burst_says() -> None:
    dut = _write_port()
    memory = AxiWriteMemory(dut, None, np.zeros(64, np.uint8), data_width=64,
                            latency_cycles=5, bytes_per_cycle=8.0, prefix="")
    _write(memory, dut, 16, [0x0807060504030201, 0x100F0E0D0C0B0A09])
    assert memory.memory[16:32].tolist() == list(range(1, 17))
    assert not memory.memory[:16].any() and not memory.memory[32:].any()
    assert memory.violations == [] and memory.counters.beats == 2


@pytest.mark.parametrize(("address", "options", "message"), [
    (0, {"last_at": 0}, "wlast 1 on beat 1 of 2"),
    (0, {"strobe": 0x0F}, "wstrb 0xf"),
    (4096 - 8, {}, "crosses a 4 KB boundary"),
    (4096 * 2 - 8, {}, "past the memory"),
])
def test_the_write_port_records_what_breaks_the_bus_rules(address: int, options: dict,
                                                          message: str) -> None:
    dut = _write_port()
    memory = AxiWriteMemory(dut, None, np.zeros(8192, np.uint8), data_width=64,
                            latency_cycles=5, bytes_per_cycle=8.0, prefix="")
    _write(memory, dut, address, [1, 2], **options)
    assert any(message in violation for violation in memory.violations), memory.violations


def test_a_written_burst_is_answered_after_the_latency_with_its_error() -> None:
    dut = _write_port()
    memory = AxiWriteMemory(dut, None, np.zeros(64, np.uint8), data_width=64,
                            latency_cycles=5, bytes_per_cycle=8.0, prefix="")
    memory.inject_error(8 + 3)
    _write(memory, dut, 0, [1, 2])
    _write(memory, dut, 16, [3])
    assert memory._answers == deque([(5, RESP_SLVERR), (5, RESP_OKAY)])
