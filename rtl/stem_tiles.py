"""The chunk-major stem's tap weights streamed from DDR during compute: its *stem tiles*.

A chunk-major stem engine (``StemPlan(chunk_major=True)``) runs module by module, chunk by
chunk, every step inside, and reads only one ``(module, chunk)``'s tap words at a time:
in each of the ``k²`` tap memories of the weight image (``stem_tap0`` ..), the module's
``Cin`` words from :func:`~stepvit.rtl.stem_conv.tile_bases`, one run. In a design that
streams its weights (``StepvitCore(stream_weights=True, stem_chunk_major=True)``) the
engine keeps no tap memory: a *stem tile* is those ``k²`` runs, and a
:class:`StemTileBuffer` holds two of them, one per tap in a bank pair (``2·Cin_max`` words
of ``8·lanes`` bits per tap), the one the engine computes with and the next one, fetched
over AXI while the engine computes.

The fetch runs ahead in tile order, round and round, and skips the tiles of a module the
live masks leave out at every step (as the core's tile fetch does); it is a prediction:
the filled bank carries its tile's index, and the engine takes it only if it is the tile
its scatter wants, else discards it and seeks its own. A tile once taken stays the
engine's until the next is taken, so the scatters of one ``(module, chunk)`` at every step
read the one tile; the engine waits (``waiting``, counted in ``stalls``) only while the
tile a scatter wants is neither its own nor filled.

Why a bank pair per tap rather than one memory ``k²`` taps wide: every tap is written by
its own run and read at the same address as the others, and one pair per tap keeps each
memory ``8·lanes`` bits wide and ``2·Cin_max`` deep, the shape the step-major tap ROMs
had (``k²`` memories); one wide memory would need byte-lane write enables and save at
most a rounding of block RAM per tap (:func:`stem_tile_shapes` counts them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import AXI_READ_MEMBERS, forward_axi_read
from stepvit.rtl.axi_runs import AxiRunsReader
from stepvit.rtl.ram_style import ram_attrs
from stepvit.rtl.stem_conv import tile_bases
from stepvit.rtl.stem_plan import StemPlan
from stepvit.rtl.tables import table
from stepvit.rtl.tile_buffer import tile_sequence
from stepvit.rtl.weight_image import ImageMemory, image_layout

#: Weight-image names of the stem's tap memories start so (``stem_tap0`` ..).
_TAP_PREFIX = "stem_tap"


@dataclass(frozen=True)
class StemTiles:
    """A chunk-major stem's tiles in the weight image, in the order its passes use them.

    Attributes
    ----------
    modules, chunks : tuple of int
        Each tile's ``(module, chunk)``.
    firsts : tuple of int
        Each tile's first word in every tap memory (:func:`tile_bases`).
    words : tuple of int
        Each tile's words per tap (its module's input channels).
    tap_offsets : tuple of int
        The byte offset of each tap memory in the weight image.
    word_bytes : int
        Bytes of one tap word in the image (whole beats).
    """

    modules: tuple[int, ...]
    chunks: tuple[int, ...]
    firsts: tuple[int, ...]
    words: tuple[int, ...]
    tap_offsets: tuple[int, ...]
    word_bytes: int

    @property
    def depth(self) -> int:
        """Words of the largest tile per tap: what one bank of a tap holds."""
        return max(self.words, default=1)

    @property
    def taps(self) -> int:
        """Tap memories: the largest kernel's ``k²``."""
        return len(self.tap_offsets)

    def index(self, module: int, chunk: int) -> int:
        """Return the index of ``(module, chunk)``'s tile."""
        return next(i for i, key in enumerate(zip(self.modules, self.chunks))
                    if key == (module, chunk))

    @property
    def bytes_per_image(self) -> int:
        """Bytes an image's stem reads from DDR: every tile once."""
        return sum(self.words) * self.taps * self.word_bytes


def stem_tiles(plan: StemPlan, memories: Sequence[ImageMemory], data_width: int) -> StemTiles:
    """Return the tiles of the chunk-major stem ``plan`` in an image of ``memories``.

    Parameters
    ----------
    plan : StemPlan
        A chunk-major stem plan.
    memories : sequence of ImageMemory
        The design's image memories, which hold ``stem_tap0`` ..
    data_width : int
        Bits of an AXI beat.
    """
    if not plan.chunk_major:
        raise ValueError("stem tiles need a chunk-major stem plan")
    regions = [r for r in image_layout(memories, data_width).regions
               if r.memory.name.startswith(_TAP_PREFIX)]
    regions.sort(key=lambda r: int(r.memory.name[len(_TAP_PREFIX):]))
    channels = [stage.in_shape[0] for stage in plan.stages]
    chunks = [plan.chunks(index) for index in range(len(plan.stages))]
    bases = tile_bases(channels, chunks)
    keys = [(module, chunk) for module in range(len(plan.stages))
            for chunk in range(chunks[module])]
    return StemTiles(modules=tuple(k[0] for k in keys), chunks=tuple(k[1] for k in keys),
                     firsts=tuple(bases[mod][chunk] for mod, chunk in keys),
                     words=tuple(channels[mod] for mod, _ in keys),
                     tap_offsets=tuple(r.offset for r in regions),
                     word_bytes=regions[0].word_bytes)


def stem_tile_shapes(tiles: StemTiles, lanes: int) -> list[tuple[int, int]]:
    """Return the ``(width, depth)`` of the buffer's memories: one per tap."""
    return [(8 * lanes, tap_bank_depth(tiles.depth, lanes))] * tiles.taps


def tap_bank_depth(tile_words: int, lanes: int) -> int:
    """Return the words of each tap's memory in a buffer of tiles of at most ``tile_words``.

    Two whole tiles (``2·tile_words``) unless a memory of fewer words, the smallest power
    of two that holds one tile, takes less block RAM (by
    :func:`~stepvit.rtl.sizing.memory_bram36`): Spikformer-4-384's RPE reads 384 words a
    tap, and 768 words of 56 to 72 bits take two RAMB36 where 512 take one (in 512 x 72).
    Then two tiles share the memory only where their words fit together, and the next
    tile's fetch otherwise waits until the engine has left the one it holds
    (:class:`StemTileBuffer`).
    """
    # (imported here: the sizing model's modules import the designs')
    from stepvit.rtl.sizing import memory_bram36

    whole, one = 2 * tile_words, 1 << max(tile_words - 1, 0).bit_length()
    width = 8 * lanes
    return one if memory_bram36(width, one) < memory_bram36(width, whole) else whole


class StemTileBuffer(wiring.Component):
    """Two stem tiles in a memory per tap: the engine's and the next, filled over AXI.

    Each tap's memory holds ``bank_depth`` words (:func:`tap_bank_depth`); the engine's
    tile sits at one end of it and the next fills from the other, so the two share it where
    their words fit together. Where they do not (a memory of fewer than two of the largest
    tiles), the next tile's fetch waits until the engine wants another tile than its own,
    which it then forgets: the engine reads tiles in order, and never its own again.

    Parameters
    ----------
    tiles : StemTiles
        The tiles and where they are.
    lanes : int
        The stem's lanes (a tap word is ``8·lanes`` bits).
    modules, t_max : int
        The stem's modules and steps (the width of ``mask``).
    data_width, max_burst, addr_width : int
        As :class:`~stepvit.rtl.axi_runs.AxiRunsReader`'s.
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed in UltraRAM or LUTs, by its names (the stem's
        with ``stem.`` before), and their ``ram_style`` (:mod:`stepvit.rtl.ram_style`).
        Default: none.
    bank_depth : int, optional
        Words of each tap's memory, at least the largest tile's. Default
        :func:`tap_bank_depth`.

    Members
    -------
    weights_base : In(32)
        The weight image's byte address.
    enable : In(1)
        The image is loaded: fetch (low: end the fetch under way, forget every tile, start
        again from the first).
    idle : Out(1)
        No fetch is under way.
    mask : In(modules · t_max)
        The live mask rows: a module masked at every step needs no tile.
    need, want : In
        The engine's pass is a scatter that reads tile ``want``.
    have : Out(1)
        The engine's tile is ``want`` (or is taken this cycle): the scatter may run.
    waiting : Out(1)
        ``need`` and not ``have``.
    stalls : Out(32)
        Cycles ``waiting`` since reset (wraps).
    read_addr : In(range(depth))
        The word of the engine's tile every tap reads; ``read_data`` has them a cycle later.
    read_data : Out(taps · 8 · lanes)
        Tap ``i``'s word in bits ``8·lanes·i ..``.
    arvalid .. rlast : the reader's AXI read channels
    """

    def __init__(self, tiles: StemTiles, *, lanes: int, modules: int, t_max: int,
                 data_width: int = 64, max_burst: int = 16, addr_width: int = 32,
                 ram_styles: Mapping[str, str] | None = None,
                 bank_depth: int | None = None) -> None:
        self._tiles, self._lanes = tiles, lanes
        self.bank_depth = bank_depth or tap_bank_depth(tiles.depth, lanes)
        if self.bank_depth < tiles.depth:
            raise ValueError(f"a tap memory of {self.bank_depth} words cannot hold a tile of "
                             f"{tiles.depth}")
        self._ram_styles = dict(ram_styles or {})
        self._modules, self._t_max = modules, t_max
        self._reader = AxiRunsReader(runs=tiles.taps, data_width=data_width,
                                     word_width=tiles.word_bytes * 8, depth=tiles.depth,
                                     max_burst=max_burst, addr_width=addr_width)
        reader = self._reader.signature.members
        count = len(tiles.words)
        super().__init__({
            "weights_base": In(32),
            "enable": In(1),
            "idle": Out(1),
            "mask": In(max(modules * t_max, 1)),
            "need": In(1),
            "want": In(range(max(count, 2))),
            "have": Out(1),
            "waiting": Out(1),
            "stalls": Out(32),
            "read_addr": In(range(max(tiles.depth, 2))),
            "read_data": Out(tiles.taps * 8 * lanes),
            **{name: reader[name] for name in
               AXI_READ_MEMBERS},
        })

    def elaborate(self, platform: object) -> Module:
        """Build the bank pairs, the fetch of a tile's taps in one stream and the take."""
        m = Module()
        tiles, width = self._tiles, 8 * self._lanes
        m.submodules.reader = reader = self._reader
        forward_axi_read(m, self, reader)
        count = len(tiles.words)
        tile_range = range(max(count, 2))
        bank_depth = self.bank_depth
        words_range = range(bank_depth + 1)
        current, current_valid = Signal(tile_range), Signal()
        # the engine's tile: its first word and words; the filling one's first word
        current_base, current_words = Signal(range(bank_depth)), Signal(words_range)
        fill_base = Signal(range(bank_depth))
        started, filled, issue = Signal(), Signal(), Signal()
        reads = []
        for index in range(tiles.taps):
            bank = Memory(shape=unsigned(width), depth=bank_depth, init=[],
                          attrs=ram_attrs(self._ram_styles, f"stem.tap{index}"))
            m.submodules[f"tap{index}"] = bank
            write, read = bank.write_port(), bank.read_port()
            m.d.comb += [write.addr.eq(fill_base + reader.write_addr),
                         write.data.eq(reader.write_data[:width]),
                         write.en.eq(reader.write_en & (reader.write_run == index)),
                         read.addr.eq(current_base + self.read_addr)]
            reads.append(read.data)
        m.d.comb += self.read_data.eq(Cat(*reads))

        # which tiles the live masks need: a module's if it runs at some step
        t_max = self._t_max
        needed = Cat(*(self.mask[module * t_max:(module + 1) * t_max].any()
                       for module in tiles.modules))
        seek = Signal()
        # room for the next tile beside the engine's, or the engine has left its own (it
        # wants another): then the next fills from the first word, over it
        next_words, upcoming = Signal(words_range), Signal(tile_range)
        beside, left = Signal(), Signal()
        m.d.comb += [
            next_words.eq(table(m, tiles.words, upcoming, name="next_tile_words")),
            beside.eq(current_valid & (current_words + next_words <= bank_depth)),
            left.eq(~current_valid | self.need & (current != self.want)),
        ]
        sequence = tile_sequence(m, count=count, needed=needed, enable=self.enable,
                                 free=~started & ~filled & (beside | left), seek=seek,
                                 seek_tile=self.want)
        tag, next_tile = sequence.tag, sequence.next_tile
        m.d.comb += upcoming.eq(next_tile)
        with m.If(sequence.fetch):
            # at the memory's other end from the engine's tile, or from its first word
            m.d.sync += fill_base.eq(Mux(beside & (current_base == 0),
                                         bank_depth - next_words, 0))
            with m.If(~beside):
                m.d.sync += current_valid.eq(0)
        # a tile is one stream of k² runs, tap after tap; the run of tap ``reader.base_run``
        # of tile ``tag``: the tap's region plus the tile's first word; each word goes to
        # the bank of the run it belongs to (``reader.write_run``)
        tap_offset = table(m, tiles.tap_offsets, reader.base_run, name="tap_offset")
        first = table(m, [first * tiles.word_bytes for first in tiles.firsts], tag,
                      name="tile_first")
        tag_words = table(m, tiles.words, tag, name="tile_words")
        m.d.comb += [reader.base.eq(self.weights_base + tap_offset + first),
                     reader.words.eq(tag_words),
                     reader.start.eq(issue), self.idle.eq(~started)]
        with m.If(issue):
            m.d.sync += issue.eq(0)
        with m.Elif(started & ~reader.busy):  # the tile's last run has ended
            m.d.sync += [started.eq(0), filled.eq(1)]

        ready = filled & (tag == self.want)
        m.d.comb += [self.have.eq(current_valid & (current == self.want) | ready),
                     self.waiting.eq(self.need & ~self.have)]
        with m.If(self.waiting):
            m.d.sync += self.stalls.eq(self.stalls + 1)
        with m.If(self.need & ~(current_valid & (current == self.want)) & ready):
            m.d.sync += [current_base.eq(fill_base), filled.eq(0), current.eq(tag),
                         current_valid.eq(1),
                         current_words.eq(tag_words)]
        with m.Elif(self.waiting & ~started & (filled | (next_tile != self.want))):
            # a tile the engine does not want, or none on its way: discard, seek its own
            m.d.comb += seek.eq(1)
            m.d.sync += filled.eq(0)

        with m.If(~self.enable):
            m.d.sync += current_valid.eq(0)
            with m.If(~started):
                m.d.sync += filled.eq(0)
        with m.Elif(sequence.fetch):
            m.d.sync += [started.eq(1), issue.eq(1)]
        return m


__all__ = ["StemTileBuffer", "StemTiles", "stem_tile_shapes", "stem_tiles"]
