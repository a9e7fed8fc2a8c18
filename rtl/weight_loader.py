"""Load a design's parameter memories from a weight image in DDR, checksumming it.

The step toward one bitstream per shape (docs/ddr-dataflow.md, "The weight image and its
loader"): the host writes an export's weight image (:mod:`stepvit.rtl.weight_image`) into
DDR, gives its address, starts the load and reads back the checksum; the loader reads the
image over the AXI read channels and writes each memory's words into that memory's write
port, one memory after the other. Tested alone in Amaranth's simulator
(tests/rtl/test_weight_loader.py), and in ``stepvit_accel`` of a ``weights="ddr"`` design.

**One reader, one run.** The image's regions lie back to back (the layout), so the whole
image is one run of beats from ``base``: a single
:class:`~stepvit.rtl.axi_reader.AxiBurstReader` of one-beat words reads it, its requests
running ahead across the memories as within one (the memory's latency is paid once per
load), and the loader assembles the beats into each memory's words itself, with a
beats-per-word and a depth that change when a memory's last word is written. By logic
cost, against one reader per memory behind a mux of the AXI channels:

- one request side (a 32-bit address register and adder, two beat counters, the burst and
  4 KB length logic) instead of one per memory, and no mux of ``araddr``/``arlen`` nor an
  arbiter to let one reader's requests run ahead of another's data;
- one word register as wide as the widest word less a beat (192 bits for 256-bit weight
  words on 64-bit beats), shared by every memory: the beats shift in from the top, so a
  word of ``k`` beats is the register's top ``k`` beats, a fixed slice per memory (wires,
  no mux); one reader per memory would hold a register per memory;
- the price: a memory index, a beat counter and a word counter, and per memory two
  comparisons with constants (its last beat of a word, its last word).

**The checksum** is :func:`~stepvit.rtl.weight_image.image_checksum` of the image (every
byte the run reads, padding included: it is in the image), computed over the beats as they
arrive, in order (one AXI ID: the data returns in the order it was requested). A beat of
``n`` 32-bit words ``w[0..n-1]`` (``w[0]`` its low bits) moves the pair by
``A += sum(w)`` and ``B += n·A + sum((n - j)·w[j])``, ``n·A`` a shift (``n`` is a power
of two) and each ``(n - j)·w[j]`` a sum of shifts: adders only, no multiplier (the
accelerator uses no DSP). Pipelined for 100 MHz on a 7-series part: the beat is
registered as it arrives; the next cycle registers its two sums (on 64-bit beats
``w0 + w1`` and ``2·w0 + w1``: one 32-bit adder each); the next adds them into ``A`` (one
adder) and ``B`` (``B + 2·A + T``: two 32-bit adders in a row). So the checksum is final,
and ``done`` set, two cycles after the last beat.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from stepvit.rtl.axi_reader import (
    AXI_READ_MEMBERS,
    AxiBurstReader,
    forward_axi_read,
    times_constant,
)
from stepvit.rtl.axi_reader import (
    tree_sum as tree_sum_of,
)
from stepvit.rtl.weight_image import (
    CHECKSUM_MASK,
    CHECKSUM_WORD_BITS,
    ImageLayout,
    ImageMemory,
    image_layout,
)


def write_signature(memory: ImageMemory) -> wiring.Signature:
    """Return the write side of one memory, driven by the loader.

    Its members: ``write_en``, ``write_addr`` and ``write_data`` (the memory's width).
    """
    return wiring.Signature({
        "write_en": Out(1),
        "write_addr": Out(range(max(memory.depth, 2))),
        "write_data": Out(memory.width),
    })


def times(value: Value, constant: int) -> Value:
    """Multiply ``value`` by ``constant`` modulo 2**32 as a sum of shifts (no multiplier)."""
    return times_constant(value, constant, CHECKSUM_WORD_BITS)


def tree_sum(terms: list[Value]) -> Value:
    """Add ``terms`` modulo 2**32 as a balanced tree (the shortest adder path)."""
    return tree_sum_of(terms, CHECKSUM_WORD_BITS)


class WeightLoader(wiring.Component):
    """Fill ``memories`` from the weight image at byte address ``base`` in DDR.

    Parameters
    ----------
    memories : sequence of ImageMemory
        The memories, in the image's order.
    data_width : int
        Bits of an AXI beat (64 on a Zynq-7000 HP port, 128 on a Zynq UltraScale+ one).
    max_burst : int
        Beats a burst may have (16 for AXI3, up to 256 for AXI4).
    addr_width : int
        Bits of a byte address.

    Members
    -------
    start : In(1)
        Pulse (while not ``busy``): load the image at ``base``.
    base : In(addr_width)
        The image's first byte, aligned to a beat.
    busy : Out(1)
        A load is under way (until its checksum is final).
    done : Out(1)
        The last load completed: every word written and ``checksum`` final; cleared by
        the next ``start``.
    error : Out(1)
        A beat of the last load came back with an error response (not OKAY); the load
        still takes every beat.
    checksum : Out(64)
        ``image_checksum`` of the bytes the last load read: ``B`` in the high 32 bits,
        ``A`` in the low.
    writes : Out
        Per memory, a member named by the memory with ``write_en``, ``write_addr`` and
        ``write_data`` (the memory's width): connect each to the memory's write port
        (:func:`connect_write_port`); ``write_port(name)`` returns one.
    arvalid, arready, araddr, arlen, arsize, arburst : the read address channel
    rvalid, rready, rdata, rresp, rlast : the read data channel
    """

    def __init__(self, memories: Sequence[ImageMemory], *, data_width: int = 64,
                 max_burst: int = 16, addr_width: int = 32) -> None:
        self._layout = image_layout(memories, data_width)
        self._data_width = data_width
        self._reader = AxiBurstReader(data_width=data_width, word_width=data_width,
                                      depth=self._layout.total_beats, max_burst=max_burst,
                                      addr_width=addr_width)
        reader = self._reader.signature.members
        super().__init__({
            "start": In(1),
            "base": In(addr_width),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "checksum": Out(2 * CHECKSUM_WORD_BITS),
            "writes": Out(wiring.Signature({
                region.memory.name: Out(write_signature(region.memory))
                for region in self._layout.regions})),
            **{name: reader[name] for name in AXI_READ_MEMBERS},
        })

    @property
    def layout(self) -> ImageLayout:
        """The image the loader reads."""
        return self._layout

    def write_port(self, name: str) -> wiring.PureInterface:
        """Return the write side of the memory ``name``."""
        return getattr(self.writes, name)

    def elaborate(self, platform: object) -> Module:
        """Build the reader (one run: the whole image), the word assembly and the checksum."""
        m = Module()
        m.submodules.reader = reader = self._reader
        regions, width = self._layout.regions, self._data_width
        forward_axi_read(m, self, reader)
        m.d.comb += reader.base.eq(self.base)

        beat_valid = Signal()  # the registered beat feeds the checksum's sums
        sums_valid = Signal()  # the registered sums feed A and B
        m.d.comb += [reader.words.eq(self._layout.total_beats),
                     reader.start.eq(self.start & ~self.busy),
                     self.busy.eq(reader.busy | beat_valid | sums_valid),
                     self.error.eq(reader.error)]
        arrived, data = reader.write_en, reader.write_data  # one beat: a word of the reader

        # the words: beats shift in from the top of the register; a word of k beats is the
        # top k beats of the assembled value
        most_beats = max(region.beats_per_word for region in regions)
        top = most_beats * width
        if most_beats > 1:
            word = Signal(top - width)
            assembled = Cat(word, data)
            with m.If(arrived):
                m.d.sync += word.eq(assembled[width:])
        else:
            assembled = data
        index = Signal(range(max(len(regions), 2)))  # the memory being written
        beat = Signal(range(max(most_beats, 2)))  # the beat of its word
        address = Signal(range(max(max(r.memory.depth for r in regions), 2)))  # the word
        last_beat, last_word = Signal(), Signal()
        with m.Switch(index):
            for i, region in enumerate(regions):
                with m.Case(i):
                    m.d.comb += [last_beat.eq(beat == region.beats_per_word - 1),
                                 last_word.eq(address == region.memory.depth - 1)]
        for i, region in enumerate(regions):
            port = self.write_port(region.memory.name)
            low = top - region.beats_per_word * width
            m.d.comb += [port.write_en.eq(arrived & last_beat & (index == i)),
                         port.write_addr.eq(address),
                         port.write_data.eq(assembled[low:low + region.memory.width])]
        with m.If(arrived):
            with m.If(last_beat):
                m.d.sync += beat.eq(0)
                with m.If(last_word):
                    m.d.sync += [address.eq(0), index.eq(index + 1)]
                with m.Else():
                    m.d.sync += address.eq(address + 1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # the checksum: the beat registered, then its two sums, then A and B
        count = width // CHECKSUM_WORD_BITS  # 32-bit words in a beat, a power of two
        registered = Signal(width)
        m.d.sync += beat_valid.eq(arrived)
        with m.If(arrived):
            m.d.sync += registered.eq(data)
        words = [registered[j * CHECKSUM_WORD_BITS:(j + 1) * CHECKSUM_WORD_BITS]
                 for j in range(count)]
        part_sum, part_weighted = Signal(CHECKSUM_WORD_BITS), Signal(CHECKSUM_WORD_BITS)
        m.d.sync += sums_valid.eq(beat_valid)
        with m.If(beat_valid):
            m.d.sync += [part_sum.eq(tree_sum(list(words))),
                         part_weighted.eq(tree_sum([times(w, count - j)
                                                    for j, w in enumerate(words)]))]
        total_a, total_b = Signal(CHECKSUM_WORD_BITS), Signal(CHECKSUM_WORD_BITS)
        shift = count.bit_length() - 1  # n·A = A << log2(n)
        with m.If(sums_valid):
            m.d.sync += [total_a.eq(total_a + part_sum),
                         total_b.eq((total_b + (total_a << shift)[:CHECKSUM_WORD_BITS]
                                     + part_weighted) & CHECKSUM_MASK)]
        m.d.comb += self.checksum.eq(Cat(total_a, total_b))
        with m.If(sums_valid & ~beat_valid & ~reader.busy):
            m.d.sync += self.done.eq(1)  # the last beat's sums are added at this edge

        with m.If(reader.start):
            m.d.sync += [index.eq(0), beat.eq(0), address.eq(0), total_a.eq(0),
                         total_b.eq(0), self.done.eq(0)]
        return m


def connect_write_port(m: Module, source: wiring.PureInterface, port: WritePort) -> None:
    """Drive ``port`` from ``source``, the loader's write side of the same memory.

    ``port`` is a ``Memory.write_port()`` of any granularity: its enables all follow
    ``write_en``.
    """
    m.d.comb += [port.en.eq(source.write_en.replicate(len(port.en))),
                 port.addr.eq(source.write_addr),
                 port.data.eq(source.write_data)]


__all__ = ["WeightLoader", "connect_write_port", "times", "tree_sum",
           "write_signature"]
