"""The weight image (layout, packing, checksum) and its loader against a DDR model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from stepvit.rtl.axi_reader import BOUNDARY, BURST_INCR
from stepvit.rtl.ddr_model import DdrModel
from stepvit.rtl.weight_image import (
    ImageMemory,
    image_checksum,
    image_layout,
    pack_image,
    unpack_image,
)
from stepvit.rtl.weight_loader import WeightLoader, connect_write_port

#: Odd widths and depths: a threshold-like 20-bit word, a beat, a word of a beat and a
#: bit over two 64-bit beats (100 bits), and a 256-bit weight word (32 lanes of int8).
MEMORIES = (ImageMemory("thresholds", 20, 37), ImageMemory("spike_values", 64, 50),
            ImageMemory("biases", 100, 23), ImageMemory("weights", 256, 30))
#: Bytes of the DDR model's memory.
DDR_BYTES = 1 << 14


def reference_checksum(image: bytes) -> int:
    """The checksum's definition, word by word (image_checksum computes it with numpy)."""
    total_a = total_b = 0
    for start in range(0, len(image), 4):
        total_a = (total_a + int.from_bytes(image[start:start + 4], "little")) % 2**32
        total_b = (total_b + total_a) % 2**32
    return total_b << 32 | total_a


def random_contents(memories, seed: int, *, full: bool = False) -> list[list[int]]:
    """Random words for each memory (some memories short of their depth unless ``full``)."""
    rng = np.random.default_rng(seed)
    contents = []
    for memory in memories:
        count = memory.depth if full else int(rng.integers(memory.depth // 2, memory.depth + 1))
        contents.append([int.from_bytes(rng.bytes((memory.width + 7) // 8), "little")
                         % (1 << memory.width) for _ in range(count)])
    return contents


def padded(memories, contents) -> list[list[int]]:
    return [list(words) + [0] * (memory.depth - len(words))
            for memory, words in zip(memories, contents)]


# --- the image ---

def test_the_layout_puts_whole_beat_words_back_to_back() -> None:
    layout = image_layout(MEMORIES, 64)
    assert [(r.offset, r.beats_per_word, r.word_bytes, r.size) for r in layout.regions] == [
        (0, 1, 8, 296), (296, 1, 8, 400), (696, 2, 16, 368), (1064, 4, 32, 960)]
    assert layout.total_bytes == 2024 and layout.total_beats == 253
    wide = image_layout(MEMORIES, 128)
    assert [(r.offset, r.beats_per_word) for r in wide.regions] == [
        (0, 1), (592, 1), (1392, 1), (1760, 2)]
    assert all(r.offset % 16 == 0 for r in wide.regions) and wide.total_bytes == 2720


def test_a_word_is_little_endian_in_its_beats_and_the_rest_is_zero() -> None:
    memories = (ImageMemory("a", 20, 3), ImageMemory("b", 100, 2))
    image = pack_image(memories, [[0xABCDE], [(1 << 99) | 0x0102]], 64)
    assert len(image) == 3 * 8 + 2 * 16
    assert image[:8] == bytes([0xDE, 0xBC, 0x0A, 0, 0, 0, 0, 0])
    assert image[8:24] == bytes(16)  # the words not given, zero
    assert image[24:40] == bytes([0x02, 0x01]) + bytes(10) + bytes([0x08, 0, 0, 0])  # bit 99
    assert image[40:] == bytes(16)
    contents = random_contents(MEMORIES, 1)
    assert unpack_image(MEMORIES, pack_image(MEMORIES, contents, 64), 64) == padded(
        MEMORIES, contents)


@pytest.mark.parametrize("contents, match", [
    ([[1 << 20], [], [], []], r"memory thresholds: word 0 is 1048576, outside 0 \.\. 2\*\*20"),
    ([[], [], [-1], []], r"memory biases: word 0 is -1, outside"),
    ([[0] * 38, [], [], []], r"memory thresholds: 38 words given, more than its depth of 37"),
    ([[], [], []], r"contents has 3 entries for 4 memories"),
])
def test_a_bad_content_is_refused_by_name(contents, match) -> None:
    with pytest.raises(ValueError, match=match):
        pack_image(MEMORIES, contents, 64)


@pytest.mark.parametrize("build, match", [
    (lambda: image_layout(MEMORIES, 48), "AXI width"),
    (lambda: image_layout([], 64), "at least one memory"),
    (lambda: image_layout([ImageMemory("a", 8, 1), ImageMemory("a", 9, 1)], 64),
     "unique: a repeated"),
    (lambda: ImageMemory("w", 0, 4), "width must be at least 1"),
    (lambda: ImageMemory("w", 8, 0), "depth must be at least 1"),
    (lambda: ImageMemory("no name", 8, 4), "identifier"),
    (lambda: image_checksum(bytes(6)), "whole number of 32-bit words"),
    (lambda: unpack_image(MEMORIES, bytes(8), 64), "8 bytes; the layout has 2024"),
])
def test_a_bad_layout_or_image_is_refused(build, match) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_the_checksum_is_its_definition_and_sees_order_and_bytes() -> None:
    words = [1, 2, 3]
    image = b"".join(w.to_bytes(4, "little") for w in words)
    assert image_checksum(image) == (1 + 3 + 6) << 32 | 6
    rng = np.random.default_rng(3)
    for size in (4, 8, 1000, 4096):
        image = rng.bytes(size)
        assert image_checksum(image) == reference_checksum(image)
    swapped = image[4:8] + image[:4] + image[8:]
    assert swapped != image and image_checksum(swapped) != image_checksum(image)
    assert image_checksum(swapped) & 0xFFFFFFFF == image_checksum(image) & 0xFFFFFFFF  # A same
    flipped = bytearray(image)
    flipped[777] ^= 0x10
    assert image_checksum(bytes(flipped)) != image_checksum(image)
    assert image_checksum(bytes(1 << 12)) == 0


# --- the loader ---

@dataclass
class Load:
    """What one load did: the words written per memory, its flags, checksum and cycles."""

    writes: dict[str, list[tuple[int, int]]]
    error: int
    done: int
    checksum: int
    cycles: int


def run_loads(loader: WeightLoader, ddr: DdrModel, bases: list[int]) -> list[Load]:
    """Start a load at each base in turn, running each until ``busy`` drops."""
    names = [region.memory.name for region in loader.layout.regions]
    results = []

    async def testbench(ctx):
        cycle = 0
        for base in bases:
            ctx.set(loader.base, base)
            ctx.set(loader.start, 1)
            await ctx.tick()
            ctx.set(loader.start, 0)
            cycle += 1
            begun, writes = cycle, {name: [] for name in names}
            assert ctx.get(loader.done) == 0
            while ctx.get(loader.busy):
                ddr.cycle(ctx, loader, cycle)
                for name in names:
                    port = loader.write_port(name)
                    if ctx.get(port.write_en):
                        writes[name].append((ctx.get(port.write_addr),
                                             ctx.get(port.write_data)))
                await ctx.tick()
                cycle += 1
            ctx.set(loader.rvalid, 0)
            results.append(Load(writes, ctx.get(loader.error), ctx.get(loader.done),
                                ctx.get(loader.checksum), cycle - begun))

    sim = Simulator(loader)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return results


def ddr_with(image: bytes, base: int) -> np.ndarray:
    memory = np.random.default_rng(base).integers(0, 256, DDR_BYTES, dtype=np.uint8)
    memory[base:base + len(image)] = np.frombuffer(image, dtype=np.uint8)
    return memory


@pytest.mark.parametrize("data_width, max_burst, base, latency, interval", [
    (64, 16, BOUNDARY - 8 * 200, 12, 1),     # the spike values' region crosses 4 KB
    (64, 16, 2 * BOUNDARY - 8 * 140, 30, 2),  # the biases' region crosses, a slower memory
    (128, 8, BOUNDARY - 16 * 100, 7, 1),     # 128-bit beats, the weights' region crosses
])
def test_every_memory_gets_its_contents_and_the_checksum_is_the_images(
        data_width, max_burst, base, latency, interval) -> None:
    contents = random_contents(MEMORIES, data_width + base)
    image = pack_image(MEMORIES, contents, data_width)
    layout = image_layout(MEMORIES, data_width)
    crossing = [region.memory.name for region in layout.regions
                if (base + region.offset) // BOUNDARY
                != (base + region.offset + region.size - 1) // BOUNDARY]
    assert len(crossing) == 1  # a region crosses a 4 KB boundary
    beat_bytes = data_width // 8
    ddr = DdrModel(ddr_with(image, base), beat_bytes, latency=latency, interval=interval,
                   seed=base)
    loader = WeightLoader(MEMORIES, data_width=data_width, max_burst=max_burst)
    [load] = run_loads(loader, ddr, [base])
    assert not load.error and load.done
    for memory, words in zip(MEMORIES, padded(MEMORIES, contents)):
        assert load.writes[memory.name] == list(enumerate(words)), memory.name
    assert load.checksum == image_checksum(image)
    # one run of bursts the bus allows, from the base over the whole image
    address = base
    for start, arlen, arsize, burst in ddr.bursts:
        assert start == address and burst == BURST_INCR and 1 << arsize == beat_bytes
        assert 1 <= arlen + 1 <= max_burst
        assert start // BOUNDARY == (start + (arlen + 1) * beat_bytes - 1) // BOUNDARY
        address += (arlen + 1) * beat_bytes
    assert address == base + len(image)


def test_the_memories_read_back_what_the_image_holds() -> None:
    memories = (ImageMemory("narrow", 12, 9), ImageMemory("wide", 192, 5))
    contents = random_contents(memories, 8, full=True)
    image = pack_image(memories, contents, 64)
    base = BOUNDARY - 8 * 5
    loader = WeightLoader(memories, data_width=64, max_burst=4)
    m = Module()
    m.submodules.loader = loader
    reads = []
    for memory in memories:
        store = Memory(shape=memory.width, depth=memory.depth, init=[])
        m.submodules[memory.name] = store
        connect_write_port(m, loader.write_port(memory.name), store.write_port())
        reads.append(store.read_port())
    ddr = DdrModel(ddr_with(image, base), 8, latency=5, interval=1, seed=9)
    read_back = []

    async def testbench(ctx):
        ctx.set(loader.base, base)
        ctx.set(loader.start, 1)
        await ctx.tick()
        ctx.set(loader.start, 0)
        cycle = 1
        while ctx.get(loader.busy):
            ddr.cycle(ctx, loader, cycle)
            await ctx.tick()
            cycle += 1
        ctx.set(loader.rvalid, 0)
        for memory, port in zip(memories, reads):
            words = []
            for address in range(memory.depth):
                ctx.set(port.addr, address)
                await ctx.tick()
                words.append(ctx.get(port.data))
            read_back.append(words)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert read_back == contents


def test_a_load_pays_the_latency_once_and_takes_a_beat_a_cycle() -> None:
    latency = 40
    contents = random_contents(MEMORIES, 4, full=True)
    image = pack_image(MEMORIES, contents, 64)
    beats = len(image) // 8
    ddr = DdrModel(ddr_with(image, 0), 8, latency=latency, interval=1, seed=4,
                   arready_rate=1.0, rvalid_gap=0.0)
    [load] = run_loads(WeightLoader(MEMORIES), ddr, [0])
    assert load.done and load.checksum == image_checksum(image)
    # from the start to done: the request goes out the cycle after the start, its first
    # beat comes the latency later, then a beat a cycle across every burst and memory, and
    # the checksum's two pipeline cycles; one burst at a time would pay the latency 16 times
    assert beats == 253 and load.cycles == latency + beats + 2


def test_an_error_response_is_flagged_and_the_next_load_starts_clean() -> None:
    base, other = 256, 8192 + 64
    contents = random_contents(MEMORIES, 5)
    image = pack_image(MEMORIES, contents, 64)
    memory = ddr_with(image, base)
    memory[other:other + len(image)] = np.frombuffer(image, dtype=np.uint8)
    bad = base + image_layout(MEMORIES, 64).regions[2].offset + 8 * 5
    ddr = DdrModel(memory, 8, latency=6, interval=1, seed=6, bad=(bad,))
    first, second = run_loads(WeightLoader(MEMORIES), ddr, [base, other])
    assert first.error == 1 and first.done  # every beat taken: the bus is left clean
    assert [len(first.writes[m.name]) for m in MEMORIES] == [m.depth for m in MEMORIES]
    assert second.error == 0 and second.done
    assert second.checksum == image_checksum(image)
    for memory_, words in zip(MEMORIES, padded(MEMORIES, contents)):
        assert second.writes[memory_.name] == list(enumerate(words))


def test_a_corrupted_byte_is_a_wrong_word_and_a_wrong_checksum() -> None:
    base = 512
    contents = random_contents(MEMORIES, 7, full=True)
    image = pack_image(MEMORIES, contents, 64)
    weights = image_layout(MEMORIES, 64).regions[3]
    corrupted = bytearray(image)
    corrupted[weights.offset + 5 * weights.word_bytes + 17] ^= 0x04  # word 5 of the weights
    ddr = DdrModel(ddr_with(bytes(corrupted), base), 8, latency=9, interval=1, seed=7)
    [load] = run_loads(WeightLoader(MEMORIES), ddr, [base])
    got = {name: [word for _, word in writes] for name, writes in load.writes.items()}
    wrong = [(name, i) for memory, words in zip(MEMORIES, contents)
             for name in [memory.name] for i, word in enumerate(words)
             if got[name][i] != word]
    assert wrong == [("weights", 5)]
    assert got["weights"][5] == contents[3][5] ^ (0x04 << 8 * 17)
    assert load.checksum != image_checksum(image)
    assert load.checksum == image_checksum(bytes(corrupted))
