"""The AXI read arbiter: two burst readers on one port against the DDR model."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from stepvit.rtl.axi_arbiter import READ_PORTS, AxiReadArbiter
from stepvit.rtl.axi_reader import BOUNDARY, BURST_INCR, AxiBurstReader
from stepvit.rtl.ddr_model import DdrModel, expected_words


def build(data_width: int, word_width: int, max_burst: int, depth: int):
    """Return a module of two readers behind an arbiter, the readers and the arbiter."""
    m = Module()
    m.submodules.arbiter = arbiter = AxiReadArbiter(data_width=data_width, depth=depth)
    readers = []
    for index in range(2):
        reader = AxiBurstReader(data_width=data_width, word_width=word_width, depth=512,
                                max_burst=max_burst)
        m.submodules[f"reader{index}"] = reader
        for name, flow in READ_PORTS.items():
            inner, outer = getattr(reader, name), arbiter.port(index, name)
            m.d.comb += outer.eq(inner) if flow == Out else inner.eq(outer)
        readers.append(reader)
    return m, readers, arbiter


def run_pair(runs: list[list[tuple[int, int]]], ddr: DdrModel, *, data_width: int = 64,
             word_width: int = 64, max_burst: int = 16, depth: int = 4, seed: int = 0,
             pause: int = 30):
    """Give reader ``i`` the runs ``runs[i]`` in turn, each after a random pause.

    Returns each reader's words per run (in arrival order) and the bus's record: per
    cycle ``(arvalid, arready, araddr, arlen)`` and the owners' beats in order.
    """
    top, readers, arbiter = build(data_width, word_width, max_burst, depth)
    rng = np.random.default_rng(seed)
    got = [[[] for _ in reader_runs] for reader_runs in runs]
    record = []

    async def testbench(ctx):
        cycle = 0
        queue = [list(enumerate(reader_runs)) for reader_runs in runs]
        wait = [int(rng.integers(0, pause)) for _ in runs]
        current = [None, None]
        while any(queue) or any(c is not None for c in current):
            ddr.cycle(ctx, arbiter, cycle)
            for index, reader in enumerate(readers):
                ctx.set(reader.start, 0)
                if current[index] is not None and ctx.get(reader.write_en):
                    got[index][current[index]].append(ctx.get(reader.write_data))
                if current[index] is not None and not ctx.get(reader.busy):
                    current[index] = None
                    wait[index] = int(rng.integers(0, pause))
                if current[index] is None and queue[index]:
                    if wait[index]:
                        wait[index] -= 1
                    else:
                        run, (base, words) = queue[index].pop(0)
                        ctx.set(reader.base, base)
                        ctx.set(reader.words, words)
                        ctx.set(reader.start, 1)
                        current[index] = run
            record.append((ctx.get(arbiter.arvalid), ctx.get(arbiter.arready),
                           ctx.get(arbiter.araddr), ctx.get(arbiter.arlen),
                           ctx.get(arbiter.rvalid), ctx.get(arbiter.rready),
                           ctx.get(arbiter.rlast),
                           tuple(ctx.get(arbiter.port(i, "rvalid")) for i in range(2))))
            await ctx.tick()
            cycle += 1
            assert cycle < 20000, "the readers never finished"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return got, record


def check_bus(record, ddr: DdrModel, beat_bytes: int, max_burst: int) -> None:
    """AXI's rules on the shared port: a request held unchanged until taken, bursts
    INCR within 4 KB, one owner per beat, no beat lost."""
    for (valid, ready, address, length, *_), after in zip(record, record[1:]):
        if valid and not ready:
            assert after[0] == 1 and after[2:4] == (address, length)
    for address, arlen, arsize, burst in ddr.bursts:
        assert burst == BURST_INCR and 1 << arsize == beat_bytes and arlen < max_burst
        assert address // BOUNDARY == (address + (arlen + 1) * beat_bytes - 1) // BOUNDARY
    beats = 0
    for _, _, _, _, rvalid, rready, _, owners in record:
        assert sum(owners) <= rvalid
        if rvalid and rready:
            assert sum(owners) == 1
        beats += rvalid and rready
    assert beats == sum(arlen + 1 for _, arlen, _, _ in ddr.bursts)


@pytest.mark.parametrize("word_width, max_burst, depth, seed", [
    (64, 16, 4, 0),
    (128, 4, 2, 1),      # 2-beat words, short bursts, two owners outstanding
    (64, 8, 1, 2),       # one burst at a time
])
def test_two_readers_get_every_word_of_their_overlapping_runs(word_width, max_burst, depth,
                                                             seed) -> None:
    memory = np.random.default_rng(seed).integers(0, 256, 1 << 14, dtype=np.uint8)
    word_bytes = word_width // 8
    runs = [[(0, 40), (4096 - 8 * 10, 25), (800, 3)],     # one across a 4 KB boundary
            [(64, 37), (0, 1), (4096 - 8 * 12, 30), (8, 12)]]
    ddr = DdrModel(memory, 8, latency=7, interval=1, seed=seed, arready_rate=0.6,
                   rvalid_gap=0.3)
    got, record = run_pair(runs, ddr, word_width=word_width, max_burst=max_burst,
                           depth=depth, seed=seed)
    for reader_runs, reader_got in zip(runs, got):
        for (base, words), words_got in zip(reader_runs, reader_got):
            assert words_got == expected_words(memory, base, words, word_bytes)
    check_bus(record, ddr, 8, max_burst)
    # the two readers' bursts interleave on the port (both were granted while both asked)
    owners = [o.index(1) for *_, o in record if any(o)]
    assert 0 < sum(owners) < len(owners)
    assert sum(a != b for a, b in zip(owners, owners[1:])) >= 2


def test_round_robin_alternates_bursts_while_both_ask() -> None:
    memory = np.random.default_rng(5).integers(0, 256, 1 << 13, dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=20, interval=1, seed=5, arready_rate=1.0,
                   rvalid_gap=0.0)
    got, record = run_pair([[(0, 64)], [(2048, 48)]], ddr, max_burst=8, depth=8, seed=7,
                           pause=1)
    assert got == [[expected_words(memory, 0, 64, 8)], [expected_words(memory, 2048, 48, 8)]]
    check_bus(record, ddr, 8, 8)
    # both start at once: reader 0's eight bursts and reader 1's six alternate, then
    # reader 0 has the port alone
    owners = [int(address >= 2048) for address, *_ in ddr.bursts]
    assert owners == [0, 1] * 6 + [0, 0]


def test_a_lone_reader_keeps_the_port() -> None:
    memory = np.random.default_rng(6).integers(0, 256, 1 << 13, dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=6)
    got, record = run_pair([[(512, 100)], []], ddr, seed=3)
    assert got[0] == [expected_words(memory, 512, 100, 8)]
    check_bus(record, ddr, 8, 16)
    assert all(not o[1] for *_, o in record)
