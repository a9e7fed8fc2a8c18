"""The AXI burst reader against a DDR model with latency, a bandwidth and backpressure."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.axi_reader import BOUNDARY, BURST_INCR, AxiBurstReader
from stepvit.rtl.axi_runs import AxiRunsReader
from stepvit.rtl.ddr_model import DdrModel, expected_words


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


def run_runs(reader: AxiRunsReader, ddr: DdrModel, bases: list[int], words: int):
    """Start one stream of ``bases``' runs of ``words`` words; return its writes (run,
    word, data), its error and the cycles from its first request to its last beat."""
    result = {}

    async def testbench(ctx):
        ctx.set(reader.words, words)
        ctx.set(reader.start, 1)
        cycle, writes, first = 0, [], None
        while True:
            ctx.set(reader.base, bases[min(ctx.get(reader.base_run), len(bases) - 1)])
            if cycle:
                ddr.cycle(ctx, reader, cycle)
                first = cycle if first is None and ctx.get(reader.arvalid) else first
                if ctx.get(reader.write_en):
                    writes.append((ctx.get(reader.write_run), ctx.get(reader.write_addr),
                                   ctx.get(reader.write_data)))
            await ctx.tick()
            ctx.set(reader.start, 0)
            cycle += 1
            if not ctx.get(reader.busy):
                break
        result.update(writes=writes, error=ctx.get(reader.error),
                      cycles=cycle - (first or cycle))

    sim = Simulator(reader)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return result


@pytest.mark.parametrize("data_width, word_width, max_burst, bases, words", [
    (64, 64, 16, [0, 4096 - 8 * 3, 512, 8 * 1000], 7),  # one run across a 4 KB boundary
    (64, 128, 4, [64, 8192 - 16 * 5, 16], 11),          # 2-beat words, bursts of 4
    (128, 384, 8, [16 * 250, 16 * 3, 4096 * 3 - 48], 5),  # 3-beat words
    (64, 64, 16, [8 * 9], 20),                           # a single run
])
def test_runs_arrive_word_for_word_each_with_its_run(data_width, word_width, max_burst,
                                                     bases, words) -> None:
    memory = np.random.default_rng(8).integers(0, 256, 1 << 15, dtype=np.uint8)
    reader = AxiRunsReader(runs=len(bases), data_width=data_width, word_width=word_width,
                           depth=32, max_burst=max_burst)
    beat_bytes = data_width // 8
    ddr = DdrModel(memory, beat_bytes, latency=12, interval=1, seed=words)
    result = run_runs(reader, ddr, bases, words)
    assert not result["error"]
    assert result["writes"] == [
        (run, index, word) for run, base in enumerate(bases)
        for index, word in enumerate(expected_words(memory, base, words, word_width // 8))]
    for address, arlen, arsize, burst in ddr.bursts:
        length = arlen + 1
        assert 1 <= length <= max_burst and burst == BURST_INCR
        assert 1 << arsize == beat_bytes and address % beat_bytes == 0
        assert address // BOUNDARY == (address + length * beat_bytes - 1) // BOUNDARY
    assert sum(arlen + 1 for _, arlen, _, _ in ddr.bursts) == \
        len(bases) * words * word_width // data_width


def test_runs_pay_the_latency_once() -> None:
    # nine runs of 3 words (a stem tile's taps): one after the other, 9 x (40 + 3) cycles;
    # the requests of a run follow the last of the one before: the latency once
    memory = np.random.default_rng(9).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiRunsReader(runs=9, data_width=64, word_width=64, depth=8, max_burst=16)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=10, arready_rate=1, rvalid_gap=0)
    bases = [1000 * 8 * tap for tap in range(9)]
    result = run_runs(reader, ddr, bases, 3)
    assert len(result["writes"]) == 27
    assert result["cycles"] <= 40 + 27 + 3
    assert [address for address, *_ in ddr.bursts] == bases


def test_runs_of_no_words_are_done_at_once_and_an_error_is_flagged() -> None:
    reader = AxiRunsReader(runs=3, data_width=64, word_width=64, depth=8)
    ddr = DdrModel(np.zeros(64, dtype=np.uint8), 8, latency=3, interval=1, seed=0)
    result = run_runs(reader, ddr, [0, 8, 16], 0)
    assert result["writes"] == [] and not result["error"] and ddr.bursts == []
    memory = np.random.default_rng(11).integers(0, 256, 1 << 12, dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=3, interval=1, seed=1, bad=(8 * 101,))
    result = run_runs(AxiRunsReader(runs=3, depth=8), ddr, [0, 800, 1600], 4)
    assert result["error"] and len(result["writes"]) == 12  # every beat taken
    with pytest.raises(ValueError, match="runs"):
        AxiRunsReader(runs=0)
