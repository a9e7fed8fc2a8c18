"""The AXI stream reader against a DDR model: words in order, a FIFO that never overflows,
a bus that never waits for the consumer."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.axi_stream import AxiStreamReader, check_fifo
from stepvit.rtl.ddr_model import DdrModel, expected_words


def run_stream(reader: AxiStreamReader, ddr: DdrModel, runs: list[tuple[int, int]], *,
               ready_rate: float = 1.0, seed: int = 0):
    """Start each ``(base, words)`` run in turn and take its words (each cycle with chance
    ``ready_rate``); return each run's words, error flag and cycles from start to the last
    word taken."""
    results = []
    rng = np.random.default_rng(seed)

    async def testbench(ctx):
        cycle = 0
        for base, count in runs:
            ctx.set(reader.base, base)
            ctx.set(reader.words, count)
            ctx.set(reader.start, 1)
            await ctx.tick()
            ctx.set(reader.start, 0)
            cycle += 1
            begun, taken = cycle, []
            while ctx.get(reader.busy):
                assert cycle - begun < 50_000, f"stuck after {len(taken)} of {count} words"
                ddr.cycle(ctx, reader, cycle)
                if ctx.get(reader.rvalid):
                    assert ctx.get(reader.rready), "the bus waited for the consumer"
                ready = rng.random() < ready_rate
                ctx.set(reader.word_ready, int(ready))
                if ready and ctx.get(reader.word_valid):
                    taken.append(ctx.get(reader.word_data))
                await ctx.tick()
                cycle += 1
            ctx.set(reader.rvalid, 0)
            ctx.set(reader.word_ready, 0)
            results.append((taken, ctx.get(reader.error), cycle - begun))

    sim = Simulator(reader)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


@pytest.mark.parametrize("data_width, word_width, max_burst, fifo_words, base, count", [
    (64, 64, 16, 16, 0, 100),
    (64, 640, 16, 4, 4096 - 8 * 25, 30),   # 10-beat words (a 32-lane stream word), across 4 KB
    (128, 384, 8, 4, 16 * 250, 21),        # 3-beat words, a FIFO of 12 beats, bursts of 8
    (64, 128, 256, 140, 4096 * 2 - 64, 300),  # AXI4 bursts of up to 256 beats
])
def test_a_run_streams_word_for_word_whatever_the_consumer_does(
        data_width, word_width, max_burst, fifo_words, base, count) -> None:
    memory = np.random.default_rng(1).integers(0, 256, 1 << 16, dtype=np.uint8)
    reader = AxiStreamReader(data_width=data_width, word_width=word_width, depth=512,
                             fifo_words=fifo_words, max_burst=max_burst)
    ddr = DdrModel(memory, data_width // 8, latency=12, interval=1, seed=count)
    [(taken, error, _)] = run_stream(reader, ddr, [(base, count)], ready_rate=0.3, seed=count)
    assert not error
    assert taken == expected_words(memory, base, count, word_width // 8)
    assert sum(arlen + 1 for _, arlen, _, _ in ddr.bursts) == count * word_width // data_width


def test_a_fifo_of_the_latency_and_a_burst_hides_the_latency() -> None:
    memory = np.random.default_rng(2).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiStreamReader(data_width=64, word_width=64, depth=512, fifo_words=40 + 2 * 16,
                             max_burst=16)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=3, arready_rate=1.0, rvalid_gap=0)
    [(taken, _, cycles)] = run_stream(reader, ddr, [(0, 256)])
    assert taken == expected_words(memory, 0, 256, 8)
    assert cycles <= 256 + 40 + 6


def test_a_small_fifo_limits_the_beats_on_their_way() -> None:
    memory = np.random.default_rng(2).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiStreamReader(data_width=64, word_width=64, depth=512, fifo_words=16,
                             max_burst=16)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=3, arready_rate=1.0, rvalid_gap=0)
    [(taken, _, cycles)] = run_stream(reader, ddr, [(0, 256)])
    assert taken == expected_words(memory, 0, 256, 8)
    # one 16-beat burst on its way at a time: at least 16 latencies
    assert cycles >= 16 * 40


def test_an_error_response_is_flagged_and_the_next_run_starts_clean() -> None:
    memory = np.random.default_rng(6).integers(0, 256, 1 << 14, dtype=np.uint8)
    reader = AxiStreamReader(data_width=64, word_width=128, depth=64, fifo_words=9)
    ddr = DdrModel(memory, 8, latency=5, interval=1, seed=7, bad=(8 * 21,))
    first, second = run_stream(reader, ddr, [(0, 20), (1024, 8)], ready_rate=0.5)
    assert first[1] == 1 and len(first[0]) == 20
    assert second[1] == 0 and second[0] == expected_words(memory, 1024, 8, 16)


def test_a_run_of_no_words_is_done_at_once() -> None:
    reader = AxiStreamReader(data_width=64, word_width=64, depth=8, fifo_words=16)
    ddr = DdrModel(np.zeros(64, dtype=np.uint8), 8, latency=3, interval=1, seed=0)
    [(taken, error, cycles)] = run_stream(reader, ddr, [(0, 0)])
    assert taken == [] and not error and cycles == 0 and ddr.bursts == []


def test_a_fifo_smaller_than_a_burst_and_a_word_begun_is_refused() -> None:
    # 16 beats of two-beat words: 8 words, and one more for a word begun
    with pytest.raises(ValueError, match="must hold a burst of 16 beats and a word begun: 9"):
        check_fifo(2, 16, 8)
    check_fifo(2, 16, 9)


def run_back_to_back(reader: AxiStreamReader, ddr: DdrModel, runs: list[tuple[int, int]], *,
                     ready_rate: float = 1.0, seed: int = 0):
    """Start the runs one after the other as soon as each is taken (``run_ready``), while
    taking the words; return the words, the error flag and the cycles to the last word."""
    rng = np.random.default_rng(seed)
    outcome = {}

    async def testbench(ctx):
        cycle, started, taken = 0, 0, []
        while started < len(runs) or ctx.get(reader.busy):
            assert cycle < 50_000, f"stuck after {len(taken)} words"
            ddr.cycle(ctx, reader, cycle)
            if ctx.get(reader.rvalid):
                assert ctx.get(reader.rready), "the bus waited for the consumer"
            start = started < len(runs) and ctx.get(reader.run_ready)
            if start:
                ctx.set(reader.base, runs[started][0])
                ctx.set(reader.words, runs[started][1])
                started += 1
            ctx.set(reader.start, int(start))
            ready = rng.random() < ready_rate
            ctx.set(reader.word_ready, int(ready))
            if ready and ctx.get(reader.word_valid):
                taken.append(ctx.get(reader.word_data))
            await ctx.tick()
            cycle += 1
        outcome.update(words=taken, error=ctx.get(reader.error), cycles=cycle)

    sim = Simulator(reader)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return outcome


#: A pass's slice of each token's words: one 10-beat word (a 32-lane stream word) of a
#: row of 12 (the dim's chunks), for 64 tokens.
TOKENS, ROW_WORDS, WORD_BYTES = 64, 12, 80


def token_runs(base: int) -> list[tuple[int, int]]:
    return [(base + token * ROW_WORDS * WORD_BYTES, 1) for token in range(TOKENS)]


def test_runs_back_to_back_stream_in_order_with_a_pausing_consumer() -> None:
    memory = np.random.default_rng(8).integers(0, 256, 1 << 17, dtype=np.uint8)
    reader = AxiStreamReader(data_width=64, word_width=640, depth=4, fifo_words=4)
    ddr = DdrModel(memory, 8, latency=12, interval=1, seed=9)
    runs = token_runs(3 * WORD_BYTES)
    outcome = run_back_to_back(reader, ddr, runs, ready_rate=0.4, seed=9)
    assert not outcome["error"]
    assert outcome["words"] == [expected_words(memory, base, 1, WORD_BYTES)[0]
                                for base, _ in runs]


def test_runs_back_to_back_pay_the_latency_once() -> None:
    memory = np.random.default_rng(8).integers(0, 256, 1 << 17, dtype=np.uint8)
    latency, beats = 40, TOKENS * WORD_BYTES // 8
    runs = token_runs(0)
    reader = AxiStreamReader(data_width=64, word_width=640, depth=4, fifo_words=8)
    ddr = DdrModel(memory, 8, latency=latency, interval=1, seed=1, arready_rate=1.0,
                   rvalid_gap=0)
    outcome = run_back_to_back(reader, ddr, runs)
    assert len(outcome["words"]) == TOKENS
    # a run at a time would pay the latency for each of the 64 tokens (64 x 50 cycles);
    # back to back, once: then a beat a cycle
    assert outcome["cycles"] <= latency + beats + 4
