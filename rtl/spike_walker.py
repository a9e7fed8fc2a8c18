"""Walk the set bits of a spike vector, lowest first, one per cycle: the event source.

Work then scales with the spikes: a vector with ``s`` set bits takes ``s`` cycles, and the
walker says which bit is the last one, so the next vector can be loaded in the same cycle.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class SpikeWalker(wiring.Component):
    """A priority encoder over a held spike vector that clears one bit per ``step``.

    Parameters
    ----------
    width : int
        Bits of the spike vector.

    Members
    -------
    load : In(1)
        Replace the held vector by ``word`` at the next clock edge (wins over ``step``).
    word : In(width)
        The vector to load.
    step : In(1)
        Clear the lowest set bit at the next clock edge.
    any : Out(1)
        The held vector has a set bit.
    index : Out(range(width))
        Position of the lowest set bit (0 when none).
    last : Out(1)
        The lowest set bit is the only one.
    """

    def __init__(self, *, width: int) -> None:
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self._width = width
        super().__init__({
            "load": In(1),
            "word": In(width),
            "step": In(1),
            "any": Out(1),
            "index": Out(range(max(width, 2))),
            "last": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the held vector, its lowest-bit encoder and its clear."""
        m = Module()
        pending = Signal(self._width)
        any_set, index = _lowest_set_bit(pending)
        remaining = Signal(self._width)
        m.d.comb += [
            remaining.eq(pending & ~(1 << index)[:self._width]),
            self.any.eq(any_set),
            self.index.eq(index),
            self.last.eq(any_set & (remaining == 0)),
        ]
        with m.If(self.load):
            m.d.sync += pending.eq(self.word)
        with m.Elif(self.step):
            m.d.sync += pending.eq(remaining)
        return m


def _lowest_set_bit(bits: Value) -> tuple[Value, Value]:
    """Return (any bit set, index of the lowest set bit) as a balanced tree of halves.

    A chain of ``if`` over the bits would be as deep as the vector is wide; halving keeps
    the depth at ``log2(width)`` multiplexers.
    """
    width = len(bits)
    if width == 1:
        return bits[0], C(0, 0)
    half = 1 << ((width - 1).bit_length() - 1)  # a power of two, at least width / 2
    index_bits = (half - 1).bit_length()
    low_any, low_index = _lowest_set_bit(bits[:half])
    high_any, high_index = _lowest_set_bit(bits[half:])
    high = Cat(high_index, C(0, index_bits - len(high_index)), C(1, 1))  # half + index
    return low_any | high_any, Mux(low_any, low_index, high)
