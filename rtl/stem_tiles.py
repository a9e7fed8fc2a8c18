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
    """Return the ``(width, depth)`` of the buffer's memories: a bank pair per tap."""
    return [(8 * lanes, 2 * tiles.depth)] * tiles.taps


class StemTileBuffer(wiring.Component):
    """Two stem tiles, one per tap in a bank pair: the engine's and the next, filled over AXI.

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
                 ram_styles: Mapping[str, str] | None = None) -> None:
        self._tiles, self._lanes = tiles, lanes
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
        tiles, depth, width = self._tiles, self._tiles.depth, 8 * self._lanes
        m.submodules.reader = reader = self._reader
        forward_axi_read(m, self, reader)
        count = len(tiles.words)
        tile_range = range(max(count, 2))
        computing = Signal()  # the bank pair the engine reads; the other one fills
        current, current_valid = Signal(tile_range), Signal()
        started, filled, issue = Signal(), Signal(), Signal()
        reads = []
        for index in range(tiles.taps):
            bank = Memory(shape=unsigned(width), depth=2 * depth, init=[],
                          attrs=ram_attrs(self._ram_styles, f"stem.tap{index}"))
            m.submodules[f"tap{index}"] = bank
            write, read = bank.write_port(), bank.read_port()
            m.d.comb += [write.addr.eq(Mux(computing, 0, depth) + reader.write_addr),
                         write.data.eq(reader.write_data[:width]),
                         write.en.eq(reader.write_en & (reader.write_run == index)),
                         read.addr.eq(Mux(computing, depth, 0) + self.read_addr)]
            reads.append(read.data)
        m.d.comb += self.read_data.eq(Cat(*reads))

        # which tiles the live masks need: a module's if it runs at some step
        t_max = self._t_max
        needed = Cat(*(self.mask[module * t_max:(module + 1) * t_max].any()
                       for module in tiles.modules))
        seek = Signal()
        sequence = tile_sequence(m, count=count, needed=needed, enable=self.enable,
                                 free=~started & ~filled, seek=seek, seek_tile=self.want)
        tag, next_tile = sequence.tag, sequence.next_tile
        # a tile is one stream of k² runs, tap after tap; the run of tap ``reader.base_run``
        # of tile ``tag``: the tap's region plus the tile's first word; each word goes to
        # the bank of the run it belongs to (``reader.write_run``)
        tap_offset = table(m, tiles.tap_offsets, reader.base_run, name="tap_offset")
        first = table(m, [first * tiles.word_bytes for first in tiles.firsts], tag,
                      name="tile_first")
        m.d.comb += [reader.base.eq(self.weights_base + tap_offset + first),
                     reader.words.eq(table(m, tiles.words, tag, name="tile_words")),
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
            m.d.sync += [computing.eq(~computing), filled.eq(0), current.eq(tag),
                         current_valid.eq(1)]
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
