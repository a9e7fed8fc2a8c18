"""Two banks of a weight tile: one read by the compute while the other fills from DDR.

The second part of the weights-from-DDR design (docs/ddr-dataflow.md), after
:class:`~stepvit.rtl.axi_reader.AxiBurstReader`: the tile a layer computes with sits in one
bank while the reader fetches the next tile into the other, so a fetch costs nothing when
the compute of a tile takes longer than its transfer. Built alone and tested against the
DDR model of ``rtl/ddr_model.py``; the core's weight tiles in a design that streams
its weights (``StepvitCore(stream_weights=True)``).

The protocol: ``fetch`` (with ``base`` and ``words``) fills the bank the compute does not
read; ``filled`` says that bank holds a whole tile; ``swap`` (when ``filled``) hands it to
the compute, which reads word ``read_addr`` of its bank as ``read_data`` a cycle later,
and frees the other bank for the next ``fetch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import (
    AXI_READ_MEMBERS,
    AxiBurstReader,
    check_shape,
    forward_axi_read,
)
from stepvit.rtl.core_plan import CorePlan
from stepvit.rtl.weight_image import ImageMemory, image_layout


@dataclass(frozen=True)
class WeightTiles:
    """The weight tiles of a core that streams its weights, in the order its passes use them.

    A tile is the weight words one pass reads (its chunks' words, contiguous in the plan's
    weight memory and so in the weight image's ``weights`` region).

    Attributes
    ----------
    passes : tuple of int
        The index of each tile's pass.
    offsets : tuple of int
        Each tile's byte offset in the weight image.
    words : tuple of int
        Each tile's words.
    word_bytes : int
        Bytes of one word in the image (whole beats).
    """

    passes: tuple[int, ...]
    offsets: tuple[int, ...]
    words: tuple[int, ...]
    word_bytes: int

    @property
    def depth(self) -> int:
        """Words of the largest tile: what one bank of the buffer holds."""
        return max(self.words, default=0)

    @property
    def bytes_per_image(self) -> int:
        """Bytes an image's run reads from DDR: every tile once."""
        return sum(self.words) * self.word_bytes


@dataclass(frozen=True)
class TileFetch:
    """The core's handles on its tile buffer and the fetch in front of it.

    Attributes
    ----------
    buffer : TileBuffer
    tag : Signal
        The tile index of the bank being filled, or filled.
    next_tile : Signal
        The tile the fetch considers next.
    seek, seek_tile : Signal
        Driven by the core: make ``seek_tile`` the next tile fetched, whatever the masks say.
    discard : Signal
        Driven by the core: forget the filled bank (a tile the core does not want).
    """

    buffer: TileBuffer
    tag: Signal
    next_tile: Signal
    seek: Signal
    seek_tile: Signal
    discard: Signal


@dataclass(frozen=True)
class TileSequence:
    """The order tiles are fetched in (:func:`tile_sequence`).

    Attributes
    ----------
    fetch : Signal
        Start fetching tile ``next_tile`` this cycle.
    next_tile : Signal
        The tile the fetch considers next.
    tag : Signal
        The tile of the last fetch started: the one being fetched, or filled.
    """

    fetch: Signal
    next_tile: Signal
    tag: Signal


def tile_sequence(m: Module, *, count: int, needed: Value, enable: Value, free: Value,
                  seek: Value, seek_tile: Value) -> TileSequence:
    """Fetch ``count`` tiles ahead in order, round and round, as a prediction.

    The one mechanism of the core's weight tiles and the stem's tap tiles: while
    ``enable``, whenever the bank to fill is ``free`` (no fetch under way, nothing filled
    and not taken), fetch the next tile whose bit of ``needed`` is set (a tile the live
    masks leave out is skipped, so it costs no traffic); a ``seek`` (the consumer found a
    tile it does not want, or none on its way) makes ``seek_tile`` the next tile, fetched
    whatever ``needed`` says. Low ``enable``: the next tile is the first again.
    """
    tile_range = range(max(count, 2))
    next_tile, tag, force = Signal(tile_range), Signal(tile_range), Signal()
    can_fetch, fetch = Signal(), Signal()
    m.d.comb += [can_fetch.eq(enable & free & ~seek),
                 fetch.eq(can_fetch & (needed.bit_select(next_tile, 1) | force))]
    following = Mux(next_tile == count - 1, 0, next_tile + 1)
    with m.If(~enable):
        m.d.sync += [next_tile.eq(0), force.eq(0)]
    with m.Elif(seek):
        m.d.sync += [next_tile.eq(seek_tile), force.eq(1)]
    with m.Elif(fetch):
        m.d.sync += [next_tile.eq(following), tag.eq(next_tile), force.eq(0)]
    with m.Elif(can_fetch):  # a tile the masks leave out
        m.d.sync += next_tile.eq(following)
    return TileSequence(fetch=fetch, next_tile=next_tile, tag=tag)


def weight_tiles(plan: CorePlan, memories: Sequence[ImageMemory],
                 data_width: int) -> WeightTiles:
    """Return the tiles of ``plan``'s weight passes in an image of ``memories``.

    Parameters
    ----------
    plan : CorePlan
        The core's plan (its passes and their weights' first words).
    memories : sequence of ImageMemory
        The design's image memories (:func:`~stepvit.rtl.design_image.image_memories`),
        which hold the ``weights`` region.
    data_width : int
        Bits of an AXI beat.
    """
    region = next(r for r in image_layout(memories, data_width).regions
                  if r.memory.name == "weights")
    held = [(index, tile) for index, tile in enumerate(plan.tiles) if tile is not None]
    passes = [index for index, _ in held]
    offsets = [region.offset + first * region.word_bytes for _, (first, _) in held]
    words = [count for _, (_, count) in held]
    return WeightTiles(passes=tuple(passes), offsets=tuple(offsets), words=tuple(words),
                       word_bytes=region.word_bytes)


class TileBuffer(wiring.Component):
    """Double-buffered tiles of ``depth`` words, filled over AXI, read by the compute.

    Parameters
    ----------
    data_width, word_width, depth, max_burst, addr_width : int
        As :class:`~stepvit.rtl.axi_reader.AxiBurstReader`'s (``depth``: words a bank holds).
    attrs : dict of str to str, optional
        The banks' memory attributes (:mod:`stepvit.rtl.ram_style`: UltraRAM).

    Members
    -------
    fetch : In(1)
        Pulse: fill the free bank with ``words`` words from byte address ``base`` (only
        while not ``fetching`` and not ``filled``).
    base, words : In
        The tile's run in DDR.
    fetching : Out(1)
        A fetch is under way.
    filled : Out(1)
        The free bank holds a tile the compute has not taken.
    swap : In(1)
        Pulse (when ``filled``): the compute takes the filled bank.
    read_addr : In(range(depth))
        The word of its bank the compute reads; ``read_data`` has it a cycle later.
    read_data : Out(word_width)
    error : Out(1)
        The last fetch met an error response.
    clear : In(1)
        Pulse (only while not ``fetching``): forget the filled bank, so the next ``fetch``
        starts a new sequence of tiles (a new weight image).
    axi : the reader's ``ar*`` and ``r*`` ports, by the same names
    """

    def __init__(self, *, data_width: int = 64, word_width: int = 64, depth: int = 1024,
                 max_burst: int = 16, addr_width: int = 32,
                 attrs: dict[str, str] | None = None) -> None:
        check_shape(data_width, word_width, depth, max_burst)
        self._attrs = attrs or {}
        self._reader = AxiBurstReader(data_width=data_width, word_width=word_width,
                                      depth=depth, max_burst=max_burst,
                                      addr_width=addr_width)
        self._depth, self._word_width = depth, word_width
        reader = self._reader.signature.members
        super().__init__({
            "fetch": In(1),
            "base": In(addr_width),
            "words": In(range(depth + 1)),
            "fetching": Out(1),
            "filled": Out(1),
            "swap": In(1),
            "read_addr": In(range(max(depth, 2))),
            "read_data": Out(word_width),
            "error": Out(1),
            "clear": In(1),
            **{name: reader[name] for name in
               AXI_READ_MEMBERS},
        })

    def elaborate(self, platform: object) -> Module:
        """Build the two banks (one memory, bank 1 after bank 0), the reader and the swap."""
        m = Module()
        m.submodules.reader = reader = self._reader
        forward_axi_read(m, self, reader)
        m.d.comb += [reader.base.eq(self.base), reader.words.eq(self.words)]
        banks = Memory(shape=self._word_width, depth=2 * self._depth, init=[],
                       attrs=self._attrs)
        m.submodules.banks = banks
        write, read = banks.write_port(), banks.read_port()
        computing = Signal()  # the bank the compute reads; the other one fills
        started = Signal()
        depth = self._depth
        m.d.comb += [write.addr.eq(Mux(computing, 0, depth) + reader.write_addr),
                     write.data.eq(reader.write_data), write.en.eq(reader.write_en),
                     read.addr.eq(Mux(computing, depth, 0) + self.read_addr),
                     self.read_data.eq(read.data),
                     self.fetching.eq(started), self.error.eq(reader.error)]
        # a fetch counts as under way until its bank is marked filled (the cycle after the
        # reader's last beat), so no second fetch can start into the same bank
        m.d.comb += reader.start.eq(self.fetch & ~started & ~self.filled)
        with m.If(reader.start):
            m.d.sync += started.eq(1)
        with m.Elif(started & ~reader.busy):
            m.d.sync += [started.eq(0), self.filled.eq(1)]
        with m.If(self.swap & self.filled):
            m.d.sync += [computing.eq(~computing), self.filled.eq(0)]
        with m.If(self.clear & ~started):
            m.d.sync += self.filled.eq(0)
        return m


__all__ = ["TileBuffer", "TileFetch", "TileSequence", "WeightTiles", "tile_sequence",
           "weight_tiles"]
