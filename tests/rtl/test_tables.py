"""Constant tables (rtl/tables.py): every index covered, read once, refused when too long."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from stepvit.rtl.tables import padded, row_table, table


def test_a_table_is_padded_to_every_value_of_its_index():
    assert padded([3, 1, 2], Signal(3)) == [3, 1, 2, 0, 0, 0, 0, 0]
    assert padded([5, 6], Signal(1)) == [5, 6]


def test_a_table_longer_than_its_index_reaches_is_refused():
    with pytest.raises(ValueError, match=r"^a table of 5 entries needs an index of at "
                                         r"least 3 bits, not 2$"):
        padded([1, 2, 3, 4, 5], Signal(2))


def test_tables_read_their_rows():
    m = Module()
    index = Signal(range(6))
    values = [7, 0, 12, 3, 9, 1]
    rows = [{"a": v, "b": v % 4, "c": 5 - i} for i, v in enumerate(values)]
    value = table(m, values, index, name="value")
    row = row_table(m, rows, index, name="row")
    sim = Simulator(m)

    async def bench(ctx):
        for i, expected in enumerate(values):
            ctx.set(index, i)
            assert ctx.get(value) == expected
            assert (ctx.get(row.a), ctx.get(row.b), ctx.get(row.c)) == (
                rows[i]["a"], rows[i]["b"], rows[i]["c"])

    sim.add_testbench(bench)
    sim.run()
