"""The double-buffered weight tile: the next tile fills while the compute reads this one."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.ddr_model import DdrModel, expected_words
from stepvit.rtl.tile_buffer import TileBuffer


def run_tiles(buffer: TileBuffer, ddr: DdrModel, tiles: list[tuple[int, int]],
              compute_per_word: int):
    """Fetch ``tiles`` one after the other while a compute reads each whole tile (one word
    per ``compute_per_word`` cycles), fetching the next as soon as it takes one; return the
    words it read per tile and the cycles of the whole run."""
    read_tiles: list[list[int]] = []

    async def testbench(ctx):
        cycle, fetched, pending_read = 0, 0, None
        current: list[int] | None = None
        position = wait = 0
        words = 0
        while len(read_tiles) < len(tiles):
            ddr.cycle(ctx, buffer, cycle)
            # the next fetch, as soon as the free bank is free
            can_fetch = not ctx.get(buffer.fetching) and not ctx.get(buffer.filled)
            if fetched < len(tiles) and can_fetch and not ctx.get(buffer.fetch):
                base, count = tiles[fetched]
                ctx.set(buffer.base, base)
                ctx.set(buffer.words, count)
                ctx.set(buffer.fetch, 1)
                fetched += 1
            else:
                ctx.set(buffer.fetch, 0)
            if pending_read is not None:  # the word asked for in the cycle before
                current.append(ctx.get(buffer.read_data))
                pending_read = None
            ctx.set(buffer.swap, 0)
            if current is None or (position == words and pending_read is None):
                if current is not None:
                    read_tiles.append(current)
                    current = None
                if ctx.get(buffer.filled) and len(read_tiles) < len(tiles):
                    ctx.set(buffer.swap, 1)
                    current, position, wait = [], 0, 0
                    words = tiles[len(read_tiles)][1]
            elif position < words:
                if wait == 0:
                    ctx.set(buffer.read_addr, position)
                    pending_read, position, wait = position, position + 1, compute_per_word - 1
                else:
                    wait -= 1
            await ctx.tick()
            cycle += 1
        read_tiles.append(cycle)

    sim = Simulator(buffer)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return read_tiles[:-1], read_tiles[-1]


@pytest.mark.parametrize("compute_per_word", [1, 6])
def test_every_tile_is_read_as_fetched(compute_per_word) -> None:
    memory = np.random.default_rng(3).integers(0, 256, 1 << 15, dtype=np.uint8)
    buffer = TileBuffer(data_width=64, word_width=128, depth=48, max_burst=16)
    tiles = [(0, 48), (4096 - 64, 40), (8192, 7), (12000, 48)]
    ddr = DdrModel(memory, 8, latency=30, interval=1, seed=compute_per_word)
    read, _ = run_tiles(buffer, ddr, tiles, compute_per_word)
    assert read == [expected_words(memory, base, words, 16) for base, words in tiles]


def test_a_fetch_hides_behind_a_longer_compute() -> None:
    memory = np.random.default_rng(4).integers(0, 256, 1 << 16, dtype=np.uint8)
    buffer = TileBuffer(data_width=64, word_width=64, depth=64, max_burst=16)
    tiles = [(64 * 8 * i, 64) for i in range(8)]
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=5)
    _, cycles = run_tiles(buffer, ddr, tiles, compute_per_word=4)
    # each tile computes 256 cycles and fetches in about 40 + 64 x 1.4: after the first
    # fetch, the fetches overlap the compute (one bank at a time: 8 x (40 + 64) + 8 x 256
    # cycles without it)
    assert cycles < (40 + 64 * 1.5) + 8 * (256 + 8)
