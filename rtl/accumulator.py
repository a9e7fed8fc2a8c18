"""``lanes`` parallel accumulators: one selected weight vector added per cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class AccumulatorLanes(wiring.Component):
    """Accumulate one addend per lane per cycle; ``first`` restarts the sums.

    Parameters
    ----------
    lanes : int
        Parallel accumulators (output channels handled together).
    addend_bits : int
        Signed width of one addend.
    sum_bits : int
        Signed width of a sum (the export proves it cannot overflow).
    start_bits : int, optional
        Signed width of a ``start`` input: a new sum starts from it instead of zero (the
        core's bias). Without it, from zero.

    Members
    -------
    valid : In(1)
        Update the sums at the next clock edge.
    first : In(1)
        This addend starts a new sum (the old sum is dropped, not added).
    start : In(ArrayLayout(signed(start_bits), lanes))
        With ``start_bits`` only: what a new sum starts from (its addend added to it).
    addend : In(ArrayLayout(signed(addend_bits), lanes))
        Added where ``valid``; zero it for an event that only closes a sum.
    total : Out(ArrayLayout(signed(sum_bits), lanes))
        The sum including this cycle's addend (combinational), for the stage that reads a
        finished sum without a cycle of delay.
    """

    def __init__(self, *, lanes: int, addend_bits: int, sum_bits: int,
                 start_bits: int | None = None) -> None:
        for name, value in (("lanes", lanes), ("addend_bits", addend_bits),
                            ("sum_bits", sum_bits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._start = start_bits is not None
        if sum_bits < addend_bits:
            raise ValueError(f"sum_bits ({sum_bits}) must be at least addend_bits "
                             f"({addend_bits})")
        self._lanes = lanes
        super().__init__({
            "valid": In(1),
            "first": In(1),
            "addend": In(data.ArrayLayout(signed(addend_bits), lanes)),
            "total": Out(data.ArrayLayout(signed(sum_bits), lanes)),
            **({"start": In(data.ArrayLayout(signed(start_bits), lanes))}
               if start_bits is not None else {}),
        })

    def elaborate(self, platform: object) -> Module:
        """Build the lanes: a held sum per lane, restarted by ``first``."""
        m = Module()
        held = Signal(self.total.shape())
        for lane in range(self._lanes):
            start = self.start[lane] if self._start else 0
            m.d.comb += self.total[lane].eq(Mux(self.first, start, held[lane])
                                            + self.addend[lane])
            with m.If(self.valid):
                m.d.sync += held[lane].eq(self.total[lane])
        return m
