"""The stem tile buffer: a tile's k² tap runs from DDR as one stream, each beat in its tap's
bank, the memory's latency paid once a tile."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from stepvit.rtl.ddr_model import DdrModel, expected_words
from stepvit.rtl.stem_tiles import StemTileBuffer, StemTiles, tap_bank_depth

LANES = 3
WORD_BYTES = 8
BASE = 4096 - 8 * 20  # the weight image's address: tap 0's runs cross a 4 KB boundary
TILES = StemTiles(modules=(0, 0, 1), chunks=(0, 1, 0), firsts=(0, 3, 6), words=(3, 3, 5),
                  tap_offsets=tuple(8 * 16 * tap for tap in range(9)),
                  word_bytes=WORD_BYTES)


def fetch_tiles(ddr: DdrModel, order: list[int], bank_depth: int | None = None,
                dwell: int = 0):
    """Ask the buffer for the tiles of ``order`` in turn; return each tile's words per tap
    as the engine reads them, the cycles from the first request to the first ``have``, and
    the cycles in all. The engine holds each tile ``dwell`` cycles before it reads it."""
    buffer = StemTileBuffer(TILES, lanes=LANES, modules=2, t_max=1, bank_depth=bank_depth)
    read: list[list[list[int]]] = []
    first: dict[str, int] = {}

    async def testbench(ctx):
        cycle = 0

        async def step():
            nonlocal cycle
            ddr.cycle(ctx, buffer, cycle)
            if ctx.get(buffer.arvalid):
                first.setdefault("request", cycle)
            await ctx.tick()
            cycle += 1

        ctx.set(buffer.weights_base, BASE)
        ctx.set(buffer.mask, 0b11)
        ctx.set(buffer.enable, 1)
        for tile in order:
            ctx.set(buffer.want, tile)
            ctx.set(buffer.need, 1)
            while not ctx.get(buffer.have):
                await step()
            first.setdefault("have", cycle)
            await step()  # the take
            ctx.set(buffer.need, 0)
            for _ in range(dwell):  # the next tile's fetch meanwhile
                await step()
            taps: list[list[int]] = [[] for _ in range(TILES.taps)]
            for word in range(TILES.words[tile]):
                ctx.set(buffer.read_addr, word)
                await step()
                data = ctx.get(buffer.read_data)
                for tap in range(TILES.taps):
                    taps[tap].append(data >> (8 * LANES * tap) & ((1 << 8 * LANES) - 1))
            read.append(taps)
        first["end"] = cycle

    sim = Simulator(buffer)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return read, first["have"] - first["request"], first["end"]


def expected_tile(memory: np.ndarray, tile: int) -> list[list[int]]:
    """Tile ``tile``'s words per tap, their low ``8·lanes`` bits."""
    return [[word & ((1 << 8 * LANES) - 1) for word in expected_words(
        memory, BASE + offset + TILES.firsts[tile] * WORD_BYTES, TILES.words[tile], WORD_BYTES)]
        for offset in TILES.tap_offsets]


@pytest.mark.parametrize("dwell", [0, 100])
@pytest.mark.parametrize("bank_depth", [None, 10, 6, 5])
@pytest.mark.parametrize("order", [[0, 1, 2, 0], [2, 0, 1], [0, 2, 2, 1]])
def test_every_tap_bank_holds_its_own_run(order, bank_depth, dwell) -> None:
    # a memory of two tiles (10 words), or of fewer: tiles 0 and 1 (3 words) fit beside
    # each other in 6, tile 2 (5) beside none; in 5 no two tiles do. With a dwell the next
    # tile's fetch lands while the engine still reads its own
    memory = np.random.default_rng(12).integers(0, 256, 1 << 13, dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=len(order))
    read, _, _ = fetch_tiles(ddr, order, bank_depth, dwell)
    assert read == [expected_tile(memory, tile) for tile in order]


def test_a_memory_shorter_than_two_tiles_costs_a_fetch_where_they_do_not_fit() -> None:
    # the engine dwells on tile 1 (3 words), then wants tile 2 (5): in 10 words tile 2 was
    # fetched beside tile 1 meanwhile; in 6 its fetch waited for the engine to leave tile 1
    memory = np.random.default_rng(14).integers(0, 256, 1 << 13, dtype=np.uint8)

    def cycles(bank_depth: int) -> int:
        ddr = DdrModel(memory, 8, latency=40, interval=1, seed=0, arready_rate=1,
                       rvalid_gap=0)
        read, _, total = fetch_tiles(ddr, [0, 1, 2], bank_depth, dwell=100)
        assert read == [expected_tile(memory, tile) for tile in (0, 1, 2)]
        return total

    assert cycles(6) >= cycles(10) + 40


def test_the_tap_memory_is_one_tile_where_that_takes_less_block_ram() -> None:
    # Spikformer-4-384's RPE: 384 words a tap of 8 bits a lane
    assert tap_bank_depth(384, 4) == 512  # 0.5 RAMB36 rather than 1
    assert tap_bank_depth(384, 5) == 512  # 1 rather than 1.5
    assert tap_bank_depth(384, 8) == 512  # 1 rather than 2
    assert tap_bank_depth(192, 8) == 384  # 1 either way: two tiles
    assert tap_bank_depth(5, 3) == 10  # distributed RAM either way
    with pytest.raises(ValueError, match="cannot hold a tile of 5"):
        StemTileBuffer(TILES, lanes=LANES, modules=2, t_max=1, bank_depth=4)


def test_a_tile_pays_the_latency_once() -> None:
    # 9 taps of 3 words: one run after the other took 9 x (40 + 3) cycles and more
    memory = np.random.default_rng(13).integers(0, 256, 1 << 13, dtype=np.uint8)
    ddr = DdrModel(memory, 8, latency=40, interval=1, seed=0, arready_rate=1, rvalid_gap=0)
    read, cycles, _ = fetch_tiles(ddr, [0])
    assert read == [expected_tile(memory, 0)]
    assert cycles <= 40 + TILES.taps * TILES.words[0] + 4
