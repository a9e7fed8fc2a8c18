"""The AXI burst writer against a DDR model with latency and backpressure on every channel."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from stepvit.rtl.axi_reader import BURST_INCR
from stepvit.rtl.axi_writer import AXI_WRITE_MEMBERS, AxiBurstWriter
from stepvit.rtl.ddr_model import BOUNDARY, DdrWriteModel


def run_writer(writer: AxiBurstWriter, ddr: DdrWriteModel, runs: list[tuple[int, list[int]]],
               *, valid_rate: float = 1.0, seed: int = 0):
    """Start each ``(base, words)`` run in turn, offering its words on the stream (each
    cycle with chance ``valid_rate``, and more words after them); return each run's error
    flag and cycles, from its start to ``busy`` low."""
    results = []
    rng = np.random.default_rng(seed)

    async def testbench(ctx):
        cycle = 0
        for base, words in runs:
            ctx.set(writer.base, base)
            ctx.set(writer.words, len(words))
            ctx.set(writer.start, 1)
            await ctx.tick()
            ctx.set(writer.start, 0)
            cycle += 1
            begun, offered = cycle, 0
            while ctx.get(writer.busy):
                assert cycle - begun < 50_000, f"stuck after {offered} of {len(words)} words"
                ddr.cycle(ctx, writer, cycle)
                # past the run's words the stream goes on (the next run's): not to be taken
                valid = rng.random() < valid_rate
                ctx.set(writer.word_valid, int(valid))
                ctx.set(writer.word_data, words[offered] if offered < len(words) else 0)
                if valid and ctx.get(writer.word_ready):
                    offered += 1
                await ctx.tick()
                cycle += 1
            ctx.set(writer.word_valid, 0)
            assert offered == len(words), f"the writer took {offered} of {len(words)} words"
            results.append((ctx.get(writer.error), cycle - begun))
        for _ in range(4):  # nothing moves once a run is done
            ddr.cycle(ctx, writer, cycle)
            assert not ctx.get(writer.awvalid) and not ctx.get(writer.wvalid)
            await ctx.tick()
            cycle += 1

    sim = Simulator(writer)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


def random_words(count: int, word_width: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int.from_bytes(rng.integers(0, 256, word_width // 8, dtype=np.uint8).tobytes(),
                           "little") for _ in range(count)]


def memory_words(memory: np.ndarray, base: int, count: int, word_bytes: int) -> list[int]:
    return [int.from_bytes(memory[base + i * word_bytes:base + (i + 1) * word_bytes]
                           .tobytes(), "little") for i in range(count)]


@pytest.mark.parametrize("data_width, word_width, max_burst, base, count", [
    (64, 64, 16, 0, 40),
    (64, 256, 16, 4096 - 8 * 24, 30),     # 4-beat words, a run across a 4 KB boundary
    (128, 384, 8, 16 * 250, 21),          # 3-beat words, bursts of 8
    (64, 128, 256, 4096 * 2 - 64, 300),   # AXI4 bursts of up to 256 beats, cut at 4 KB
])
def test_a_run_lands_word_for_word_in_bursts_the_bus_allows(data_width, word_width,
                                                            max_burst, base, count) -> None:
    memory = np.zeros(1 << 15, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=data_width, word_width=word_width, depth=512,
                            max_burst=max_burst)
    beat_bytes = data_width // 8
    ddr = DdrWriteModel(memory, beat_bytes, latency=12, seed=count, max_burst=max_burst)
    words = random_words(count, word_width, seed=count)
    [(error, _)] = run_writer(writer, ddr, [(base, words)], valid_rate=0.8, seed=count)
    assert not error and ddr.violations == []
    assert memory_words(memory, base, count, word_width // 8) == words
    written = np.flatnonzero(memory)
    assert written.min() >= base and written.max() < base + count * word_width // 8
    covered = [(address, arlen + 1) for address, arlen, _, _ in ddr.bursts]
    assert all(kind == BURST_INCR for *_, kind in ddr.bursts)
    assert all(address // BOUNDARY == (address + n * beat_bytes - 1) // BOUNDARY
               for address, n in covered)
    assert covered[0][0] == base
    assert all(a + n * beat_bytes == b for (a, n), (b, _) in zip(covered, covered[1:]))
    assert sum(n for _, n in covered) == ddr.written == count * word_width // data_width


def test_addresses_run_ahead_so_the_latency_is_paid_once() -> None:
    memory = np.zeros(1 << 14, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=64, word_width=64, depth=512, max_burst=16)
    ddr = DdrWriteModel(memory, 8, latency=40, seed=3, ready_rate=1.0)
    words = random_words(256, 64, seed=3)
    [(_, cycles)] = run_writer(writer, ddr, [(0, words)])
    assert memory_words(memory, 0, 256, 8) == words
    # 16 bursts of 16 beats: waiting for each response would take 16 x (40 + 16) cycles;
    # the beats go back to back and the last response's latency is paid once
    assert cycles <= 256 + 40 + 4


def test_busy_lasts_until_the_last_response() -> None:
    memory = np.zeros(1 << 12, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=64, word_width=64, depth=64, max_burst=16)
    ddr = DdrWriteModel(memory, 8, latency=200, seed=4, ready_rate=1.0)
    [(_, cycles)] = run_writer(writer, ddr, [(64, random_words(20, 64, seed=4))])
    assert cycles >= 20 + 200


def test_an_error_response_is_flagged_and_the_next_run_starts_clean() -> None:
    memory = np.zeros(1 << 14, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=64, word_width=128, depth=64, max_burst=16)
    ddr = DdrWriteModel(memory, 8, latency=5, seed=7, bad=(8 * 21,))
    first_words, second_words = random_words(20, 128, 8), random_words(8, 128, 9)
    first, second = run_writer(writer, ddr, [(0, first_words), (1024, second_words)])
    assert first[0] == 1 and second[0] == 0
    # every beat was written: the bus is left clean
    assert memory_words(memory, 0, 20, 16) == first_words
    assert memory_words(memory, 1024, 8, 16) == second_words


def test_a_run_of_no_words_is_done_at_once() -> None:
    memory = np.zeros(64, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=64, word_width=64, depth=8)
    ddr = DdrWriteModel(memory, 8, latency=3, seed=0)
    [(error, cycles)] = run_writer(writer, ddr, [(0, [])])
    assert not error and cycles == 0 and ddr.bursts == [] and not memory.any()


def test_its_ports_are_the_axi_write_channels() -> None:
    writer = AxiBurstWriter(data_width=128, word_width=256)
    Fragment.get(writer, None)
    members = writer.signature.members
    assert all(name in members for name in AXI_WRITE_MEMBERS)
    assert (len(writer.wdata), len(writer.wstrb), len(writer.awlen)) == (128, 16, 8)


def write_back_to_back(writer: AxiBurstWriter, ddr: DdrWriteModel, runs: list[int],
                       words: list[int], *, valid_rate: float = 1.0, seed: int = 0) -> int:
    """Start a run of one word at each base of ``runs`` as soon as each is taken
    (``run_ready``) while offering ``words`` on the stream; return the cycles until
    ``busy`` drops."""
    rng = np.random.default_rng(seed)
    outcome = {}

    async def testbench(ctx):
        cycle = started = offered = 0
        while started < len(runs) or ctx.get(writer.busy):
            assert cycle < 50_000, f"stuck after {offered} words"
            ddr.cycle(ctx, writer, cycle)
            start = started < len(runs) and ctx.get(writer.run_ready)
            if start:
                ctx.set(writer.base, runs[started])
                ctx.set(writer.words, 1)
                started += 1
            ctx.set(writer.start, int(start))
            valid = rng.random() < valid_rate
            ctx.set(writer.word_valid, int(valid))
            ctx.set(writer.word_data, words[offered] if offered < len(words) else 0)
            if valid and ctx.get(writer.word_ready):
                offered += 1
            await ctx.tick()
            cycle += 1
        assert offered == len(words), f"the writer took {offered} of {len(words)} words"
        outcome["cycles"] = cycle

    sim = Simulator(writer)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return outcome["cycles"]


#: A pass's slice of each token's words: one 10-beat word (a 32-lane stream word) of a
#: row of 12 (the dim's chunks), for 64 tokens.
TOKENS, ROW_WORDS, WORD_BYTES = 64, 12, 80


def test_runs_back_to_back_land_word_for_word_in_bursts_the_bus_allows() -> None:
    memory = np.zeros(1 << 17, dtype=np.uint8)
    writer = AxiBurstWriter(data_width=64, word_width=640, depth=4, max_burst=16)
    ddr = DdrWriteModel(memory, 8, latency=12, seed=5, max_burst=16)
    bases = [3 * WORD_BYTES + token * ROW_WORDS * WORD_BYTES for token in range(TOKENS)]
    words = random_words(TOKENS, 640, seed=5)
    write_back_to_back(writer, ddr, bases, words, valid_rate=0.6, seed=5)
    assert ddr.violations == []
    assert [memory_words(memory, base, 1, WORD_BYTES)[0] for base in bases] == words
    assert np.count_nonzero(memory) <= TOKENS * WORD_BYTES  # nothing outside the runs


def test_runs_back_to_back_go_at_the_bus_pace() -> None:
    memory = np.zeros(1 << 17, dtype=np.uint8)
    latency, beats = 40, TOKENS * WORD_BYTES // 8
    writer = AxiBurstWriter(data_width=64, word_width=640, depth=4, max_burst=16)
    ddr = DdrWriteModel(memory, 8, latency=latency, seed=6, ready_rate=1.0)
    bases = [token * ROW_WORDS * WORD_BYTES for token in range(TOKENS)]
    cycles = write_back_to_back(writer, ddr, bases, random_words(TOKENS, 640, seed=6))
    # a run at a time, each until its response, would take 64 x (10 + 40) cycles
    assert cycles <= beats + latency + 4
