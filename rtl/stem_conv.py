"""The stem's event-driven conv: one input spike scatters into every output it reaches at once.

An event is one input spike (or, for stage 0, one set bit of a pixel's bit plane) and one
chunk of ``lanes`` output channels. Its reached conv outputs sit in ``m x m`` interleaved
banks (see :mod:`stepvit.rtl.stem_banks`), so one cycle reads all of them, adds the weight
rows of their kernel taps and, the next cycle, writes them back: up to ``k²·lanes``
accumulates a cycle, one event a cycle, with no conflict. Stage 0 multiplies by its pixels
by Horner's rule, with no multiplier and no shifter: its bit planes are scattered most
significant first, and a *double* between two of them reads one address of every bank and
writes it back doubled (the sum's wires moved up one bit, where a clear writes zero). The
bank reads are transparent, so an event that follows one at the same position (another
input channel there) sees the sum just written.

The weights sit in ``k²`` ROMs, one per kernel tap, all read at the same word (module,
input channel, chunk); each bank takes its tap's row through a ``k²``-way multiplexer.

Every stem module's conv goes through the same banks, one module's pass at a time: the
``module`` input selects its tables and its words of the ROMs, so the adders, multiplexers
and compare tree are paid once (the banks as deep as the deepest module's part).

*Chunk-major* (a pass of one chunk of one module, :class:`~stepvit.rtl.stem_plan.StemPlan`):
the banks hold one chunk's currents (the chunk is no part of a bank address), and each
tap memory holds a ``(module, chunk)``'s words ``channel`` contiguous, the chunks of a
module one after the other, so that the words a pass reads are one run.

The same banks answer a *window read*: the per-lane maximum of the conv currents inside one
max-pool window (the padding never a candidate), a whole window a cycle (its result three
cycles later: the bank read, its words registered, then a registered tree of compares); a pool of
kernel 1 reads one position (a stage that does not pool before its LIF). A *clear* zeroes
one address of every bank, so a module's ``depth`` cycles clear its whole map for its next
pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from stepvit.model.export.stem import conv_out
from stepvit.rtl.ram_style import ram_attrs
from stepvit.rtl.stem_banks import AxisTables, bank_modulus, scatter_tables, window_tables
from stepvit.rtl.stem_plan import PLANES
from stepvit.rtl.tables import padded


@dataclass(frozen=True)
class StemConv:
    """One stem module's conv, as the shared banks see it.

    Attributes
    ----------
    weight : numpy.ndarray
        ``[Cout, Cin, k, k]`` integers in int8's range.
    in_size : tuple of int
        ``(H, W)`` of the input map.
    stride, padding : int
        The convolution's.
    pool : tuple of int
        ``(kernel, stride, padding)`` of the max-pool the window read applies
        (``(1, 1, 0)``: no pool before the LIF).
    """

    weight: np.ndarray
    in_size: tuple[int, int]
    stride: int
    padding: int
    pool: tuple[int, int, int]


class StemConvBanks(wiring.Component):
    """The stem modules' conv currents in one set of ``m x m`` banks, one module at a time.

    Every module's scatter, window read and clear go through the same banks, adders, tap
    multiplexers and compare tree; ``module`` selects its tables and its words of the tap
    ROMs (each ROM holds every module's words of its tap, one module after the other).

    Parameters
    ----------
    convs : sequence of StemConv
        The modules' convs (``module`` indexes them).
    lanes : int
        Output channels an event updates per reached position.
    sum_bits : int
        Signed width of a current (the export proves the sums fit; the widest module's).
    writable : bool
        The tap memories are RAMs with no contents (only the weights' shapes are used), each
        with a write port in :attr:`tap_writes` (a ``weights="ddr"`` design: the weight
        loader fills them with :meth:`tap_words`); otherwise ROMs of the weights.
    chunk_major : bool
        Banks of one chunk's currents (``event_chunk`` and ``window_chunk`` only select the
        tap words) and tap words ``chunk·Cin + channel`` in each module's run.
    tile_depth : int, optional
        Chunk-major only: no tap memory; the taps' words of the running ``(module, chunk)``
        come from a stem tile buffer (:class:`~stepvit.rtl.stem_tiles.StemTileBuffer`) of
        ``tile_depth`` words a tap, read at ``tile_addr`` (the event's input channel),
        answered in ``tile_data`` a cycle later (a tap ROM's timing).
    ram_styles : mapping of str to str, optional
        The memories the sizing model placed in UltraRAM or LUTs, by its names (the stem's
        with ``stem.`` before), and their ``ram_style`` (:mod:`stepvit.rtl.ram_style`).
        Default: none.

    Members
    -------
    module : In
        The module whose pass runs (held through the pass and its writes).
    event_valid, event_y, event_x, event_channel, event_chunk : In
        One input event: its position, input channel and output chunk.
    window_valid, window_y, window_x, window_chunk : In
        Read the pool window at pooled position ``(y, x)`` of one chunk (not with an event).
    window_done : Out(1)
        The window read of three cycles before is in ``window_max``.
    window_max : Out(ArrayLayout(signed(sum_bits), lanes))
        Per lane, the largest current in that window.
    clear_valid, clear_address : In
        Zero this address of every bank (never in the cycle after an event).
    double_valid : In
        Double the words at ``clear_address`` of every bank: read now, written the next
        cycle (not with an event; an event may follow it, the reads are transparent).
    tile_addr : Out, tile_data : In
        With ``tile_depth`` only: the tile's word every tap reads, and the taps' words (tap
        ``i`` in bits ``8·lanes·i ..``).
    """

    def __init__(self, convs: Sequence[StemConv], *, lanes: int, sum_bits: int,
                 writable: bool = False, chunk_major: bool = False,
                 tile_depth: int | None = None,
                 ram_styles: Mapping[str, str] | None = None) -> None:
        if tile_depth is not None and not chunk_major:
            raise ValueError("a stem tile buffer needs a chunk-major stem")
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._convs = [_checked(conv) for conv in convs]
        self._ram_styles = dict(ram_styles or {})
        self._writable = writable
        self._chunk_major = chunk_major
        self._modulus = max(bank_modulus(c.weight.shape[2], c.stride, c.pool[0])
                            for c in self._convs)
        self._lanes, self._sum_bits = lanes, sum_bits
        self._chunks = [-(-c.weight.shape[0] // lanes) for c in self._convs]
        self._conv = [tuple(conv_out(size, c.weight.shape[2], c.stride, c.padding)
                            for size in c.in_size) for c in self._convs]
        # the chunks one bank address spans: every chunk, or one if chunk-major
        self._bank_chunks = [1] * len(self._chunks) if chunk_major else self._chunks
        depths = [-(-h // self._modulus) * -(-w // self._modulus) * chunks
                  for (h, w), chunks in zip(self._conv, self._bank_chunks)]
        self.depth = max(depths)
        pooled = [tuple(conv_out(size, *c.pool) for size in conv)
                  for c, conv in zip(self._convs, self._conv)]

        def widest(values) -> range:
            return range(max(max(values), 2))
        self._tile_depth = tile_depth
        tile = ({} if tile_depth is None else
                {"tile_addr": Out(range(max(tile_depth, 2))),
                 "tile_data": In(self.taps * 8 * lanes)})
        super().__init__({
            "module": In(range(max(len(self._convs), 2))),
            "event_valid": In(1),
            "event_y": In(widest(c.in_size[0] for c in self._convs)),
            "event_x": In(widest(c.in_size[1] for c in self._convs)),
            "event_channel": In(widest(c.weight.shape[1] for c in self._convs)),
            "event_chunk": In(widest(self._chunks)),
            "window_valid": In(1),
            "window_y": In(widest(size[0] for size in pooled)),
            "window_x": In(widest(size[1] for size in pooled)),
            "window_chunk": In(widest(self._chunks)),
            "window_done": Out(1),
            "window_max": Out(data.ArrayLayout(signed(sum_bits), lanes)),
            "clear_valid": In(1),
            "clear_address": In(range(max(self.depth, 2))),
            "double_valid": In(1),
            **tile,
        })
        #: ``writable`` only: the tap RAMs (built here so that their write ports exist
        #: before the design is elaborated) and their write ports, tap ``i`` at index ``i``.
        self.tap_rams: list[Memory] = []
        self.tap_writes: list[WritePort] = []
        if writable and tile_depth is None:
            self.tap_rams = [Memory(shape=unsigned(8 * lanes), depth=max(self.tap_depth, 2),
                                    init=[], attrs=ram_attrs(ram_styles, f"stem.tap{tap}"))
                             for tap in range(self.taps)]
            self.tap_writes = [ram.write_port() for ram in self.tap_rams]

    @property
    def modulus(self) -> int:
        """``m``: bank rows and bank columns (``m²`` banks), the largest any module needs."""
        return self._modulus

    @property
    def taps(self) -> int:
        """Tap ROMs: the largest kernel's ``k²``."""
        return max(c.weight.shape[2] ** 2 for c in self._convs)

    @property
    def tap_depth(self) -> int:
        """Words of each tap memory: every module's input channels times its chunks."""
        return sum(conv.weight.shape[1] * chunks
                   for conv, chunks in zip(self._convs, self._chunks))

    def tap_words(self) -> list[list[int]]:
        """Return each tap ROM: every module's words ``channel·chunks + chunk`` in turn.

        (``chunk·Cin + channel`` if chunk-major.) Lane 0 sits in the low byte; a module
        with a smaller kernel has zeros past its taps (:func:`tap_words`).
        """
        return tap_words([conv.weight for conv in self._convs], self._lanes,
                         chunk_major=self._chunk_major)

    def elaborate(self, platform: object) -> Module:
        """Build the tap ROMs, the banks, the event and window addressing and the adders."""
        m = Module()
        modulus = self._modulus
        roms = []
        if self._tile_depth is not None:
            # the running (module, chunk)'s tile: the event's channel is its word
            width = 8 * self._lanes
            m.d.comb += self.tile_addr.eq(self.event_channel)
            roms = [_TileTap(self.tile_data[width * tap:width * (tap + 1)])
                    for tap in range(self.taps)]
        elif self._writable:
            for index, ram in enumerate(self.tap_rams):
                m.submodules[f"tap{index}"] = ram
                roms.append(ram.read_port())
        else:
            for index, words in enumerate(self.tap_words()):
                rom = Memory(shape=unsigned(8 * self._lanes), depth=max(len(words), 2),
                             init=words)
                m.submodules[f"tap{index}"] = rom
                roms.append(rom.read_port())
        if self._tile_depth is not None:
            pass  # the tile buffer is read at the event's channel (above)
        elif self._chunk_major:
            # a (module, chunk)'s first word, a table: the channel is added (no multiplier)
            m.d.comb += [rom.addr.eq(self._select(tile_bases(
                [conv.weight.shape[1] for conv in self._convs], self._chunks),
                self.event_chunk) + self.event_channel) for rom in roms]
        else:
            bases, base = [], 0
            for conv, chunks in zip(self._convs, self._chunks):
                bases.append([base + channel * chunks
                              for channel in range(conv.weight.shape[1])])
                base += conv.weight.shape[1] * chunks
            rom_base = self._select(bases, self.event_channel)
            for rom in roms:
                m.d.comb += rom.addr.eq(rom_base + self.event_chunk)

        written, doubled = Signal(), Signal()
        window_read, window_held = Signal(), Signal()
        m.d.sync += [written.eq(self.event_valid), doubled.eq(self.double_valid),
                     window_read.eq(self.window_valid),
                     window_held.eq(window_read), self.window_done.eq(window_held)]
        tables = self._axis_tables()
        candidates = []
        for bank_row in range(modulus):
            for bank_col in range(modulus):
                candidates.append(self._bank(m, (bank_row, bank_col), tables, roms,
                                             (written, doubled)))
        self._window_max(m, candidates)
        return m

    def _axis_tables(self) -> list[tuple[AxisTables, AxisTables, AxisTables, AxisTables]]:
        """Return per module its scatter rows and columns, then its window rows and columns."""
        tables = []
        for conv, size in zip(self._convs, self._conv):
            kernel = conv.weight.shape[2]
            tables.append(tuple(
                scatter_tables(conv.in_size[axis], kernel, conv.stride, conv.padding,
                               self._modulus) for axis in (0, 1))
                + tuple(window_tables(size[axis], *conv.pool, self._modulus) for axis in (0, 1)))
        return tables

    def _select(self, per_module: Sequence[Sequence[int]], index: Signal):
        """Return ``per_module[module][index]``: one constant table of every module's values."""
        address = Cat(index, self.module)
        return _table(padded([v for values in per_module
                              for v in list(values) + [0] * ((1 << len(index)) - len(values))],
                             address), address)

    def _bank(self, m: Module, bank: tuple[int, int], tables: Sequence, roms: list,
              pipeline: tuple[Signal, Signal]) -> tuple:
        """Add one bank: its addresses, its read-add-write and its window candidate."""
        bank_row, bank_col = bank
        layout = data.ArrayLayout(signed(self._sum_bits), self._lanes)
        mem = Memory(shape=layout, depth=max(self.depth, 2), init=[],
                     attrs=ram_attrs(self._ram_styles,
                                     f"stem.bank{bank_row * self._modulus + bank_col}"))
        m.submodules[f"bank{bank_row}_{bank_col}"] = mem
        write = mem.write_port()
        read = mem.read_port(transparent_for=(write,))
        spans = [-(-w // self._modulus) * chunks
                 for (_, w), chunks in zip(self._conv, self._bank_chunks)]
        kernels = [conv.weight.shape[2] for conv in self._convs]

        def pick(axis: int, field: str, position: Signal, scale: Sequence[int], line: int):
            return self._select([getattr(t[axis], field)[:, line] * s
                                 for t, s in zip(tables, scale)], position)
        ones = [1] * len(tables)
        hit = pick(0, "valid", self.event_y, ones, bank_row) & pick(
            1, "valid", self.event_x, ones, bank_col)
        event_address = (pick(0, "block", self.event_y, spans, bank_row)
                         + pick(1, "block", self.event_x, self._bank_chunks, bank_col))
        if not self._chunk_major:
            event_address = event_address + self.event_chunk
        tap = (pick(0, "tap", self.event_y, kernels, bank_row)
               + pick(1, "tap", self.event_x, ones, bank_col))
        in_window = pick(2, "valid", self.window_y, ones, bank_row) & pick(
            3, "valid", self.window_x, ones, bank_col)
        window_address = (pick(2, "block", self.window_y, spans, bank_row)
                          + pick(3, "block", self.window_x, self._bank_chunks, bank_col))
        if not self._chunk_major:
            window_address = window_address + self.window_chunk
        m.d.comb += read.addr.eq(Mux(self.event_valid, event_address,
                                     Mux(self.double_valid, self.clear_address,
                                         window_address)))

        written, doubled = pipeline
        write_hit = Signal(name=f"hit{bank_row}_{bank_col}")
        write_tap = Signal(range(max(self.taps, 2)), name=f"tap{bank_row}_{bank_col}")
        address = Signal.like(read.addr, name=f"address{bank_row}_{bank_col}")
        candidate = Signal(name=f"window{bank_row}_{bank_col}")
        m.d.sync += [write_hit.eq(self.event_valid & hit), write_tap.eq(tap),
                     address.eq(read.addr), candidate.eq(in_window)]
        weights = Array(rom.data for rom in roms)[write_tap]
        with m.If(written):
            m.d.comb += [write.addr.eq(address), write.en.eq(write_hit)]
            for lane in range(self._lanes):
                addend = weights[8 * lane:8 * (lane + 1)].as_signed()
                m.d.comb += write.data[lane].eq(read.data[lane] + addend)
        with m.Elif(doubled):
            # Horner's step between two of stage 0's planes (the export proves it fits)
            m.d.comb += [write.addr.eq(address), write.en.eq(1)]
            for lane in range(self._lanes):
                m.d.comb += write.data[lane].eq(read.data[lane] << 1)
        with m.Else():
            m.d.comb += [write.addr.eq(self.clear_address), write.en.eq(self.clear_valid)]
        # the window's words are registered before its compare tree: two short paths
        held_candidate = Signal(name=f"held_window{bank_row}_{bank_col}")
        held = Signal.like(read.data, name=f"held{bank_row}_{bank_col}")
        m.d.sync += [held_candidate.eq(candidate), held.eq(read.data)]
        return held_candidate, held

    def _window_max(self, m: Module, candidates: list[tuple]) -> None:
        """Register ``window_max``: per lane the largest current among the window's banks.

        A balanced tree of compares (``log2(m²)`` deep, not ``m²``), registered, so the
        bank read and the LIF after it are not one long path.
        """
        for lane in range(self._lanes):
            level = [(in_window, value[lane]) for in_window, value in candidates]
            while len(level) > 1:
                pairs = []
                for (left_in, left), (right_in, right) in zip(level[::2], level[1::2]):
                    take_left = left_in & (~right_in | (left > right))
                    pairs.append((left_in | right_in, Mux(take_left, left, right)))
                level = pairs + level[len(pairs) * 2:]
            m.d.sync += self.window_max[lane].eq(level[0][1])


@dataclass(frozen=True)
class _TileTap:
    """One tap's word of a stem tile, where a tap ROM's read port would give it."""

    data: object


def tap_words(weights: Sequence[np.ndarray], lanes: int, *,
              chunk_major: bool = False) -> list[list[int]]:
    """Return the words of each tap memory of modules of ``weights`` (``[Cout, Cin, k, k]``).

    One memory per tap of the largest kernel; in each, every module's words
    ``channel·chunks + chunk`` in turn (``chunk_major``: ``chunk·Cin + channel``, so a
    ``(module, chunk)``'s words are one run from :func:`tile_bases`), ``lanes`` output
    channels a word, lane 0 in the low byte; a module with a smaller kernel has zeros past
    its taps.
    """
    weights = [np.asarray(weight, dtype=np.int64) for weight in weights]
    roms: list[list[int]] = [[] for _ in range(max(w.shape[2] ** 2 for w in weights))]
    for weight in weights:
        cout, cin, kernel, _ = weight.shape
        chunks = -(-cout // lanes)
        padded = np.zeros((chunks * lanes, cin, kernel, kernel), dtype=np.int64)
        padded[:cout] = weight
        bytes_ = padded.reshape(chunks, lanes, cin, kernel, kernel) & 0xFF
        shifts = 8 * np.arange(lanes)
        for tap, rom in enumerate(roms):
            ky, kx = divmod(tap, kernel)
            order = ([(channel, chunk) for chunk in range(chunks) for channel in range(cin)]
                     if chunk_major else
                     [(channel, chunk) for channel in range(cin) for chunk in range(chunks)])
            rom.extend(sum(int(byte) << int(shift)
                           for byte, shift in zip(bytes_[chunk, :, channel, ky, kx], shifts))
                       if tap < kernel * kernel else 0
                       for channel, chunk in order)
    return roms


def tile_bases(in_channels: Sequence[int], chunks: Sequence[int]) -> list[list[int]]:
    """Return each module's chunks' first words in chunk-major tap memories.

    Module ``i`` (``in_channels[i]`` inputs, ``chunks[i]`` chunks) holds its chunk ``c``'s
    words at ``tile_bases(...)[i][c]`` onwards, ``in_channels[i]`` of them, after every
    earlier module's.
    """
    bases, base = [], 0
    for cin, count in zip(in_channels, chunks):
        bases.append([base + chunk * cin for chunk in range(count)])
        base += cin * count
    return bases


def shared_sum_bits(bits: dict[str, int]) -> int:
    """Return the signed width of the shared banks' currents: the widest module's."""
    return max(bits["embed_current"], bits["current"])


def _checked(conv: StemConv) -> StemConv:
    """Return ``conv`` with an int64 weight; raise unless it is ``[Cout, Cin, k, k]`` int8."""
    weight = np.asarray(conv.weight, dtype=np.int64)
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be [Cout, Cin, k, k], not {list(weight.shape)}")
    if weight.size and (weight.min() < -128 or weight.max() > 127):
        raise ValueError("weight must hold int8 values")
    return StemConv(weight, tuple(conv.in_size), conv.stride, conv.padding, tuple(conv.pool))


def _table(values: Sequence[int] | np.ndarray, index: Signal):
    """Return ``values[index]`` as a constant lookup (a small ROM of logic).

    Its values cover every index (:func:`~stepvit.rtl.tables.padded`) where Yosys should
    make it a ROM.
    """
    values = [int(v) for v in values]
    width = max(max(values, default=0).bit_length(), 1)
    return Array(Const(v, unsigned(width)) for v in values)[index]


__all__ = ["PLANES", "StemConv", "StemConvBanks", "shared_sum_bits", "tap_words", "tile_bases"]
