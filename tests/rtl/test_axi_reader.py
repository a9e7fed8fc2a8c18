"""The AXI burst reader against a DDR model with latency, a bandwidth and backpressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator
from ddr_model import DdrModel, expected_words

from stepvit.rtl.axi_reader import BOUNDARY, BURST_INCR, AxiBurstReader


def run_reader(reader: AxiBurstReader, ddr: DdrModel, runs: list[tuple[int, int]]):
    """Start each ``(base, words)`` run in turn; return its writes, errors and cycles."""
    results = []

    async def testbench(ctx):
        cycle = 0
        for base, words in runs:
            ctx.set(reader.base, base)
            ctx.set(reader.words, words)
            ctx.set(reader.start, 1)
            await ctx.tick()
            ctx.set(reader.start, 0)
            cycle += 1
            begun, writes = cycle, []
            while ctx.get(reader.busy):
                ddr.cycle(ctx, reader, cycle)
                if ctx.get(reader.write_en):
                    writes.append((ctx.get(reader.write_addr), ctx.get(reader.write_data)))
                await ctx.tick()
                cycle += 1
            ctx.set(reader.rvalid, 0)
            results.append((writes, ctx.get(reader.error), cycle - begun))

    sim = Simulator(reader)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


@pytest.mark.parametrize("data_width, word_width, max_burst, base, words", [
    (64, 64, 16, 0, 40),
    (64, 256, 16, 4096 - 8 * 24, 30),     # 4-beat words, runs across a 4 KB boundary
    (128, 384, 8, 16 * 250, 21),          # 3-beat words, bursts of 8
    (64, 128, 256, 4096 * 2 - 64, 300),   # AXI4 bursts of up to 256 beats, cut at 4 KB
])
def test_a_run_arrives_word_for_word_in_bursts_the_bus_allows(data_width, word_width,
                                                              max_burst, base, words) -> None:
    memory = np.random.default_rng(1).integers(0, 256, 1 << 15, dtype=np.uint8)
    reader = AxiBurstReader(data_width=data_width, word_width=word_width, depth=512,
                            max_burst=max_burst)
    beat_bytes = data_width // 8
    ddr = DdrModel(memory, beat_bytes, latency=12, interval=1, seed=words)
    [(writes, error, _)] = run_reader(reader, ddr, [(base, words)])
    assert not error
    assert writes == list(enumerate(expected_words(memory, base, words, word_width // 8)))
    covered = []
    for address, arlen, arsize, burst in ddr.bursts:
        length = arlen + 1
        assert 1 <= length <= max_burst and burst == BURST_INCR
        assert 1 << arsize == beat_bytes and address % beat_bytes == 0
        assert address // BOUNDARY == (address + length * beat_bytes - 1) // BOUNDARY
        covered.append((address, length))
    assert sum(length for _, length in covered) == words * word_width // data_width
    assert covered[0][0] == base
    assert all(a + n * beat_bytes == b for (a, n), (b, _) in zip(covered, covered[1:]))


def test_requests_run_ahead_so_the_latency_is_paid_once() -> None:
    memory = np.random.default_rng(2).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiBurstReader(data_width=64, word_width=64, depth=512, max_burst=16)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=3)
    [(writes, _, cycles)] = run_reader(reader, ddr, [(0, 256)])
    assert len(writes) == 256
    # 16 bursts of 16 beats: one burst at a time would take 16 x (40 + 16) = 896 cycles;
    # run ahead, the latency once, the beats back to back (less the model's stalls)
    assert cycles < 40 + 256 * 1.4


def test_a_slower_memory_sets_the_pace() -> None:
    memory = np.random.default_rng(4).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiBurstReader(data_width=64, word_width=64, depth=512, max_burst=16)
    ddr = DdrModel(memory, 8, latency=20, interval=3, seed=5)
    [(writes, _, cycles)] = run_reader(reader, ddr, [(64, 100)])
    assert writes == list(enumerate(expected_words(memory, 64, 100, 8)))
    assert cycles >= 20 + 3 * 99


def test_an_error_response_is_flagged_and_the_next_run_starts_clean() -> None:
    memory = np.random.default_rng(6).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiBurstReader(data_width=64, word_width=128, depth=64, max_burst=16)
    ddr = DdrModel(memory, 8, latency=5, interval=1, seed=7, bad=(8 * 21,))
    first, second = run_reader(reader, ddr, [(0, 20), (1024, 8)])
    assert first[1] == 1 and len(first[0]) == 20  # every beat taken: the bus is left clean
    assert second[1] == 0
    assert second[0] == list(enumerate(expected_words(memory, 1024, 8, 16)))


def test_a_run_of_no_words_is_done_at_once() -> None:
    reader = AxiBurstReader(data_width=64, word_width=64, depth=8)
    ddr = DdrModel(np.zeros(64, dtype=np.uint8), 8, latency=3, interval=1, seed=0)
    [(writes, error, cycles)] = run_reader(reader, ddr, [(0, 0)])
    assert writes == [] and not error and cycles == 0 and ddr.bursts == []


@pytest.mark.parametrize("shape, match", [
    ((48, 96, 8, 16), "AXI width"),
    ((64, 96, 8, 16), "whole number"),
    ((64, 64, 8, 0), "1-256"),
    ((64, 64, 0, 16), "at least 1"),
])
def test_a_bad_shape_is_refused(shape, match) -> None:
    from stepvit.rtl.axi_reader import check_shape

    with pytest.raises(ValueError, match=match):
        check_shape(*shape)
    check_shape(64, 256, 8, 16)
