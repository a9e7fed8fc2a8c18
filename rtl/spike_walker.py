"""Walk the set bits of a spike vector, lowest first, one per cycle: the event source.

Work then scales with the spikes: a vector with ``s`` set bits takes ``s`` cycles, and the
walker says which bit is the last one, so the next vector can be loaded in the same cycle.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
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
        # pending & (pending - 1) clears the lowest set bit: one carry chain, no encoder.
        remaining = Signal(self._width)
        m.d.comb += [
            remaining.eq(pending & (pending - 1)),
            self.any.eq(pending != 0),
            self.last.eq((pending != 0) & (remaining == 0)),
        ]
        for position in reversed(range(self._width)):
            with m.If(pending[position]):
                m.d.comb += self.index.eq(position)
        with m.If(self.load):
            m.d.sync += pending.eq(self.word)
        with m.Elif(self.step):
            m.d.sync += pending.eq(remaining)
        return m
