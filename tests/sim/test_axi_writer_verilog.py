"""The AXI write master's Verilog under Icarus, into the PYNQ-Z2's simulated DDR.

One run of ``WORDS`` two-beat words to a base below a 4 KB boundary, through the generated
Verilog of :class:`~stepvit.rtl.axi_writer.AxiBurstWriter`, taken by
``sim/axi_memory.py``'s write port with the board's ``ddr`` figures. The cycle bound: at a
beat a cycle, ``B`` beats go out back to back, and the last burst's response comes ``L``
cycles after its last beat; the run is done (``busy`` low) when that response is taken. So
a run takes at least ``B + L`` cycles from its ``start``, and, since every burst's address
and data go out without waiting for a response, at most ``SLACK`` more.
"""

from __future__ import annotations

import numpy as np
import pytest

from stepvit.rtl.axi_reader import BOUNDARY
from stepvit.rtl.boards import load_board
from stepvit.sim.axi_reader_verilog import BEATS_PER_WORD
from stepvit.sim.axi_writer_verilog import AxiWriterSimulation

pytestmark = pytest.mark.skipif(__import__("shutil").which("iverilog") is None,
                                reason="needs Icarus Verilog")

BOARD = "pynq-z2"
WORDS = 64
MEMORY_BYTES = 2 * BOUNDARY
#: The run starts 40 beats below the boundary: it crosses it mid-burst of the master's 16.
BEATS_BELOW_BOUNDARY = 40
#: Cycles beyond the bound a run may take: the start, the first word taken, the response.
SLACK = 3


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> AxiWriterSimulation:
    return AxiWriterSimulation(load_board(BOARD), tmp_path_factory.mktemp("axiw"), depth=WORDS)


@pytest.fixture(scope="module")
def words(simulation: AxiWriterSimulation) -> list[int]:
    rng = np.random.default_rng(12)
    return [int.from_bytes(rng.integers(0, 256, simulation.word_bytes, dtype=np.uint8)
                           .tobytes(), "little") for _ in range(WORDS)]


@pytest.fixture(scope="module")
def base(simulation: AxiWriterSimulation) -> int:
    return BOUNDARY - BEATS_BELOW_BOUNDARY * simulation.board.ddr.beat_bytes


def landed(memory: np.ndarray, base: int, count: int, word_bytes: int) -> list[int]:
    return [int.from_bytes(memory[base + i * word_bytes:base + (i + 1) * word_bytes]
                           .tobytes(), "little") for i in range(count)]


def test_a_run_across_4kb_lands_bit_for_bit_at_the_boards_pace(
        simulation: AxiWriterSimulation, words: list[int], base: int) -> None:
    ddr = simulation.board.ddr
    result = simulation.run(words, base=base, memory_bytes=MEMORY_BYTES, name="plain")
    memory = result["memory"]
    assert landed(memory, base, WORDS, simulation.word_bytes) == words
    end = base + WORDS * simulation.word_bytes
    assert not memory[:base].any() and not memory[end:].any()
    assert result["error"] == 0 and result["violations"] == []
    beats = WORDS * BEATS_PER_WORD
    counters = result["counters"]
    assert counters["beats"] == beats
    # 16-beat bursts, one split at the boundary: 40 beats below it, 88 above
    assert counters["bursts"] == counters["responses"] == 3 + 6
    assert counters["bandwidth_stall_cycles"] == 0
    bound = beats + ddr.latency_cycles
    assert bound <= result["cycles"] <= bound + SLACK, (result["cycles"], bound)


def test_a_word_stream_with_gaps_still_lands_in_order(
        simulation: AxiWriterSimulation, words: list[int], base: int) -> None:
    result = simulation.run(words, base=base, memory_bytes=MEMORY_BYTES, valid_seed=5,
                            name="gaps")
    assert landed(result["memory"], base, WORDS, simulation.word_bytes) == words
    assert result["violations"] == [] and result["words_taken"] == WORDS


def test_an_injected_slverr_sets_the_writers_error_flag(
        simulation: AxiWriterSimulation, words: list[int], base: int) -> None:
    result = simulation.run(words, base=base, memory_bytes=MEMORY_BYTES,
                            error_address=base + 8 * 50, name="slverr")
    assert result["error"] == 1
    assert result["counters"]["beats"] == WORDS * BEATS_PER_WORD  # every beat written
    clean = simulation.run(words, base=base, memory_bytes=MEMORY_BYTES, name="after")
    assert clean["error"] == 0
