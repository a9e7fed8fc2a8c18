"""The AXI read master's Verilog under Icarus, against the PYNQ-Z2's simulated DDR.

One fetch of ``WORDS`` two-beat words from a base below a 4 KB boundary, through the
generated Verilog of the tile buffer (the reader and its bank), served by
``sim/axi_memory.py`` with the board's ``ddr`` figures. The cycle bound: the memory offers a
burst's first beat ``L`` cycles after the cycle its address is accepted, and with a bucket of
credits that starts full, ``B`` beats of ratio ``r = beat bytes / bytes per cycle`` need
``(B - 1)·r + 1`` cycles; the address goes out the cycle after ``fetch``. So from the cycle
``fetch`` is registered to the last beat a run takes at least ``L + (B - 1)·r + 1`` cycles
(``L + B`` at ``r = 1``), and, since the reader requests every burst ahead without waiting,
at most ``SLACK`` more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from stepvit.rtl.axi_reader import BOUNDARY
from stepvit.rtl.boards import BOARDS_DIR, load_board
from stepvit.sim.axi_reader_verilog import (
    BEATS_PER_WORD,
    AxiReaderSimulation,
    expected_words,
    mismatches,
)

pytestmark = pytest.mark.skipif(__import__("shutil").which("iverilog") is None,
                                reason="needs Icarus Verilog")

BOARD = "pynq-z2"
WORDS = 64
#: Bytes of the simulated DDR: two 4 KB pages, so the run can cross from one to the next.
MEMORY_BYTES = 2 * BOUNDARY
#: The run starts 40 beats below the boundary: it crosses it mid-burst of the master's 16.
BEATS_BELOW_BOUNDARY = 40
#: Cycles beyond the bound a run may take: none are expected with arready always high;
#: two leave room for a registered request path, not for a latency paid per burst.
SLACK = 2


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> AxiReaderSimulation:
    return AxiReaderSimulation(load_board(BOARD), tmp_path_factory.mktemp("axi"), depth=WORDS)


@pytest.fixture(scope="module")
def memory() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, MEMORY_BYTES, dtype=np.uint8)


@pytest.fixture(scope="module")
def base(simulation: AxiReaderSimulation) -> int:
    return BOUNDARY - BEATS_BELOW_BOUNDARY * simulation.board.ddr.beat_bytes


def least_cycles(beats: int, latency: int, ratio: float) -> int:
    """The fewest cycles from ``fetch`` to the last beat (the module's docstring)."""
    return latency + math.ceil((beats - 1) * ratio) + 1


def test_a_run_across_4kb_arrives_bit_for_bit_at_the_boards_pace(
        simulation: AxiReaderSimulation, memory: np.ndarray, base: int) -> None:
    ddr = simulation.board.ddr
    result = simulation.run(memory, base=base, words=WORDS, name="plain")
    expected = expected_words(memory, base, WORDS, simulation.word_bytes)
    assert mismatches(expected, result["words"]) == []
    assert result["error"] == 0 and result["violations"] == []
    beats = WORDS * BEATS_PER_WORD
    counters = result["counters"]
    assert counters["beats"] == beats
    # 16-beat bursts, one split at the boundary: 40 beats below it, 88 above
    assert counters["bursts"] == math.ceil(40 / 16) + math.ceil(88 / 16)
    bound = least_cycles(beats, ddr.latency_cycles, ddr.beat_bytes / ddr.bytes_per_cycle)
    assert bound <= result["cycles"] <= bound + SLACK, (result["cycles"], bound)
    # the master waited out one latency, then took a beat every cycle
    assert counters["latency_stall_cycles"] == ddr.latency_cycles
    assert counters["bandwidth_stall_cycles"] == 0


def test_a_byte_flipped_after_the_start_is_a_mismatch(
        simulation: AxiReaderSimulation, memory: np.ndarray, base: int) -> None:
    flipped_word = 45  # past the 4 KB boundary
    flip = base + flipped_word * simulation.word_bytes + 3
    result = simulation.run(memory, base=base, words=WORDS, flip=flip, name="flip")
    expected = expected_words(memory, base, WORDS, simulation.word_bytes)
    found = mismatches(expected, result["words"])
    assert len(found) == 1 and found[0].startswith(f"word {flipped_word}:"), found
    got = result["words"][flipped_word] ^ expected[flipped_word]
    assert got == 0xFF << (8 * 3)


def test_an_injected_slverr_sets_the_readers_error_flag(
        simulation: AxiReaderSimulation, memory: np.ndarray, base: int) -> None:
    result = simulation.run(memory, base=base, words=WORDS, error_address=base + 8 * 50,
                            name="slverr")
    assert result["error"] == 1
    assert result["counters"]["beats"] == WORDS * BEATS_PER_WORD  # every beat taken
    clean = simulation.run(memory, base=base, words=WORDS, name="after")
    assert clean["error"] == 0


@pytest.mark.slow
def test_a_slower_port_and_address_gaps_set_the_pace(
        simulation: AxiReaderSimulation, memory: np.ndarray, base: int, tmp_path) -> None:
    fields = yaml.safe_load((BOARDS_DIR / BOARD / "board.yaml").read_text())
    fields["ddr"].update(bytes_per_cycle=fields["ddr"]["bytes_per_cycle"] / 2,
                         latency_cycles=fields["ddr"]["latency_cycles"] + 20)
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(fields))
    slow = load_board(tmp_path)
    ddr = slow.ddr
    result = simulation.run(memory, base=base, words=WORDS, board=slow, name="slow")
    expected = expected_words(memory, base, WORDS, simulation.word_bytes)
    assert mismatches(expected, result["words"]) == [] and result["violations"] == []
    beats = WORDS * BEATS_PER_WORD
    bound = least_cycles(beats, ddr.latency_cycles, ddr.beat_bytes / ddr.bytes_per_cycle)
    assert bound <= result["cycles"] <= bound + SLACK, (result["cycles"], bound)
    assert result["counters"]["bandwidth_stall_cycles"] == beats - 1  # a beat every 2nd cycle
    gaps = simulation.run(memory, base=base, words=WORDS, arready_seed=3, name="gaps")
    assert mismatches(expected, gaps["words"]) == [] and gaps["violations"] == []
