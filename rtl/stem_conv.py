"""The stem's event-driven conv: one input spike scatters into every output it reaches at once.

An event is one input spike (or, for stage 0, one set bit ``b`` of a pixel) and one chunk of
``lanes`` output channels. Its reached conv outputs sit in ``m x m`` interleaved banks (see
:mod:`stepvit.rtl.stem_banks`), so one cycle reads all of them, adds the weight rows of
their kernel taps (shifted left by the bit plane, the shift-and-add of stage 0: no
multiplier) and, the next cycle, writes them back: up to ``k²·lanes`` accumulates a cycle,
one event a cycle, with no conflict. The bank reads are transparent, so an event that
follows one at the same position (another input channel there) sees the sum just written.

The weights sit in ``k²`` ROMs, one per kernel tap, all read at the same word (input channel,
chunk); each bank takes its tap's row through a ``k²``-way multiplexer.

The same banks answer a *window read*: the per-lane maximum of the conv currents inside one
max-pool window (the padding never a candidate), a whole window a cycle (its result three
cycles later: the bank read, its words registered, then a registered tree of compares); a pool of
kernel 1 reads one position (a stage that does not pool before its LIF). A *clear* zeroes
one address of every bank, so ``depth`` cycles clear the whole map for the next step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from stepvit.model.export.stem import conv_out
from stepvit.rtl.stem_banks import bank_modulus, scatter_tables, window_tables

#: Bit planes of a pixel (stage 0 walks them; a spike is plane 0).
PLANES = 8


class StemConvBanks(wiring.Component):
    """One stem conv's currents in ``m x m`` banks, fed by spike events, read by pool windows.

    Parameters
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
    lanes : int
        Output channels an event updates per reached position.
    sum_bits : int
        Signed width of a current (the export proves the sums fit).

    Members
    -------
    event_valid, event_y, event_x, event_channel, event_chunk, event_plane : In
        One input event: its position, input channel, output chunk and bit plane (the
        weights are added shifted left by it).
    window_valid, window_y, window_x, window_chunk : In
        Read the pool window at pooled position ``(y, x)`` of one chunk (not with an event).
    window_done : Out(1)
        The window read of three cycles before is in ``window_max``.
    window_max : Out(ArrayLayout(signed(sum_bits), lanes))
        Per lane, the largest current in that window.
    clear_valid, clear_address : In
        Zero this address of every bank (never in the cycle after an event).
    """

    def __init__(self, *, weight: np.ndarray, in_size: tuple[int, int], stride: int,
                 padding: int, pool: tuple[int, int, int], lanes: int, sum_bits: int) -> None:
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
            raise ValueError(f"weight must be [Cout, Cin, k, k], not {list(weight.shape)}")
        if weight.size and (weight.min() < -128 or weight.max() > 127):
            raise ValueError("weight must hold int8 values")
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._weight = weight
        kernel = weight.shape[2]
        self._geometry = (tuple(in_size), kernel, stride, padding, tuple(pool))
        self._modulus = bank_modulus(kernel, stride, pool[0])
        self._conv = tuple(conv_out(size, kernel, stride, padding) for size in in_size)
        self._pooled = tuple(conv_out(size, *pool) for size in self._conv)
        self._lanes, self._sum_bits = lanes, sum_bits
        self._chunks = -(-weight.shape[0] // lanes)
        blocks = tuple(-(-size // self._modulus) for size in self._conv)
        self.depth = blocks[0] * blocks[1] * self._chunks
        height, width = in_size
        super().__init__({
            "event_valid": In(1),
            "event_y": In(range(max(height, 2))),
            "event_x": In(range(max(width, 2))),
            "event_channel": In(range(max(weight.shape[1], 2))),
            "event_chunk": In(range(max(self._chunks, 2))),
            "event_plane": In(range(PLANES)),
            "window_valid": In(1),
            "window_y": In(range(max(self._pooled[0], 2))),
            "window_x": In(range(max(self._pooled[1], 2))),
            "window_chunk": In(range(max(self._chunks, 2))),
            "window_done": Out(1),
            "window_max": Out(data.ArrayLayout(signed(sum_bits), lanes)),
            "clear_valid": In(1),
            "clear_address": In(range(max(self.depth, 2))),
        })

    @property
    def modulus(self) -> int:
        """``m``: bank rows and bank columns (``m²`` banks)."""
        return self._modulus

    def tap_words(self) -> list[list[int]]:
        """Return each kernel tap's ROM: word ``channel·chunks + chunk``, lane 0 in the low byte."""
        cout, cin, kernel, _ = self._weight.shape
        padded = np.zeros((self._chunks * self._lanes, cin, kernel, kernel), dtype=np.int64)
        padded[:cout] = self._weight
        lanes = padded.reshape(self._chunks, self._lanes, cin, kernel, kernel) & 0xFF
        shifts = 8 * np.arange(self._lanes)
        return [[sum(int(byte) << int(shift)
                     for byte, shift in zip(lanes[chunk, :, channel, ky, kx], shifts))
                 for channel in range(cin) for chunk in range(self._chunks)]
                for ky in range(kernel) for kx in range(kernel)]

    def elaborate(self, platform: object) -> Module:
        """Build the tap ROMs, the banks, the event and window addressing and the adders."""
        m = Module()
        (height, width), kernel, stride, padding, pool = self._geometry
        modulus, chunks = self._modulus, self._chunks
        row_span = -(-self._conv[1] // modulus) * chunks
        reach = (scatter_tables(height, kernel, stride, padding, modulus),
                 scatter_tables(width, kernel, stride, padding, modulus))
        windows = (window_tables(self._conv[0], *pool, modulus),
                   window_tables(self._conv[1], *pool, modulus))
        roms = []
        for index, words in enumerate(self.tap_words()):
            rom = Memory(shape=unsigned(8 * self._lanes), depth=max(len(words), 2), init=words)
            m.submodules[f"tap{index}"] = rom
            roms.append(rom.read_port())
        rom_base = _table([channel * chunks for channel in range(self._weight.shape[1])],
                          self.event_channel)
        for rom in roms:
            m.d.comb += rom.addr.eq(rom_base + self.event_chunk)

        written = Signal()
        window_read, window_held = Signal(), Signal()
        m.d.sync += [written.eq(self.event_valid), window_read.eq(self.window_valid),
                     window_held.eq(window_read), self.window_done.eq(window_held)]
        plane = Signal(range(PLANES))
        m.d.sync += plane.eq(self.event_plane)
        candidates = []
        for bank_row in range(modulus):
            for bank_col in range(modulus):
                candidates.append(self._bank(m, (bank_row, bank_col), reach, windows,
                                             row_span, roms, (written, plane)))
        self._window_max(m, candidates)
        return m

    def _bank(self, m: Module, bank: tuple[int, int], reach: Sequence, windows: Sequence,
              row_span: int, roms: list, pipeline: tuple[Signal, Signal]) -> tuple:
        """Add one bank: its addresses, its read-add-write and its window candidate."""
        bank_row, bank_col = bank
        kernel, chunks = self._weight.shape[2], self._chunks
        layout = data.ArrayLayout(signed(self._sum_bits), self._lanes)
        mem = Memory(shape=layout, depth=max(self.depth, 2), init=[])
        m.submodules[f"bank{bank_row}_{bank_col}"] = mem
        write = mem.write_port()
        read = mem.read_port(transparent_for=(write,))
        rows, cols = reach
        hit = (_table(rows.valid[:, bank_row], self.event_y)
               & _table(cols.valid[:, bank_col], self.event_x))
        event_address = (_table(rows.block[:, bank_row] * row_span, self.event_y)
                         + _table(cols.block[:, bank_col] * chunks, self.event_x)
                         + self.event_chunk)
        tap = (_table(rows.tap[:, bank_row] * kernel, self.event_y)
               + _table(cols.tap[:, bank_col], self.event_x))
        window_rows, window_cols = windows
        in_window = (_table(window_rows.valid[:, bank_row], self.window_y)
                     & _table(window_cols.valid[:, bank_col], self.window_x))
        window_address = (_table(window_rows.block[:, bank_row] * row_span, self.window_y)
                          + _table(window_cols.block[:, bank_col] * chunks, self.window_x)
                          + self.window_chunk)
        m.d.comb += read.addr.eq(Mux(self.event_valid, event_address, window_address))

        written, plane = pipeline
        write_hit = Signal(name=f"hit{bank_row}_{bank_col}")
        write_tap = Signal(range(max(kernel * kernel, 2)), name=f"tap{bank_row}_{bank_col}")
        address = Signal.like(read.addr, name=f"address{bank_row}_{bank_col}")
        candidate = Signal(name=f"window{bank_row}_{bank_col}")
        m.d.sync += [write_hit.eq(self.event_valid & hit), write_tap.eq(tap),
                     address.eq(read.addr), candidate.eq(in_window)]
        weights = Array(rom.data for rom in roms)[write_tap]
        with m.If(written):
            m.d.comb += [write.addr.eq(address), write.en.eq(write_hit)]
            for lane in range(self._lanes):
                addend = weights[8 * lane:8 * (lane + 1)].as_signed() << plane
                m.d.comb += write.data[lane].eq(read.data[lane] + addend)
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


def _table(values: Sequence[int] | np.ndarray, index: Signal):
    """Return ``values[index]`` as a constant lookup (a small ROM of logic)."""
    values = [int(v) for v in values]
    width = max(max(values, default=0).bit_length(), 1)
    return Array(Const(v, unsigned(width)) for v in values)[index]


__all__ = ["PLANES", "StemConvBanks"]
